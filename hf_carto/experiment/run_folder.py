"""The run folder: the settings a run is resumed under, the marker each finished stage leaves, and
the time each stage took.

A run folder holds ``run_config.json`` (the settings that decide the results, written once the data
stage has succeeded), one ``done.json`` per finished stage (written last, after every file of the
stage, so a stage interrupted half-way is redone) and ``stage_times.json``. A rerun with the same
settings reads finished stages back instead of redoing them; one with other settings is refused.

A run writes ``.hf_carto_run`` into its folder before anything else. ``--overwrite_output_dir``
clears only a folder that carries it (or, written before it existed, a ``run_config.json`` or
``run_config.pending.json`` of this experiment): any other folder holds what the user put there,
and is refused, naming what is in it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hf_carto.core.atomic import write_json_atomic
from hf_carto.core.locking import LOCK_FILE, FolderLocked, folder_lock, lock_holder, remove_stale_staging
from hf_carto.experiment.arguments import CartoArguments, DataArguments, ModelArguments, is_local
from hf_carto.experiment.errors import RunFolderError

# Settings that may change between a run and its resumption; every other field of the experiment's
# own arguments must match.
# How the data is read, not what it is: the same blocks either way.
RESUMABLE = {"preset", "overwrite_output_dir", "hub_dataset_id", "license", "preprocessing_num_workers", "streaming"}
# Settings recorded only when used, so that runs made before they existed still resume.
RECORDED_WHEN_SET = {"detectors", "downweight_fractions", "snapshot_rows", "snapshot_seed"}
# The training arguments that decide the results (the others are logging, saving, devices...).
TRAINING_SETTINGS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "optim_args", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "bf16", "fp16",
    "data_seed", "max_steps",
)  # fmt: skip
FINGERPRINT = "_fingerprint"  # suffix of the settings that hold a local input's size and hash
CONFIG = "run_config.json"
# Written when a run starts and replaced by run_config.json once its data stage has succeeded: a
# folder holding it (and no run_config.json) is what a failed start left, safe to clear on the next.
PENDING_CONFIG = "run_config.pending.json"
DONE = "done.json"
#: The file that marks a folder as a run folder of this experiment: only such a folder is ever cleared.
RUN_MARKER = ".hf_carto_run"
# Settings every run_config.json of this experiment holds, by which one written before RUN_MARKER
# existed is told from a file of the same name that another program wrote.
_OWN_SETTINGS = {"seeds", "burn_in", "eps", "per_device_train_batch_size"}


def write_json(path: Path, data: Any) -> None:

    write_json_atomic(data, path)


def run_settings(model_args, data_args, carto, training, num_processes: int = 1) -> dict[str, Any]:
    """The settings that decide the results, for the resume check and the report."""

    def plain(value):
        return value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)

    settings = {
        f.name: plain(getattr(args, f.name))
        for args in (model_args, data_args, carto)
        for f in dataclasses.fields(args)
        if f.name not in RESUMABLE and not (f.name in RECORDED_WHEN_SET and not getattr(args, f.name))
    }
    settings.update({name: plain(getattr(training, name)) for name in TRAINING_SETTINGS})
    # The global batch is per-device batch x processes: arms trained on another count would not compare.
    settings["num_processes"] = num_processes
    # Local inputs are compared by what they hold, not by how their path was spelled: the resolved
    # path (./a.txt and /abs/a.txt are one file) and a fingerprint of the content (a file edited in
    # place is another corpus).
    for name in local_inputs(model_args, data_args):
        settings[name] = str(Path(settings[name]).expanduser().resolve())
        settings[name + FINGERPRINT] = fingerprint(Path(settings[name]))
    return settings


def local_inputs(model_args: ModelArguments, data_args: DataArguments) -> list[str]:
    """The settings naming a local file or folder that the run reads."""

    def local(value: str | None) -> bool:
        return is_local(value) and Path(value).expanduser().exists()

    names = [name for name in ("train_file", "validation_file") if local(getattr(data_args, name))]
    if not model_args.train_tokenizer_vocab_size and local(model_args.tokenizer_name):
        names.append("tokenizer_name")
    if local(model_args.model_name_or_path):
        names.append("model_name_or_path")
    elif model_args.config_name != "gpt2" and local(model_args.config_name):  # "gpt2" is built, not read
        names.append("config_name")
    return names


def fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, or of every file of a folder (with their relative paths).

    Every process hashes every input once per start: for a multi-GB corpus that is seconds (sha256
    reads roughly 0.5-2 GB/s), small next to tokenizing it, and it is what makes an edited file
    impossible to resume over unnoticed.
    """
    import hashlib

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.sha256(), 0
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _difference(key: str, earlier: dict[str, Any], now: dict[str, Any]) -> str | None:
    """One line of the resume refusal; None for a fingerprint whose path changed too (that line says it)."""
    if key.endswith(FINGERPRINT):
        name = key.removesuffix(FINGERPRINT)
        before, after = earlier.get(key), now.get(key)
        if earlier.get(name) != now.get(name):
            return None
        if before and after:
            was = f"{before['bytes']:,} bytes, sha256 {before['sha256'][:12]}..."
            is_ = f"{after['bytes']:,} bytes, sha256 {after['sha256'][:12]}..."
            return f"    {name}: {now.get(name)} has changed since the earlier run (then {was}; now {is_})"
    return f"    {key}: earlier {earlier.get(key)!r}, now {now.get(key)!r}"


