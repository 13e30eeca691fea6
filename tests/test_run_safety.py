"""Runs into one folder exclude each other, a lock left by a killed run does not block the next, and a
run killed while its burn-in checkpoint is being written resumes to the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_carto.core.locking import LOCK_FILE, FolderLocked, folder_lock, lock_holder

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "gpt2_wikitext.py"
ROOT = Path(__file__).resolve().parents[1]


def tiny(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(RECIPE), "--preset", "cpu-tiny", "--output_dir", str(out), "--policy", "paper", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


# Prepended to a recipe run: 100 bootstrap resamples for the membership metrics' intervals instead
# of 1,000 (most of the evaluation's time at cpu-tiny scale). The tests that use it read which files
# a run left, its settings, and whether two runs give the same rows, each of them run with it.
FEWER_RESAMPLES = """
import dataclasses
from hf_carto.experiment import runner

real = runner.eval_settings
runner.eval_settings = lambda *args, **kwargs: dataclasses.replace(real(*args, **kwargs), num_resamples=100)
"""

RUN_THE_RECIPE = """
import sys
sys.argv = sys.argv[1:]
exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
"""


def tiny_fewer_resamples(out: Path, *extra: str) -> list[str]:
    """``tiny(out, *extra)`` with :data:`FEWER_RESAMPLES`."""
    return [sys.executable, "-c", FEWER_RESAMPLES + RUN_THE_RECIPE, *tiny(out, *extra)[1:]]


def test_a_second_holder_is_refused_and_a_dead_holder_is_taken_over(tmp_path, caplog):
    # A real process takes the lock and is killed with SIGKILL while holding it.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom hf_carto.core.locking import folder_lock\n"
         "with folder_lock(sys.argv[1], 'test holder'):\n    print('held', flush=True)\n    time.sleep(600)\n",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert lock_holder(tmp_path)["pid"] == holder.pid
    with pytest.raises(FolderLocked, match=f"in use by PID {holder.pid}"), folder_lock(tmp_path):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock_holder(tmp_path) is None  # the system released it with the process
    with caplog.at_level("WARNING"), folder_lock(tmp_path, "the next run"):
        assert lock_holder(tmp_path)["pid"] == os.getpid()
    assert f"left by PID {holder.pid}" in caplog.text
    assert (tmp_path / LOCK_FILE).read_text() == ""  # a clean end leaves no holder behind


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A cpu-tiny run into a folder and, while it holds the folder, a second run (another learning
    rate) started into the same folder. The tests read what both left; the first run's folder is
    also the clean run the kill test below compares its numbers with (one full run fewer)."""
    out = tmp_path_factory.mktemp("two_runs") / "run"
    first = subprocess.Popen(
        tiny_fewer_resamples(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env()
    )
    second, err = None, ""
    try:
        deadline = time.monotonic() + 120
        while lock_holder(out) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        if lock_holder(out) is not None:  # the first run holds the folder: start the second one now
            second = subprocess.run(
                tiny(out, "--learning_rate", "1e-3"), capture_output=True, text=True, env=env(), timeout=300
            )
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    return SimpleNamespace(out=out, first=first, first_stderr=err, second=second)


@pytest.mark.slow
def test_two_runs_into_one_folder_exclude_each_other(two_runs):
    first, second, out = two_runs.first, two_runs.second, two_runs.out
    assert second is not None, "the first run never took the lock"
    assert second.returncode != 0
    assert f"in use by PID {first.pid}" in second.stderr
    assert first.returncode == 0, two_runs.first_stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["learning_rate"] == 0.003  # the first run's, untouched by the second


KILL_WHILE_SAVING = """
import os, signal, sys
import transformers

def die(self, output_dir):  # after the weights and optimizer, before trainer_state.json
    os.kill(os.getpid(), signal.SIGKILL)

transformers.Trainer._save_rng_state = die
sys.argv = sys.argv[1:]
exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
"""


@pytest.mark.slow
def test_a_kill_while_the_burn_in_checkpoint_is_written_does_not_block_the_rerun(tmp_path, two_runs):
    killed = tmp_path / "killed"
    died = subprocess.run(
        [sys.executable, "-c", KILL_WHILE_SAVING, *tiny(killed)[1:]],
        capture_output=True,
        text=True,
        env=env(),
        timeout=600,
    )
    assert died.returncode == -signal.SIGKILL
    partial = list((killed / "seed0" / "mapping").glob("checkpoint-*"))
    assert partial and not (partial[0] / "trainer_state.json").exists()  # the state a kill leaves

    rerun = subprocess.run(tiny_fewer_resamples(killed), capture_output=True, text=True, env=env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "is incomplete" in rerun.stderr and "restarts from scratch" in rerun.stderr
    # The reference: a clean cpu-tiny run of the same settings, shared with the test above.
    assert two_runs.first.returncode == 0, two_runs.first_stderr[-3000:]
    clean = two_runs.out
    rows = json.loads((killed / "report.json").read_text())["rows"]
    assert rows == json.loads((clean / "report.json").read_text())["rows"]  # the same numbers


KILL_BEFORE_THE_ROC_FIGURE = """
import os, signal, sys
import hf_carto.measure.model_report

def die(*args, **kwargs):  # report.json of the first evaluated model is written; its figure is not
    os.kill(os.getpid(), signal.SIGKILL)

hf_carto.measure.model_report.plot_roc = die
sys.argv = sys.argv[1:]
exec(compile(open(sys.argv[0]).read(), sys.argv[0], "exec"), {"__name__": "__main__"})
"""


@pytest.mark.slow
def test_a_stage_killed_before_its_last_file_is_redone(tmp_path):
    out = tmp_path / "run"
    died = subprocess.run(
        [sys.executable, "-c", FEWER_RESAMPLES + KILL_BEFORE_THE_ROC_FIGURE, *tiny(out)[1:]], capture_output=True,
        text=True, env=env(), timeout=600,
    )  # fmt: skip
    assert died.returncode == -signal.SIGKILL
    half = [p.parent for p in out.glob("seed0/**/eval/report.json")]
    assert len(half) == 1 and not (half[0] / "membership_roc.png").exists() and not (half[0] / "done.json").exists()
    rerun = subprocess.run(tiny_fewer_resamples(out), capture_output=True, text=True, env=env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    evals = list(out.glob("seed0/**/eval"))
    assert len(evals) == 6  # five arms and the mapping run
    for folder in evals:
        assert {"report.json", "membership_roc.png", "done.json"} <= {p.name for p in folder.iterdir()}, folder


def _small_demo(out: Path):
    from hf_carto.data.generated import CorpusConfig
    from hf_carto.experiment.loop_demo import DemoConfig

    return DemoConfig(output_dir=str(out), epochs=2, corpus=CorpusConfig(num_documents=300, seed=0))


@pytest.fixture(scope="module")
def small_demo_run(tmp_path_factory):
    """One finished run of the small demo, made once: ``copy(folder) -> the report of that run``
    copies its folder to ``folder``, as if the run had been made there."""
    from hf_carto.experiment.loop_demo import run_demo

    reference = tmp_path_factory.mktemp("small_demo") / "demo"
    report = run_demo(_small_demo(reference))

    def copy(folder: Path) -> dict:
        import shutil

        shutil.copytree(reference, folder)
        return {**report, "config": {**report["config"], "output_dir": str(folder)}}

    return copy


@pytest.mark.slow
def test_a_failed_demo_rerun_leaves_the_earlier_results_whole(tmp_path, monkeypatch, small_demo_run):
    import errno

    import hf_carto.experiment.loop_demo as demo

    out = tmp_path / "demo"
    first = small_demo_run(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert (out / "run").exists() and (out / "scored").exists()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(demo, "fit_cartography", disk_full)  # after the new recording, before any result
    with pytest.raises(OSError, match="No space left"):
        demo.run_demo(_small_demo(out))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    staged = [p for p in after if str(p).startswith(".new-")]
    assert staged  # the failed run's half-written results sit in their staging folder...
    assert {p: b for p, b in after.items() if p not in staged} == before  # ...and the earlier run is whole

    monkeypatch.undo()
    again = demo.run_demo(_small_demo(out))
    assert not [p for p in out.iterdir() if p.name.startswith(".new-")]  # the stale staging was removed
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_stale_staging_is_removed_and_finished_outputs_replace_the_earlier_ones(tmp_path):
    from hf_carto.core.locking import remove_stale_staging, replace_outputs

    (tmp_path / "scored" / ".data.partial").mkdir(parents=True)
    (tmp_path / ".report.json.abc.tmp").write_text("{")
    (tmp_path / "notes.txt").write_text("mine")
    removed = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == [".data.partial", ".report.json.abc.tmp"]
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "scored").is_dir()

    (tmp_path / "scored" / "old.arrow").write_text("old")
    staging = tmp_path / ".new.partial"
    (staging / "scored").mkdir(parents=True)
    (staging / "scored" / "new.arrow").write_text("new")
    (staging / "report.json").write_text("{}")
    replace_outputs(staging, tmp_path)
    assert sorted(p.name for p in (tmp_path / "scored").iterdir()) == ["new.arrow"]
    assert (tmp_path / "report.json").read_text() == "{}" and not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "report.json", "scored"]


def _paused_cli(command: list[str], patch: str) -> subprocess.Popen:
    """A real process running ``hf-carto COMMAND`` that stops inside the command's lock, at the
    library call ``patch`` (module.function), until killed."""
    module, function = patch.rsplit(".", 1)
    code = (
        "import sys, time, importlib\n"
        f"mod = importlib.import_module({module!r})\n"
        "def paused(*args, **kwargs):\n    print('inside', flush=True)\n    time.sleep(600)\n"
        f"setattr(mod, {function!r}, paused)\n"
        "from hf_carto.commands.main import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, *command], stdout=subprocess.PIPE, text=True, env=env())
    assert process.stdout.readline().strip() == "inside"
    return process


def test_score_merge_and_the_recorder_refuse_an_output_another_process_writes(tmp_path, capsys):
    import numpy as np
    from datasets import Dataset

    from hf_carto.commands.main import main
    from hf_carto.record.recorder import LossRecorder

    losses = tmp_path / "losses"
    Dataset.from_dict(
        {"sample_id": np.arange(8), **{f"carto_loss_{t}": np.linspace(3, 0.5, 8) + t for t in (1, 2, 3)}}
    ).save_to_disk(str(losses))
    scored = tmp_path / "scored"
    holder = _paused_cli(
        ["score", str(losses), str(scored), "--burn-in", "1", "--eps", "0.5"],
        "hf_carto.score.cartography.fit_cartography",
    )
    try:
        assert main(["score", str(losses), str(scored), "--burn-in", "1", "--eps", "0.5", "--overwrite"]) == 2
        assert f"{scored} is in use by PID {holder.pid}" in capsys.readouterr().err
        assert not scored.exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["score", str(losses), str(scored), "--burn-in", "1", "--eps", "0.5"]) == 0  # the lock died with it
    arms = tmp_path / "arms"
    arms_holder = _paused_cli(["arms", str(scored), str(arms)], "hf_carto.curation.arms.build_arms")
    try:
        assert main(["arms", str(scored), str(arms), "--overwrite"]) == 2
        assert f"{arms} is in use by PID {arms_holder.pid}" in capsys.readouterr().err
    finally:
        arms_holder.kill()
        arms_holder.wait()

    # The recorder: a second recording into a run folder another live process records into.
    run = tmp_path / "run"
    recorder_process = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom hf_carto.record.recorder import LossRecorder\n"
         "LossRecorder(sys.argv[1], num_samples=4).start()\nprint('inside', flush=True)\ntime.sleep(600)\n",
         str(run)],
        stdout=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        assert recorder_process.stdout.readline().strip() == "inside"
        with pytest.raises(FolderLocked, match=f"in use by PID {recorder_process.pid}.*recording into it"):
            LossRecorder(run, num_samples=4, overwrite=True).start()
        # merge of that run into a dataset, while another process merges into the same output
        out = tmp_path / "merged"
        merger = _paused_cli(
            ["merge", str(run), "--dataset", str(losses), "--out", str(out)], "hf_carto.record.merge.add_loss_columns"
        )
        try:
            assert main(["merge", str(run), "--dataset", str(losses), "--out", str(out)]) == 2
            assert f"{out} is in use by PID {merger.pid}" in capsys.readouterr().err
        finally:
            merger.kill()
            merger.wait()
    finally:
        recorder_process.kill()
        recorder_process.wait()
    # In one process, a lock nests (the same run, not a concurrent one) and is released by the outermost.
    recorder = LossRecorder(run, num_samples=4, overwrite=True)
    recorder.start()
    with folder_lock(run, "the same process"):
        assert lock_holder(run)["pid"] == os.getpid()
    assert lock_holder(run)["pid"] == os.getpid()
    recorder.close()
    assert lock_holder(run) is None


@pytest.fixture
def small_disk(tmp_path):
    """Mount a real tmpfs of a chosen size: ``small_disk(num_bytes) -> folder``. Needs the right to
    mount (root in a container usually has it); skipped, saying why, where there is none."""
    mounts = []

    def mount(num_bytes: int) -> Path:
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={num_bytes}", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill a real disk: {result.stderr.strip() or 'no mount'}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_loses_nothing_and_names_the_folder(tmp_path, small_disk, capsys, small_demo_run):
    import shutil

    from hf_carto.commands.main import main
    from hf_carto.core.atomic import is_disk_full
    from hf_carto.experiment.loop_demo import run_demo

    reference = tmp_path / "reference"
    first = small_demo_run(reference)
    size = sum(p.stat().st_size for p in reference.rglob("*") if p.is_file())
    # Room for the earlier run and half of another: the rerun must fail part way.
    disk = small_disk(size + size // 2)
    out = disk / "demo"
    shutil.copytree(reference, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    with pytest.raises(OSError) as failure:
        run_demo(_small_demo(out))
    assert is_disk_full(failure.value), failure.value
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    assert {p: b for p, b in after.items() if not str(p).startswith(".new-")} == before  # the earlier run is whole

    # The command line on a full disk: exit status 2 and one line naming the folder.
    shutil.rmtree(out)  # free the disk, then fill it to the last bytes
    (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 4096))
    status = main(
        ["score", str(reference / "scored"), str(disk / "scored"), "--burn-in", "2", "--eps", "quantile:0.05"]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (not the progress bars)
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith("hf-carto score: error:") and f"the device of {disk} " in errors[0], errors
    assert "no space left" in errors[0] and "needed" in errors[0]
    assert not (disk / "scored").exists()
    # With room (a larger disk: this process still maps the files of the failed run), the rerun of the
    # interrupted folder succeeds and reproduces the reference numbers.
    out = small_disk(10 * size) / "demo"
    shutil.copytree(reference, out)
    again = run_demo(_small_demo(out))
    assert again["summary"] == first["summary"] and again["planted_vs_quadrant"] == first["planted_vs_quadrant"]


@pytest.mark.slow
def test_a_demo_killed_half_way_leaves_the_earlier_run_whole_and_its_staging_is_removed(tmp_path, small_demo_run):
    from hf_carto.experiment.loop_demo import run_demo

    out = tmp_path / "demo"
    first = small_demo_run(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    # A real process reruns the demo into the folder and is SIGKILLed after its new recording,
    # before any result of it is in place.
    code = (
        "import sys, time\nimport hf_carto.experiment.loop_demo as demo\n"
        "from hf_carto.data.generated import CorpusConfig\n"
        "def paused(*args, **kwargs):\n    print('inside', flush=True)\n    time.sleep(600)\n"
        "demo.fit_cartography = paused\n"
        "demo.run_demo(demo.DemoConfig(output_dir=sys.argv[1], epochs=2, corpus=CorpusConfig(num_documents=300, "
        "seed=0)))\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env())
    for line in killed.stdout:  # the demo prints its progress first
        if line.strip() == "inside":
            break
    else:
        pytest.fail("the demo process ended before the pause point")
    assert lock_holder(out)["pid"] == killed.pid
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    staged = [p for p in after if str(p).startswith(".new-")]
    assert any("run/carto/losses" in str(p) for p in staged)  # the killed run's new recording, set aside
    assert {p: b for p, b in after.items() if p not in staged} == before
    again = run_demo(_small_demo(out))
    assert not [p for p in out.iterdir() if p.name.startswith(".new-")]  # removed at the start of the rerun
    assert again["summary"] == first["summary"] and again["planted_vs_quadrant"] == first["planted_vs_quadrant"]


def test_what_killed_writers_left_beside_an_output_is_cleared_or_put_back(tmp_path, capsys):
    import numpy as np
    from datasets import Dataset

    from hf_carto.commands.main import main
    from hf_carto.core.locking import remove_stale_staging_of

    losses = tmp_path / "losses"
    columns = {f"carto_loss_{t}": np.linspace(3, 0.5, 8) + t for t in (1, 2, 3)}
    Dataset.from_dict({"sample_id": np.arange(8), **columns}).save_to_disk(str(losses))
    scored = tmp_path / "scored"
    (tmp_path / ".scored.x1.partial").mkdir()
    (tmp_path / ".scored.x1.partial" / "half.arrow").write_text("half")
    (tmp_path / ".scored.json.x2.tmp").write_text("{")  # another output's name: kept
    assert main(["score", str(losses), str(scored), "--burn-in", "1", "--eps", "0.5"]) == 0
    assert not (tmp_path / ".scored.x1.partial").exists() and (tmp_path / ".scored.json.x2.tmp").exists()
    # The same for arms (and merge, which shares the code): a stale staging folder of its output goes.
    (tmp_path / ".arms.x3.partial").mkdir()
    assert main(["arms", str(scored), str(tmp_path / "arms"), "--budget", "0.25"]) == 0
    assert not (tmp_path / ".arms.x3.partial").exists() and (tmp_path / "arms" / "budgets.json").exists()
    # Killed between setting the earlier result aside and moving the new one in: the earlier one is put back.
    (tmp_path / "keep").write_text("mine")
    scored.rename(tmp_path / ".scored.old-12345")
    assert remove_stale_staging_of(scored) == [] and (scored / "cartography.json").exists()
    assert (tmp_path / "keep").read_text() == "mine"


def test_atomic_writes_get_the_mode_of_any_new_file(tmp_path):
    import pyarrow as pa

    from hf_carto.core.atomic import write_json_atomic, write_parquet_atomic

    previous = os.umask(0o022)
    try:
        write_json_atomic({"a": 1}, tmp_path / "report.json")
        write_parquet_atomic(pa.table({"x": [1]}), tmp_path / "t.parquet")
    finally:
        os.umask(previous)
    for name in ("report.json", "t.parquet"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name  # not mkstemp's 0o600


def test_another_thread_of_the_process_is_refused_like_another_process(tmp_path):
    import threading

    from hf_carto.core.locking import output_lock

    results = []
    inside = threading.Event()
    leave = threading.Event()

    def writer():
        with output_lock(tmp_path / "scored", "thread one"):
            inside.set()
            leave.wait(10)

    first = threading.Thread(target=writer)
    first.start()
    inside.wait(10)
    try:
        with output_lock(tmp_path / "scored", "thread two"):
            results.append("entered")
    except FolderLocked as err:
        results.append(str(err))
    leave.set()
    first.join()
    assert len(results) == 1 and "another thread of this process" in results[0]
    with output_lock(tmp_path / "scored"), output_lock(tmp_path / "scored"):  # one thread nests
        pass


def test_overwrite_output_dir_never_clears_a_folder_no_run_wrote(tmp_path):
    thesis = tmp_path / "thesis"
    (thesis / "notes").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\documentclass{book}")
    (thesis / "notes" / "chapter1.md").write_text("mine")
    before = {p.relative_to(thesis): p.read_bytes() for p in thesis.rglob("*") if p.is_file()}
    result = subprocess.run(
        tiny(thesis, "--overwrite_output_dir"), capture_output=True, text=True, env=env(), timeout=300
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert f"{thesis} holds 2 entries that no run of this experiment wrote (notes, thesis.tex)" in lines[0]
    assert "nothing was deleted" in lines[0] and "--output_dir" in lines[0]
    # Untouched, and nothing added: not even a lock file.
    assert sorted(p.name for p in thesis.iterdir()) == ["notes", "thesis.tex"]
    assert {p.relative_to(thesis): p.read_bytes() for p in thesis.rglob("*") if p.is_file()} == before


class _OneProcess:
    """The accelerate state of a run on one process."""

    is_main_process = True

    def wait_for_everyone(self) -> None:
        pass


def test_overwrite_output_dir_clears_a_run_folder_and_one_written_before_the_marker(tmp_path):
    from contextlib import ExitStack

    from hf_carto.experiment import RunFolderError, parse_arguments
    from hf_carto.experiment.run_folder import CONFIG, RUN_MARKER, _clear, open_run_folder, run_settings

    out = tmp_path / "run"
    parsed = parse_arguments(["--preset", "cpu-tiny", "--output_dir", str(out)])
    settings, carto = run_settings(*parsed), parsed[2]
    with ExitStack() as stack:  # a run starts: the marker is its first file
        open_run_folder(out, settings, carto, _OneProcess(), stack)
    assert (out / RUN_MARKER).is_file()
    (out / CONFIG).write_text(json.dumps(settings))
    (out / "seed0" / "mapping").mkdir(parents=True)
    (out / "seed0" / "mapping" / "losses.arrow").write_text("x")
    carto.overwrite_output_dir = True
    with ExitStack() as stack:
        open_run_folder(out, settings, carto, _OneProcess(), stack)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE, RUN_MARKER, "run_config.pending.json"]

    # A run folder written before the marker existed: recognised by its settings.
    legacy = tmp_path / "legacy"
    (legacy / "seed0").mkdir(parents=True)
    (legacy / CONFIG).write_text(json.dumps(settings))
    _clear(legacy)
    assert list(legacy.iterdir()) == []
    # A run_config.json of another program's is not enough, and the deleting function refuses on its own.
    other = tmp_path / "other"
    other.mkdir()
    (other / CONFIG).write_text(json.dumps({"learning_rate": 0.1}))
    (other / "results.csv").write_text("mine")
    with pytest.raises(RunFolderError, match="holds 2 entries that no run of this experiment wrote"):
        _clear(other)
    assert sorted(p.name for p in other.iterdir()) == ["results.csv", CONFIG]


HOLD_OUTPUT = (
    "import sys\nfrom hf_carto.core.locking import output_lock\n"
    "with output_lock(sys.argv[1], 'test holder'):\n    print('held', flush=True)\n    sys.stdin.readline()\n"
)


def _output_holder(target: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OUTPUT, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=env(),
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_an_output_lock_leaves_no_file_beside_the_output_and_a_killed_writers_is_taken_over(tmp_path, caplog):
    import numpy as np
    from datasets import Dataset

    from hf_carto.commands.main import main
    from hf_carto.core.locking import output_lock

    losses = tmp_path / "data" / "losses"
    columns = {f"carto_loss_{t}": np.linspace(3, 0.5, 8) + t for t in (1, 2, 3)}
    Dataset.from_dict({"sample_id": np.arange(8), **columns}).save_to_disk(str(losses))
    scored = tmp_path / "scored"
    assert main(["score", str(losses), str(scored), "--burn-in", "1", "--eps", "0.5"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "scored"]  # no .scored.lock

    # While a writer holds it, refused attempts leave its details in the file: they name it each time.
    holder = _output_holder(scored)
    for _ in range(3):
        with pytest.raises(FolderLocked, match=f"in use by PID {holder.pid} .*test holder"), output_lock(scored):
            pass
    assert lock_holder(scored, beside=True)["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # A killed writer's lock file stays, naming it; the next writer takes it over and removes it at its end.
    assert (tmp_path / ".scored.lock").exists() and lock_holder(scored, beside=True) is None
    with caplog.at_level("WARNING"), output_lock(scored, "the next writer"):
        assert lock_holder(scored, beside=True)["pid"] == os.getpid()
    assert f"left by PID {holder.pid}" in caplog.text
    assert not (tmp_path / ".scored.lock").exists()


def test_a_writer_that_locked_a_removed_lock_file_takes_the_one_at_the_path(tmp_path, monkeypatch):
    """The race of removing lock files: a writer opens the lock file, the holder releases and removes
    it, then the writer's flock succeeds, on a file no other process can find any more. It must let
    that one go and lock the file at the path, or a third writer would hold a lock of its own."""
    import fcntl
    import types

    from hf_carto.core import locking
    from hf_carto.core.locking import output_lock

    target = tmp_path / "scored"
    lock_file = tmp_path / ".scored.lock"
    holder = _output_holder(target)
    attempts = []

    def flock(handle, operation):
        if operation & fcntl.LOCK_EX:
            attempts.append(os.fstat(handle.fileno()).st_ino)
            if len(attempts) == 1:  # opened while held; now the holder releases and removes the file
                holder.stdin.write("\n")
                holder.stdin.flush()
                assert holder.wait(timeout=60) == 0
                assert not lock_file.exists()
        fcntl.flock(handle, operation)

    monkeypatch.setattr(locking, "fcntl", types.SimpleNamespace(**{**vars(fcntl), "flock": flock}))
    with output_lock(target, "the writer"):
        assert len(attempts) == 2 and lock_file.exists()
        assert lock_holder(target, beside=True)["pid"] == os.getpid()
        third = subprocess.run(
            [sys.executable, "-c", HOLD_OUTPUT, str(target)], input="\n", capture_output=True, text=True, env=env(),
            timeout=120,
        )  # fmt: skip
        assert third.returncode != 0 and f"in use by PID {os.getpid()}" in third.stderr, third.stderr[-2000:]
    assert not lock_file.exists()
