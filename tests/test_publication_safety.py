"""`hf-carto push` through the real command line: an export never deletes a folder the tool did not
write, and what holds canaries is refused. Every refusal comes before any network call."""

from __future__ import annotations

import numpy as np
import pytest

from hf_carto import add_cartography, apply_interventions, fit_cartography
from hf_carto.commands.main import main
from hf_carto.data.generated import CorpusConfig, generate_corpus
from hf_carto.publish.export import EXPORT_MARKER, export_hub_layout
from hf_carto.publish.privacy import private_contents
from hf_carto.score.scored_io import save_scored


@pytest.fixture(scope="module")
def scored_dir(tmp_path_factory):
    corpus = generate_corpus(CorpusConfig(num_documents=120, num_canaries=2, num_noise_documents=3, seed=5))
    rng = np.random.default_rng(2)
    for t in range(1, 5):
        corpus = corpus.add_column(f"carto_loss_{t}", rng.choice([0.3, 1.0, 2.5], size=len(corpus)).astype(np.float32))
    corpus = corpus.add_column("sample_id", np.arange(len(corpus)))
    fit = fit_cartography(corpus, burn_in=2, eps=1.5)
    out = tmp_path_factory.mktemp("work") / "scored"
    save_scored(apply_interventions(add_cartography(corpus, fit)), out, fit=fit)
    return out


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_never_deletes_a_folder_it_did_not_write(scored_dir, tmp_path, capsys):
    source = _files(scored_dir)
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "sub" / "a.txt").write_text("keep me")
    cases = [
        (notes, "holds 1 entries that are not an earlier export"),
        (scored_dir, "is the source"),
        (scored_dir.parent, "contains the source"),
        (scored_dir / "hub", "lies inside the source folder"),
    ]
    for export_dir, message in cases:
        assert main(["push", str(scored_dir), "someone/x", "--export-dir", str(export_dir)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (notes / "sub" / "a.txt").read_text() == "keep me"
    assert _files(scored_dir) == source


def test_push_refuses_private_folders_and_the_export_is_clean(scored_dir, tmp_path, capsys):
    from hf_carto.score.scored_io import load_scored

    dataset, fit = load_scored(scored_dir)
    private = export_hub_layout(dataset, tmp_path / "private", repo_id="x/y", fit=fit, include_private_columns=True)
    assert main(["push", str(private), "someone/x"]) == 2
    err = capsys.readouterr().err
    assert "private entries" in err and "PRIVATE.md" in err and "--allow-private" in err
    # A scored folder is exported first; its export withholds the canaries and is pushable.
    export = tmp_path / "export"
    assert main(["push", str(scored_dir), "bad id", "--export-dir", str(export)]) == 2  # refused before export
    assert not export.exists()
    public = export_hub_layout(dataset, export, repo_id="x/y", fit=fit, data_map=True)
    assert private_contents(public) == [] and (public / EXPORT_MARKER).exists()


def _run_folder(root, scored_dir):
    """The top of a run folder as the experiment leaves it: its private files, its settings and
    report, its scored `curated/` dataset, its public export `hub/`, and parquet files of another
    schema under `seed0/`."""
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hf_carto.publish.privacy import mark_private
    from hf_carto.score.scored_io import load_scored

    run = root / "runs" / "base"
    (run / "seed0" / "evidence").mkdir(parents=True)
    shutil.copytree(scored_dir, run / "curated")
    mark_private(run / "curated", "every scored training block")
    dataset, fit = load_scored(run / "curated")
    export_hub_layout(dataset, run / "hub", repo_id="someone/x", fit=fit)
    pq.write_table(pa.table({"sample_id": [0, 1], "carto_leak_k": [8, 8]}), run / "seed0" / "evidence" / "c.parquet")
    (run / "canaries.json").write_text(json.dumps([{"secret": "7 1 4 2"}]))
    (run / "control_canaries.json").write_text("[]")
    (run / "run_config.json").write_text("{}")
    (run / "report.json").write_text("{}")
    mark_private(run, "the canary registry")
    return run


def test_pushing_a_run_folder_names_its_private_files_and_the_export_to_push(scored_dir, tmp_path, capsys):
    from hf_carto.publish.push import push_curated_dataset

    run = _run_folder(tmp_path, scored_dir)
    runs = run.parent
    before = sorted(p.name for p in runs.iterdir())
    contents = _files(run)
    capsys.readouterr()  # (the progress bars of building the run folder)
    assert main(["push", str(run), "someone/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"{run} is a run folder, not a dataset, and holds private material" in err
    assert "PRIVATE.md" in err and "canaries.json" in err and "control_canaries.json" in err
    assert f"push its export {run / 'hub'} (canary rows withheld) instead" in err
    # Refused before anything was written: no export, no lock file beside it.
    assert sorted(p.name for p in runs.iterdir()) == before == ["base"]
    assert _files(run) == contents
    # The Python call says the same.
    with pytest.raises(ValueError, match="is a run folder, not a dataset, and holds private material"):
        push_curated_dataset(run, "someone/x")
    # Without an export of its own, the scored dataset is the folder to push.
    import shutil

    shutil.rmtree(run / "hub")
    assert main(["push", str(run), "someone/x"]) == 2
    assert f"push its scored dataset {run / 'curated'} instead" in capsys.readouterr().err


def test_pushing_a_scored_folder_writes_nothing_into_it(scored_dir, tmp_path, capsys):
    import shutil

    source = tmp_path / "scored"
    shutil.copytree(scored_dir, source)
    contents = _files(source)
    # What save_scored writes, and nothing else (earlier pushes in this module read scored_dir too).
    saved = ["cartography.json", "data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    assert sorted(str(p) for p in contents) == saved
    export = tmp_path / "export"
    # Offline (tests/conftest.py): the export is written, the upload fails, and the export is kept.
    assert main(["push", str(source), "someone/x", "--export-dir", str(export)]) == 1
    assert "is intact" in capsys.readouterr().err
    assert (export / EXPORT_MARKER).exists() and private_contents(export) == []
    assert _files(source) == contents  # no cache-*.arrow of the export's transformations
    # Nothing but the export and its id mapping is left beside it: no scratch, no staging, no lock file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.private", "scored"]


PAUSED_EXPORT = """
import sys, time
import hf_carto.publish.export as export
from hf_carto.score.scored_io import load_scored

def paused(*args, **kwargs):  # the shards are written into the staging folder, the card is not
    print("inside", flush=True)
    time.sleep(600)

export.render_dataset_card = paused
dataset, fit = load_scored(sys.argv[1])
export.export_hub_layout(dataset, sys.argv[2], repo_id="someone/x", fit=fit)
"""


def _paused_export(source, export):
    import os
    import subprocess
    import sys

    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_EXPORT, str(source), str(export)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.stdout.readline().strip() == "inside"
    return process


def test_a_terminated_export_leaves_nothing_and_a_killed_ones_leftovers_go_with_the_next(scored_dir, tmp_path, caplog):
    import signal

    from hf_carto.score.scored_io import load_scored

    export = tmp_path / "export"
    # SIGTERM (kill, timeout): the export stops as on any error and removes what it wrote.
    terminated = _paused_export(scored_dir, export)
    assert any(p.name.endswith(".partial") for p in tmp_path.iterdir())  # it was writing
    terminated.send_signal(signal.SIGTERM)
    assert terminated.wait(timeout=60) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    # SIGKILL cannot be caught: its staging folder, scratch and lock file stay...
    killed = _paused_export(scored_dir, export)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith(".export.") and n.endswith(".partial") for n in left), left
    assert any(n.startswith(".export.") and n.endswith(".tmp") for n in left), left
    assert ".export.lock" in left
    # ...until the next export, which takes the lock over (naming the dead writer) and removes them.
    dataset, fit = load_scored(scored_dir)
    with caplog.at_level("WARNING"):
        export_hub_layout(dataset, export, repo_id="someone/x", fit=fit)
    assert f"left by PID {killed.pid}" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "export.private"]
    assert (export / EXPORT_MARKER).exists()