def record_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings once its data stage has succeeded: from now on it can be resumed."""
    write_json(out / CONFIG, settings)
    (out / PENDING_CONFIG).unlink(missing_ok=True)


def check_output_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Refuse an output folder from an incompatible earlier run; return True when resuming.

    ``run_config.json`` is written only once the data stage has succeeded, so a start that failed
    (a wrong column, too little held-out text...) never locks its settings in: its folder holds
    ``run_config.pending.json`` and is cleared by the next start, whatever its settings.
    """
    config_file = out / CONFIG
    if config_file.exists() and not overwrite:
        earlier = json.loads(config_file.read_text())
        differ = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
        if differ:
            lines = [line for k in differ if (line := _difference(k, earlier, settings)) is not None]
            raise RunFolderError(
                f"{out} holds a run with other settings ({len(lines)} differ):\n"
                + "\n".join(lines[:12])
                + "\n  use another --output_dir, or --overwrite_output_dir to discard it"
            )
        return True
    failed_start = (out / PENDING_CONFIG).exists()
    entries = _entries(out)
    if entries and overwrite and not is_run_folder(out):
        raise RunFolderError(_not_a_run_folder(out, entries))
    if entries and not config_file.exists() and not overwrite and not failed_start:
        raise RunFolderError(f"{out} is not empty and holds no {CONFIG}; use another --output_dir")
    return False


