"""The hf-carto command line, in process through main() and once through the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from hf_carto.commands.main import main
from hf_carto.record.store import LossStore, RecordingSettings
from hf_carto.score.scored_io import FIT_FILE, SUMMARY_FILE


@pytest.fixture()
def loss_parquet(tmp_path):
    rng = np.random.default_rng(0)
    losses = rng.choice([0.2, 0.9, 1.8, 3.5], size=(400, 5)).astype(np.float32)
    cols = {f"carto_loss_{t + 1}": losses[:, t] for t in range(5)}
    cols["sample_id"] = np.arange(400, dtype=np.int64)
    path = tmp_path / "losses.parquet"
    Dataset.from_dict(cols).to_parquet(str(path))
    return path


def test_score_then_summary(tmp_path, loss_parquet, capsys):
    out = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                str(loss_parquet),
                str(out),
                "--burn-in",
                "2",
                "--eps",
                "quantile:0.3",
                "--alpha",
                "0",
                "--num-proc",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "hotspot_memorized" in printed and f"wrote {out}" in printed
    scored = load_from_disk(str(out))
    assert {"carto_quadrant", "carto_loss_weight", "carto_keep"} <= set(scored.column_names)
    fit = json.loads((out / FIT_FILE).read_text())
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert fit["burn_in"] == 2 and fit["eps_spec"] == "quantile:0.3"
    hotspots = summary["quadrants"]["hotspot_memorized"]["count"]
    noisy = summary["quadrants"]["noisy_outlier"]["count"]
    assert summary["weights"]["num_removed"] == hotspots + noisy  # alpha 0 removes hotspots

    assert main(["summary", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quadrants"]["hotspot_memorized"]["count"] == hotspots


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "{tmp}/missing", "{tmp}/o", "--burn-in", "1", "--eps", "1"], "missing: no such file"),
        (["score", "{parquet}", "{tmp}/o", "--burn-in", "9", "--eps", "1"], "burn_in must be in"),
        (["score", "{parquet}", "{tmp}/o", "--burn-in", "1", "--eps", "often"], "unknown eps policy"),
        (["score", "{parquet}", "{tmp}", "--burn-in", "1", "--eps", "1"], "already exists"),
    ],
)
def test_user_errors_exit_2_with_a_named_problem(tmp_path, loss_parquet, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, parquet=loss_parquet) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_installed_console_script_runs(tmp_path, loss_parquet):
    exe = shutil.which("hf-carto") or str(__import__("pathlib").Path(sys.executable).parent / "hf-carto")
    gen = subprocess.run(
        [exe, "generate", str(tmp_path / "corpus"), "--num-documents", "50"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "documents to" in gen.stdout
    corpus = load_from_disk(str(tmp_path / "corpus"))
    assert corpus.features["truth"].names == ["ordinary", "duplicate", "canary", "noise"]
    bad = subprocess.run(
        [exe, "score", str(tmp_path / "corpus"), str(tmp_path / "o"), "--burn-in", "1", "--eps", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no 'carto_loss_{t}' columns found" in bad.stderr


def test_the_command_line_runs_without_docstrings(tmp_path):
    """``python -OO`` strips the docstrings the commands' help is read from; the parser must not need them."""
    command = [sys.executable, "-OO", "-m", "hf_carto.commands.main"]
    listed = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
    assert all(name in listed for name in ("demo", "score", "combine", "generate")), listed
    subprocess.run([*command, "generate", str(tmp_path / "corpus"), "--num-documents", "20"], check=True)
    assert load_from_disk(str(tmp_path / "corpus")).num_rows > 0


def test_merge_then_score(tmp_path, capsys):
    store = LossStore(tmp_path / "run")
    store.create_or_check(RecordingSettings(mode="eval", world_size=1, num_samples=30))
    rng = np.random.default_rng(0)
    for t in (1, 2, 3):
        ids = np.arange(30)
        store.write_shard(
            t,
            0,
            {
                "sample_id": ids,
                "loss": rng.random(30) * 3,
                "n_tokens": np.full(30, 8),
                "step": np.full(30, t),
            },
        )
        store.mark_complete(t, t, float(t))
    assert main(["merge", str(tmp_path / "run")]) == 0
    assert "merged 3 snapshots of 30 samples" in capsys.readouterr().out
    wide = tmp_path / "run" / "carto" / "losses.parquet"
    assert main(["merge", str(tmp_path / "run")]) == 2  # refuses to overwrite
    assert main(["score", str(wide), str(tmp_path / "scored"), "--burn-in", "1", "--eps", "1.0"]) == 0

    Dataset.from_dict({"sample_id": np.arange(30)[::-1], "text": ["t"] * 30}).save_to_disk(str(tmp_path / "ds"))
    assert (
        main(
            [
                "merge",
                str(tmp_path / "run"),
                "--dataset",
                str(tmp_path / "ds"),
                "--out",
                str(tmp_path / "merged"),
            ]
        )
        == 0
    )
    merged = load_from_disk(str(tmp_path / "merged"))
    assert merged.column_names == ["sample_id", "text", "carto_loss_1", "carto_loss_2", "carto_loss_3"]
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "no recording" in capsys.readouterr().err


