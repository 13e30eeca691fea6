"""Start-up time of the package and the command line, against `import numpy` in the same run.

    python benchmarks/bench_import.py [--repeats 5]

Each command runs as a fresh interpreter (`sys.executable`), `--repeats` times, the commands
interleaved within each repetition so that none always gets the warmer (or quieter) slot; the
median wall time is printed with its ratio to the baseline, `python -c "import numpy"` (the
heaviest library the scores need). `import transformers, datasets, torch` is printed for scale:
it is what `import hf_carto` cost when the package imported everything eagerly.

The code measured is whichever `hf_carto` the interpreter imports (the path is printed): run it
with PYTHONPATH set to another checkout to compare two versions. Machines are noisy: compare the
printed ratios, not the seconds, across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "import numpy (baseline)": ["-c", "import numpy"],
    "import hf_carto": ["-c", "import hf_carto"],
    "hf-carto --help": ["-m", "hf_carto.commands.main", "--help"],
    "import transformers, datasets, torch": ["-c", "import transformers, datasets, torch"],
}
TARGETS = {"import hf_carto": "[target <= 1x]", "hf-carto --help": "[target < 1 s]"}


def run_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    where = subprocess.run(
        [sys.executable, "-c", "import hf_carto; print(hf_carto.__file__)"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"hf_carto from {os.path.dirname(where)} (python {sys.version.split()[0]})")
    for name in COMMANDS:  # once untimed, so that every command starts with its files in the page cache
        run_once(COMMANDS[name])
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for repeat in range(args.repeats):
        names = list(COMMANDS) if repeat % 2 == 0 else list(reversed(COMMANDS))
        for name in names:
            seconds[name].append(run_once(COMMANDS[name]))
    baseline = statistics.median(seconds["import numpy (baseline)"])
    print(f"start-up, fresh interpreters (median of {args.repeats}):")
    for name, values in seconds.items():
        median = statistics.median(values)
        target = TARGETS.get(name, "")
        print(f"  {name:<38} {median:6.2f} s  {median / baseline:5.1f}x baseline   {target}".rstrip())


if __name__ == "__main__":
    main()
