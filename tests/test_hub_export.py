"""The local Hub layout: loadable by the real `datasets` loader through its card, without secrets."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, load_dataset
from huggingface_hub import DatasetCard

from hf_carto import add_cartography, apply_interventions, cartography_summary, fit_cartography
from hf_carto.data import CorpusConfig, generate_corpus
from hf_carto.hub import export_hub_layout
from hf_carto.plots import plot_data_map


@pytest.fixture(scope="module")
def scored():
    corpus = generate_corpus(
        CorpusConfig(num_documents=300, num_duplicate_groups=4, num_canaries=3, num_noise_documents=5, seed=2)
    )
    rng = np.random.default_rng(0)
    n = len(corpus)
    for t in range(1, 6):
        corpus = corpus.add_column(f"carto_loss_{t}", rng.choice([0.3, 1.0, 2.5, 4.0], size=n).astype(np.float32))
    corpus = corpus.add_column("sample_id", np.arange(n))
    fit = fit_cartography(corpus, burn_in=2, eps=1.5)
    return apply_interventions(add_cartography(corpus, fit), alpha=0.5), fit


def test_export_loads_back_with_the_same_rows_and_features(scored, tmp_path):
    ds, fit = scored
    image = plot_data_map(
        ds["carto_difficulty"][:], ds["carto_memorization"][:], ds["carto_quadrant"][:], tmp_path / "map.png"
    )
    out = export_hub_layout(
        ds,
        tmp_path / "export",
        repo_id="someone/curated",
        fit=fit,
        data_map=image,
        max_shard_rows=100,
        license="cc-by-4.0",
        recording={"mode": "eval", "world_size": 2},
    )
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert len(shards) == 4 and shards[0] == "train-00000-of-00004.parquet"
    loaded = load_dataset(str(out), split="train")
    public = ds.filter(lambda s: s == "", input_columns="secret").remove_columns(["secret", "truth", "group"])
    assert 0 < len(public) < len(ds)  # the canary rows are withheld
    assert loaded.features == public.features
    assert loaded.features["carto_quadrant"].names == [
        "stable_easy",
        "ambiguous_hard",
        "hotspot_memorized",
        "noisy_outlier",
    ]
    assert loaded.to_list() == public.to_list()

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    summary = cartography_summary(ds, fit)
    text = (out / "README.md").read_text()
    assert f"| burn-in T_e | {fit.burn_in} |" in text
    assert f"{summary['quadrants']['hotspot_memorized']['count']:,}" in text
    assert "![data map](data_map.png)" in text and (out / "data_map.png").exists()
    assert "| recording mode | eval (2 processes) |" in text
    # The card says what the export left out and why, not that every row is there.
    withheld = len(ds) - len(public)
    assert f"**{withheld:,} of {len(ds):,} rows are withheld**: the canary rows" in text
    assert "publishing them would publish the secrets" in text
    assert "No row is dropped" not in text and "No other row is dropped" in text
    assert "`secret`, `truth`, `group`" in text


def test_secrets_and_ground_truth_stay_local(scored, tmp_path):
    ds, fit = scored
    secrets = [s for s in set(ds["secret"][:]) if s]
    assert secrets
    out = export_hub_layout(ds, tmp_path / "export", repo_id="someone/curated", fit=fit)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret.encode() not in blob
    kept = export_hub_layout(ds, tmp_path / "with", repo_id="x/y", fit=fit, include_private_columns=True)
    assert len(load_dataset(str(kept), split="train")) == len(ds)
    card = (kept / "README.md").read_text()
    assert "No row is dropped here" in card and "withheld" not in card and "Columns left out" not in card
    # Unlabelled data (e.g. packed blocks): rows are found by the secrets themselves.
    unlabelled = ds.remove_columns(["secret", "truth", "group"])
    out2 = export_hub_layout(unlabelled, tmp_path / "unlabelled", repo_id="x/y", fit=fit, secrets=secrets)
    blob = b"".join(p.read_bytes() for p in out2.rglob("*") if p.is_file())
    assert not any(secret.encode() in blob for secret in secrets)
    assert len(load_dataset(str(out2), split="train")) == sum(1 for s in ds["secret"][:] if not s)
    withheld = sum(1 for s in ds["secret"][:] if s)
    assert f"**{withheld:,} of {len(ds):,} rows are withheld**" in (out2 / "README.md").read_text()


def test_repo_names_made_from_data_names_are_valid_hub_ids():
    from hf_carto.hub import check_repo_id, repo_name

    cases = {
        "wiki.train": "wiki.train",
        "wikitext-103-raw-v1": "wikitext-103-raw-v1",
        "Salesforce/wikitext": "Salesforce-wikitext",
        "my data (v2)..final--cut": "my-data-v2-.final-cut",
        "-.hidden.git": "hidden",
        "données": "donn-es",
        "日本語": "dataset",
        "": "dataset",
    }
    for text, expected in cases.items():
        assert repo_name(text) == expected, text
    for text in [*cases, "x" * 200, "a" * 92 + ".git", "a.b.git.git", "--__--"]:
        name = repo_name(text, max_length=96 - len("gpt2--curated"))
        check_repo_id(f"your-name/gpt2-{name}-curated")
        check_repo_id(f"your-name/{repo_name(text)}")


def test_bad_exports(scored, tmp_path):
    ds, fit = scored
    with pytest.raises(ValueError, match=r"lacks the cartography columns \['carto_difficulty'"):
        export_hub_layout(Dataset.from_dict({"text": ["a"]}), tmp_path / "e", repo_id="x/y")
    export_hub_layout(ds, tmp_path / "e2", repo_id="x/y", fit=fit)
    with pytest.raises(FileExistsError, match="already exists"):
        export_hub_layout(ds, tmp_path / "e2", repo_id="x/y", fit=fit)
    export_hub_layout(ds.select(range(10)), tmp_path / "e2", repo_id="x/y", fit=fit, overwrite=True)
    assert len(load_dataset(str(tmp_path / "e2"), split="train")) == 10