def test_arms_writes_three_labelled_datasets(tmp_path, loss_parquet, capsys):
    scored = tmp_path / "scored"
    assert (
        main(
            ["score", str(loss_parquet), str(scored), "--burn-in", "2", "--eps", "quantile:0.3", "--no-interventions"]
        )
        == 0
    )
    assert main(["arms", str(scored), str(tmp_path / "arms"), "--budget", "0.1", "--alpha", "0"]) == 0
    out = capsys.readouterr().out
    assert "gendatacarto" in out and "pruned weight=10.00%" in out
    budgets = json.loads((tmp_path / "arms" / "budgets.json").read_text())
    assert budgets["random"] == budgets["gendatacarto"] and budgets["gendatacarto"]["num_removed"] == 40
    for name in ("no_intervention", "gendatacarto", "random"):
        arm = load_from_disk(str(tmp_path / "arms" / name))
        assert len(arm) == 400 and "carto_keep" in arm.column_names
    assert main(["arms", str(scored), str(tmp_path / "arms")]) == 2


# --- damaged and unexpected input: one line naming the file, exit status 2, no traceback ----------


def one_error_line(capsys, command):
    """The single error line of a failed command (progress bars may share stderr)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"hf-carto {command}: error: ")
    return lines[0]


def score(path, out):
    return main(["score", str(path), str(out), "--burn-in", "1", "--eps", "1"])


@pytest.mark.parametrize("saved", [False, True], ids=["parquet", "save_to_disk"])
def test_an_empty_dataset_is_named(tmp_path, capsys, saved):
    empty = Dataset.from_dict({"carto_loss_1": [1.0], "carto_loss_2": [2.0], "sample_id": [0]}).select([])
    path = tmp_path / ("empty" if saved else "empty.parquet")
    empty.save_to_disk(str(path)) if saved else empty.to_parquet(str(path))
    assert score(path, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(path) in line and "empty (0 rows" in line
    assert not (tmp_path / "o").exists()


def test_an_empty_dataset_to_merge_into_is_named(tmp_path, capsys):
    run = tmp_path / "run"
    store = LossStore(run)
    store.create_or_check(RecordingSettings(num_samples=2))
    store.write_shard(1, 0, {"sample_id": [0, 1], "loss": [1.0, 2.0], "n_tokens": [4, 4], "step": [1, 1]})
    store.mark_complete(1, 1, 1.0)
    Dataset.from_dict({"sample_id": [0]}).select([]).save_to_disk(str(tmp_path / "ds"))
    assert main(["merge", str(run), "--dataset", str(tmp_path / "ds")]) == 2
    assert f"{tmp_path / 'ds'}: the dataset is empty" in one_error_line(capsys, "merge")


def test_a_manifest_missing_keys_is_named(tmp_path, capsys):
    manifest = tmp_path / "carto" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"format_version": 1, "snapshots": {}}))
    assert main(["merge", str(tmp_path)]) == 2
    line = one_error_line(capsys, "merge")
    assert str(manifest) in line and "no 'settings' entry" in line


def test_a_fit_missing_keys_is_named(tmp_path, loss_parquet, capsys):
    out = tmp_path / "scored"
    assert score(loss_parquet, out) == 0
    fit = json.loads((out / FIT_FILE).read_text())
    del fit["tau_m"]
    (out / FIT_FILE).write_text(json.dumps(fit))
    capsys.readouterr()
    assert main(["summary", str(out)]) == 2
    line = one_error_line(capsys, "summary")
    assert str(out / FIT_FILE) in line and "lacks ['tau_m']" in line


@pytest.mark.parametrize("damage", ["thrift", "magic"])
def test_a_garbled_parquet_footer_is_named(tmp_path, loss_parquet, capsys, damage):
    data = bytearray(loss_parquet.read_bytes())
    if damage == "thrift":  # the footer's metadata, before its length and the closing magic
        data[-60:-8] = bytes(b ^ 0xFF for b in data[-60:-8])
    else:
        data[-1] ^= 0xFF
    loss_parquet.write_bytes(bytes(data))
    assert score(loss_parquet, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(loss_parquet) in line and "not a readable parquet file" in line


def test_a_parquet_schema_with_bad_base64_is_named(tmp_path, loss_parquet, capsys):
    data = bytearray(loss_parquet.read_bytes())
    at = data.rfind(b"ARROW:schema")
    data[at + 40 : at + 48] = b"!" * 8  # inside the base64-encoded arrow schema
    loss_parquet.write_bytes(bytes(data))
    assert score(loss_parquet, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(loss_parquet) in line and "base64" in line


def test_a_truncated_arrow_file_is_named(tmp_path, capsys):
    saved = tmp_path / "saved"
    Dataset.from_dict({"carto_loss_1": [1.0] * 100, "carto_loss_2": [2.0] * 100}).save_to_disk(str(saved))
    [arrow] = saved.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])
    assert score(saved, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(arrow) in line and "truncated or damaged" in line


@pytest.mark.parametrize(
    ("values", "shown"),
    [(["1.0", "2"], "Value('string')"), ([[1.0], [2.0]], "List(Value('float64'))")],
    ids=["string", "list"],
)
def test_a_loss_column_that_is_not_numbers_is_named(tmp_path, capsys, values, shown):
    path = tmp_path / "losses.parquet"
    Dataset.from_dict({"carto_loss_1": [1.0, 2.0], "carto_loss_2": values, "sample_id": [0, 1]}).to_parquet(str(path))
    assert score(path, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(path) in line and f"carto_loss_2 ({shown})" in line


@pytest.mark.parametrize("command", ["score", "merge"])
def test_a_full_disk_names_the_folder(tmp_path, loss_parquet, capsys, monkeypatch, command):
    import errno

    import pyarrow.parquet as pq

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if command == "score":
        monkeypatch.setattr(Dataset, "save_to_disk", no_space)
        target = tmp_path / "scored"
        assert score(loss_parquet, target) == 2
    else:
        run = tmp_path / "run"
        store = LossStore(run)
        store.create_or_check(RecordingSettings(num_samples=2))
        store.write_shard(1, 0, {"sample_id": [0, 1], "loss": [1.0, 2.0], "n_tokens": [4, 4], "step": [1, 1]})
        store.mark_complete(1, 1, 1.0)
        monkeypatch.setattr(pq, "write_table", no_space)
        target = run / "carto" / "losses.parquet"
        assert main(["merge", str(run), "--out", str(target)]) == 2
    line = one_error_line(capsys, command)
    assert f"no space left on the device of {target.parent} while writing {target}" in line
    assert " free" in line and (command == "merge" or "needed" in line)
    assert not target.exists()


def test_a_stray_snapshot_folder_is_named(tmp_path, capsys):
    store = LossStore(tmp_path)
    store.create_or_check(RecordingSettings(num_samples=2))
    store.write_shard(1, 0, {"sample_id": [0, 1], "loss": [1.0, 2.0], "n_tokens": [4, 4], "step": [1, 1]})
    store.mark_complete(1, 1, 1.0)
    stray = tmp_path / "carto" / "losses" / "snapshot=tmp"
    stray.mkdir()
    assert main(["merge", str(tmp_path)]) == 2
    line = one_error_line(capsys, "merge")
    assert f"{stray} is not a snapshot folder" in line


@pytest.mark.parametrize("name", [FIT_FILE, "state.json", "dataset_info.json"])
def test_invalid_json_is_named(tmp_path, loss_parquet, capsys, name):
    out = tmp_path / "scored"
    assert score(loss_parquet, out) == 0
    (out / name).write_text('{"burn_in": 2,')
    capsys.readouterr()
    assert main(["summary", str(out)]) == 2
    line = one_error_line(capsys, "summary")
    assert f"{out / name} is not valid JSON" in line


def test_negative_losses_are_refused_unless_allowed(tmp_path, capsys):
    path = tmp_path / "losses.parquet"
    Dataset.from_dict({"carto_loss_1": [1.0, -0.5], "carto_loss_2": [0.5, 2.0], "sample_id": [7, 8]}).to_parquet(
        str(path)
    )
    assert score(path, tmp_path / "o") == 2
    line = one_error_line(capsys, "score")
    assert str(path) in line and "1 of 2 rows have negative losses (in carto_loss_1); first sample_ids: [8]" in line
    assert main(["score", str(path), str(tmp_path / "o"), "--burn-in", "1", "--eps", "1", "--allow-negative"]) == 0


# --- help and empty inputs ---------------------------------------------------------------------


def _commands() -> dict:
    import argparse

    from hf_carto.commands.main import make_parser

    [sub] = [a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", [None, *_commands()])
def test_every_command_prints_its_help_and_documents_every_option(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hf-carto{'' if command is None else ' ' + command}"), text
    if command is None:
        return
    parser = _commands()[command]
    assert parser.description, f"`hf-carto {command} --help` says nothing about what the command does"
    undocumented = [a.dest for a in parser._actions if a.dest != "help" and not a.help]
    assert undocumented == [], f"`hf-carto {command}` options without help: {undocumented}"
    for action in parser._actions:
        assert " ".join(action.help.split()[:3]) in " ".join(text.split()), action.dest


def test_the_summary_of_a_dataset_with_no_rows_is_refused_in_one_line(tmp_path, loss_parquet, capsys):
    from hf_carto.score.scored_io import load_scored, save_scored

    scored = tmp_path / "scored"
    assert score(loss_parquet, scored) == 0
    dataset, fit = load_scored(scored)
    empty = tmp_path / "empty"
    save_scored(dataset.select([]), empty, fit=fit)
    capsys.readouterr()
    assert main(["summary", str(empty)]) == 2
    line = one_error_line(capsys, "summary")
    assert str(empty) in line and "0 rows" in line