def _entries(out: Path) -> list[str]:
    """What ``out`` holds besides the files of the run's own bookkeeping (its lock and marker)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name not in (LOCK_FILE, RUN_MARKER))


def is_run_folder(out: Path) -> bool:
    """Whether ``out`` is a run folder of this experiment: it carries :data:`RUN_MARKER`, or (a folder
    written before the marker existed) a ``run_config.json`` or ``run_config.pending.json`` holding
    this experiment's settings."""
    if (out / RUN_MARKER).is_file():
        return True
    for name in (CONFIG, PENDING_CONFIG):
        try:
            settings = json.loads((out / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(settings, dict) and _OWN_SETTINGS <= set(settings):
            return True
    return False


def _not_a_run_folder(out: Path, entries: list[str]) -> str:
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return (
        f"{out} holds {len(entries)} entries that no run of this experiment wrote ({shown}); "
        f"--overwrite_output_dir only clears a run folder (one holding {RUN_MARKER}), so nothing was deleted: "
        "choose another --output_dir"
    )


def _clear(out: Path) -> None:
    """Remove everything in ``out`` but its lock file (held by this run; see hf_carto.core.locking) and
    its :data:`RUN_MARKER`.

    Raises:
        RunFolderError: ``out`` is not a run folder of this experiment (see :func:`is_run_folder`):
            nothing is removed.
    """
    entries = _entries(out)
    if entries and not is_run_folder(out):  # checked again here: this is the only place that deletes
        raise RunFolderError(_not_a_run_folder(out, entries))
    for path in out.iterdir():
        if path.name in (LOCK_FILE, RUN_MARKER):  # the run's own: the folder stays one it may clear
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def open_run_folder(out: Path, settings: dict[str, Any], carto: CartoArguments, state, stack: ExitStack) -> bool:
    """Check the folder on every process; then the main process takes the folder's lock for as long
    as ``stack`` is open, clears what may be cleared and creates the folder. Returns True when an
    earlier run with the same settings is resumed.

    A folder another live run holds is refused on every process, before any of them waits for the
    others, so that all of them stop with the same message.
    """
    holder = lock_holder(out)
    if holder is not None:
        raise RunFolderError(
            f"{out} is in use by PID {holder.get('pid')} on {holder.get('host')}: two runs in one folder "
            "would mix their results; wait for it, stop it, or use another --output_dir"
        )
    resuming = check_output_dir(out, settings, carto.overwrite_output_dir)
    state.wait_for_everyone()
    if state.is_main_process:
        try:
            stack.enter_context(folder_lock(out, "hf_carto experiment"))
        except FolderLocked as err:  # another run started in the moment since the check
            raise RunFolderError(str(err)) from None
        if (carto.overwrite_output_dir or (out / PENDING_CONFIG).exists()) and not resuming:
            _clear(out)  # discarded on request, or what a failed start left (see check_output_dir)
        # Before anything else of the run: from now on the folder is one this experiment may clear.
        if not (out / RUN_MARKER).exists():
            write_json(out / RUN_MARKER, {"written_by": "hf_carto experiment", "clear_with": "--overwrite_output_dir"})
        remove_stale_staging(out)  # what killed runs left: under the lock nobody else writes here
        if resuming:
            print(f"resuming the run in {out}: finished stages are read back, not redone")
        else:
            write_json(out / PENDING_CONFIG, settings)
    state.wait_for_everyone()
    return resuming


def cached_stage(folder: Path, run: Callable[[], dict], state=None) -> dict:
    """Run a stage once: ``folder/done.json`` holds what a finished run of it returned.

    ``run`` computes the stage (every process calls it, so that stages where all processes train
    stay in step) and returns a JSON-able summary; the main process writes the marker after
    ``run`` has returned, that is after every file of the stage, and the processes then meet. A
    stage interrupted at any point before the marker is redone from the start (or from what the
    stage itself knows how to resume).
    """
    done = folder / DONE
    if done.exists():
        return json.loads(done.read_text())
    info = run()
    if state is None or state.is_main_process:
        write_json(done, info)
    if state is not None:
        state.wait_for_everyone()
    return info


class StageTimer:
    """Seconds per stage in this invocation, and totals over every invocation of the run.

    With ``path``, the totals are kept on disk after each stage, so a run that is interrupted and
    resumed still reports what all of its stages cost (work read back costs nothing again).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        earlier = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.total: dict[str, float] = earlier.get("seconds", {})
        self.invocations = earlier.get("invocations", 0) + 1

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
            self.total[stage] = self.total.get(stage, 0.0) + spent
            if self.path is not None:
                write_json(self.path, {"seconds": self.total, "invocations": self.invocations})

    @staticmethod
    def table(seconds: dict[str, float]) -> str:
        total = sum(seconds.values()) or 1.0
        rows = [f"| {k} | {v:.1f} s | {v / total:.0%} |" for k, v in seconds.items()]
        return "\n".join(["| stage | time | share |", "|---|---:|---:|", *rows, f"| total | {total:.1f} s | |"])
