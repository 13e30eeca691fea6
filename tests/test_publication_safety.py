"""`hf-carto push` through the real command line: an export never deletes a folder the tool did not
write, and what holds canaries is refused. Every refusal comes before any network call."""

from __future__ import annotations

import numpy as np
import pytest

from hf_carto import add_cartography, apply_interventions, fit_cartography
from hf_carto.cli import main
from hf_carto.data import CorpusConfig, generate_corpus
from hf_carto.hub import EXPORT_MARKER, export_hub_layout, private_contents
from hf_carto.io import save_scored


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
    from hf_carto.io import load_scored

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
