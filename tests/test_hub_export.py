"""The local Hub layout: loadable by the real `datasets` loader through its card, without secrets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset, load_dataset, load_from_disk
from huggingface_hub import DatasetCard

from hf_carto import add_cartography, apply_interventions, cartography_summary, fit_cartography
from hf_carto.data.generated import CorpusConfig, generate_corpus
from hf_carto.publish.export import export_hub_layout
from hf_carto.publish.privacy import PRIVATE_COLUMNS


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
    out = export_hub_layout(
        ds,
        tmp_path / "export",
        repo_id="someone/curated",
        fit=fit,
        data_map=True,
        max_shard_rows=100,
        license="cc-by-4.0",
        recording={"mode": "eval", "world_size": 2},
    )
    shards = sorted(p.name for p in (out / "data").iterdir())
    assert len(shards) == 4 and shards[0] == "train-00000-of-00004.parquet"
    loaded = load_dataset(str(out), split="train")
    public = ds.filter(lambda s: s == "", input_columns="secret").remove_columns(
        ["secret", "truth", "group", "repetitions"]
    )
    assert 0 < len(public) < len(ds)  # the canary rows are withheld
    assert loaded.features == public.features
    assert loaded.features["carto_quadrant"].names == [
        "stable_easy",
        "ambiguous_hard",
        "hotspot_memorized",
        "noisy_outlier",
    ]
    # The same rows in the same order; only sample_id is renumbered (checked in the next test).
    assert loaded.remove_columns("sample_id").to_list() == public.remove_columns("sample_id").to_list()

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-4.0"
    assert card.data["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    summary = cartography_summary(public, fit)
    text = (out / "README.md").read_text()
    assert f"| burn-in T_e | {fit.burn_in} |" in text
    assert f"| {summary['quadrants']['hotspot_memorized']['count']:,} |" in text
    assert "![data map](data_map.png)" in text and (out / "data_map.png").exists()
    assert "The map shows the published rows only." in text
    assert "| recording mode | eval (2 processes) |" in text
    # The card says what the export left out and why, not that every row is there.
    withheld = len(ds) - len(public)
    assert f"**{withheld:,} of {len(ds):,} rows are withheld**: the canary rows" in text
    assert "publishing them would publish the secrets" in text
    assert "No row is dropped" not in text and "No other row is left out" in text
    assert "`secret`, `truth`, `group`, `repetitions`" in text
    assert "`sample_id` is renumbered 0 to n-1" in text


def test_a_public_export_does_not_show_where_the_canaries_were(scored, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from hf_carto.core import plots

    ds, fit = scored
    drawn = []
    real_plot = plots.plot_data_map

    def recording_plot(difficulty, memorization, quadrants, path, **kwargs):
        drawn.append((np.asarray(difficulty), kwargs))
        return real_plot(difficulty, memorization, quadrants, path, **kwargs)

    monkeypatch.setattr(plots, "plot_data_map", recording_plot)
    out = export_hub_layout(ds, tmp_path / "export", repo_id="x/y", fit=fit, data_map=True)
    loaded = load_dataset(str(out), split="train")
    n = len(loaded)
    # No gaps: the ids are 0..n-1, so they do not show where the withheld rows sat.
    assert loaded["sample_id"][:] == list(range(n))
    assert not set(PRIVATE_COLUMNS) & set(loaded.column_names)
    # The mapping back to the source stays beside the export, marked private, never inside it.
    private_dir = tmp_path / "export.private"
    mapping = pq.read_table(private_dir / "sample_ids.parquet").to_pydict()
    assert mapping["sample_id"] == list(range(n))
    source_ids = mapping["source_sample_id"]
    canary_ids = {i for i, s in zip(ds["sample_id"][:], ds["secret"][:], strict=True) if s}
    assert len(source_ids) == n and not canary_ids & set(source_ids)
    by_id = {row["sample_id"]: row for row in ds.select_columns(["sample_id", "text"]).to_list()}
    assert [by_id[i]["text"] for i in source_ids] == loaded["text"][:]
    assert (private_dir / "PRIVATE.md").exists() and not (out / "sample_ids.parquet").exists()
    # The published data map is drawn from the published rows, with nothing circled.
    ((difficulty, kwargs),) = drawn
    assert difficulty.size == n and kwargs.get("highlight") is None
    with pytest.raises(ValueError, match="pass data_map=True"):
        export_hub_layout(ds, tmp_path / "e3", repo_id="x/y", fit=fit, data_map=out / "data_map.png")


def test_an_export_never_deletes_what_it_did_not_write(scored, tmp_path):
    import pyarrow.parquet as pq

    from hf_carto.publish.export import EXPORT_MARKER

    ds, fit = scored
    notes = tmp_path / "notes"
    (notes / "drafts").mkdir(parents=True)
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds 2 entries that are not an earlier export \(drafts, todo.txt\)"):
        export_hub_layout(ds, notes, repo_id="x/y", fit=fit, overwrite=True)
    assert (notes / "todo.txt").read_text() == "mine" and (notes / "drafts").is_dir()
    # An earlier export (it carries the marker) is replaced; so is an empty folder.
    (tmp_path / "empty").mkdir()
    export_hub_layout(ds, tmp_path / "empty", repo_id="x/y", fit=fit, overwrite=True)
    first = export_hub_layout(ds, tmp_path / "export", repo_id="x/y", fit=fit)
    assert json.loads((first / EXPORT_MARKER).read_text())["rows"] == len(load_dataset(str(first), split="train"))
    export_hub_layout(ds.select(range(20)), first, repo_id="x/y", fit=fit, overwrite=True)
    assert pq.read_table(first / "data").num_rows < 20  # (load_dataset would answer from its cache)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        export_hub_layout(ds, tmp_path / "a_file", repo_id="x/y", fit=fit, overwrite=True)
    # Never the source folder, a folder holding it, or one inside it.
    source = tmp_path / "work" / "scored"
    ds.save_to_disk(str(source))
    loaded = load_from_disk(str(source))
    before = sorted(p.name for p in source.iterdir())
    for target, relation in [
        (source, "is the source"),
        (tmp_path / "work", "contains the source"),
        (source / "hub", "lies inside the source folder"),
    ]:
        with pytest.raises(ValueError, match=relation):
            export_hub_layout(loaded, target, repo_id="x/y", fit=fit, overwrite=True)
    assert sorted(p.name for p in source.iterdir()) == before
    assert len(load_from_disk(str(source))) == len(ds)


def test_push_refuses_a_folder_holding_private_contents(scored, tmp_path):
    from hf_carto.publish.privacy import mark_private, private_contents
    from hf_carto.publish.push import push_curated_dataset

    ds, fit = scored
    clean = export_hub_layout(ds, tmp_path / "clean", repo_id="x/y", fit=fit)
    assert private_contents(clean) == []
    private = export_hub_layout(ds, tmp_path / "private", repo_id="x/y", fit=fit, include_private_columns=True)
    found = private_contents(private)
    assert any("PRIVATE.md" in f for f in found)
    assert any("train-00000-of-00001.parquet" in f and "'is_canary'" not in f and "secret" in f for f in found)
    with pytest.raises(ValueError, match="holds 2 private entries.*--allow-private"):
        push_curated_dataset(private, "x/y")
    registry = export_hub_layout(ds, tmp_path / "with_registry", repo_id="x/y", fit=fit)
    (registry / "control_canaries.json").write_text("[]")
    with pytest.raises(ValueError, match="control_canaries.json \\(a canary registry"):
        push_curated_dataset(registry, "x/y")
    marked = export_hub_layout(ds, tmp_path / "marked", repo_id="x/y", fit=fit)
    mark_private(marked, "test secrets")
    with pytest.raises(ValueError, match="PRIVATE.md \\(marks the folder private\\)"):
        push_curated_dataset(marked, "x/y")
    (clean / "data" / "broken.arrow").write_bytes(b"not arrow")
    assert private_contents(clean) == ["data/broken.arrow (unreadable, so it cannot be checked for canary rows)"]


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
    assert (kept / "PRIVATE.md").exists()  # pushing it needs allow_private
    # Unlabelled data (e.g. packed blocks): rows are found by the secrets themselves.
    unlabelled = ds.remove_columns(["secret", "truth", "group"])
    out2 = export_hub_layout(unlabelled, tmp_path / "unlabelled", repo_id="x/y", fit=fit, secrets=secrets)
    blob = b"".join(p.read_bytes() for p in out2.rglob("*") if p.is_file())
    assert not any(secret.encode() in blob for secret in secrets)
    assert len(load_dataset(str(out2), split="train")) == sum(1 for s in ds["secret"][:] if not s)
    withheld = sum(1 for s in ds["secret"][:] if s)
    assert f"**{withheld:,} of {len(ds):,} rows are withheld**" in (out2 / "README.md").read_text()


def test_repo_names_made_from_data_names_are_valid_hub_ids():
    from hf_carto.publish.push import check_repo_id, repo_name

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


def test_the_id_mapping_never_sits_beside_another_exports_rows(scored, tmp_path):
    ds, fit = scored
    out = tmp_path / "export"
    export_hub_layout(ds, out, repo_id="x/y", fit=fit)
    assert (tmp_path / "export.private" / "sample_ids.parquet").exists()
    export_hub_layout(ds, out, repo_id="x/y", fit=fit, include_private_columns=True, overwrite=True)
    assert not (tmp_path / "export.private").exists()  # these rows keep their own ids: no mapping
    (tmp_path / "mine.private").mkdir()
    (tmp_path / "mine.private" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="was not written by an export"):
        export_hub_layout(ds, tmp_path / "mine", repo_id="x/y", fit=fit)
    assert (tmp_path / "mine.private" / "notes.txt").read_text() == "x"


def test_private_contents_reads_every_data_format_and_only_marks_generated_columns(tmp_path):
    from hf_carto.publish.privacy import private_columns_of, private_contents

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "a", "secret": "1234"}\n')
    (tmp_path / "data" / "train.CSV").write_text("text,carto_canary_id\na,3\n")
    (tmp_path / "Private.MD").write_text("x")
    (tmp_path / "My_Canaries.json.bak").write_text("[]")
    (tmp_path / "data" / "ok.csv").write_text("text,group\na,1\n")  # a user's own group column
    found = private_contents(tmp_path)
    assert len(found) == 4, found
    assert any("train.jsonl" in f and "'secret'" in f for f in found)
    assert any("train.CSV" in f and "carto_canary_id" in f for f in found)
    assert not any("ok.csv" in f for f in found)
    assert private_columns_of(["text", "group", "repetitions"]) == []
    assert private_columns_of(["text", "truth", "group", "repetitions"]) == ["truth", "group", "repetitions"]


def test_a_users_own_hub_layout_is_not_taken_for_an_earlier_export(scored, tmp_path):
    ds, fit = scored
    own = tmp_path / "own"
    (own / "data").mkdir(parents=True)
    (own / "README.md").write_text("---\nlicense: mit\n---\n# my dataset\n")
    (own / "data" / "train-00000-of-00001.parquet").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export_hub_layout(ds, own, repo_id="x/y", fit=fit, overwrite=True)
    assert (own / "data" / "train-00000-of-00001.parquet").read_bytes() == b"mine"
    for name in (".", ".."):
        with pytest.raises(ValueError, match="names no folder of its own"):
            export_hub_layout(ds, name, repo_id="x/y", fit=fit, overwrite=True)


def test_the_card_shows_duplicated_vs_unique_hotspots_and_the_leakage_evidence(scored, tmp_path):
    """The counts on the card are those of the published rows, recomputed here by hand."""
    from hf_carto import add_duplicate_columns

    ds, fit = scored
    rng = np.random.default_rng(5)
    n = len(ds)
    ds = add_duplicate_columns(ds, "text")
    ks = np.where(rng.random(n) < 0.1, 0, 8).astype(np.int32)
    matched = np.where(ks > 0, rng.integers(0, 9, size=n), 0).astype(np.int32)
    leak = {
        "carto_leak_k": ks,
        "carto_leak_extractable": (matched == 8) & (ks > 0),
        "carto_leak_matched_tokens": matched,
        "carto_leak_loss": rng.random(n).astype(np.float32) * 5,
        "carto_leak_min_k_plus_plus": rng.normal(size=n).astype(np.float32),
    }
    for name, values in leak.items():
        ds = ds.add_column(name, values)
    out = export_hub_layout(ds, tmp_path / "export", repo_id="x/y", fit=fit)
    text = (out / "README.md").read_text()

    public = ds.filter(lambda s: s == "", input_columns="secret")
    q = np.asarray(public["carto_quadrant"])
    hot = q == 2
    exact = hot & (np.asarray(public["carto_dup_exact_size"]) > 1)
    near = hot & ~exact & (np.asarray(public["carto_dup_near_size"]) > 1)
    assert exact.sum() > 0  # the generated corpus plants duplicate groups
    h = int(hot.sum())
    row = (
        f"| {h:,} | {exact.sum():,} ({exact.sum() / h:.1%}) | {near.sum():,} ({near.sum() / h:.1%}) | "
        f"{(hot & ~exact & ~near).sum():,} ({(hot & ~exact & ~near).sum() / h:.1%}) |"
    )
    assert "## Duplicated or unique" in text and row in text

    assert "## Leakage evidence" in text and "Here k = 8;" in text
    e = np.asarray(public["carto_leak_extractable"])
    tested = np.asarray(public["carto_leak_k"]) > 0
    loss = np.asarray(public["carto_leak_loss"], dtype=np.float64)
    assert f"| all rows | {len(public):,} | {e.sum():,} of {tested.sum():,} | " in text
    sel = q == 2
    m = np.asarray(public["carto_leak_matched_tokens"])[sel & tested].mean()
    assert (
        f"| hotspot_memorized | {sel.sum():,} | {(e & sel).sum():,} of {(tested & sel).sum():,} | {m:.2f} | "
        f"{loss[sel].mean():.4g} |"
    ) in text
    assert 'ds.filter(lambda e: e, input_columns="carto_leak_extractable")' in text


def test_published_duplicate_clusters_name_published_rows_only(tmp_path):
    """Cluster ids and sizes are restated over the published rows: no original sample_id and no
    withheld copy shows through the carto_dup_* columns."""
    import pyarrow.parquet as pq

    from hf_carto import add_duplicate_columns

    texts = [f"row {i} is ordinary text" for i in range(12)]
    texts[2] = "the secret is 1234"  # a canary row, withheld
    texts[3] = texts[6]  # a canary row (by its secret) whose text copies a published row
    texts[9] = texts[7]  # a duplicate pair that stays published
    rng = np.random.default_rng(0)
    ds = Dataset.from_dict(
        {
            "sample_id": np.arange(12) + 100,
            "text": texts,
            "secret": ["1234" if i in (2, 3) else "" for i in range(12)],
            **{f"carto_loss_{t}": rng.random(12).astype(np.float32) for t in (1, 2, 3)},
        }
    )
    ds = add_duplicate_columns(ds, "text")
    fit = fit_cartography(ds, burn_in=1, eps=0.5)
    out = export_hub_layout(add_cartography(ds, fit), tmp_path / "e", repo_id="x/y", fit=fit, secrets=["1234"])
    table = pq.read_table(next((out / "data").glob("*.parquet"))).to_pydict()
    ids = table["sample_id"]
    assert ids == list(range(10))  # 12 rows, 2 canary rows withheld
    by_text = {}
    for sid, text in zip(ids, table["text"], strict=True):
        by_text.setdefault(text, []).append(sid)
    for column_id, column_size in (
        ("carto_dup_exact_id", "carto_dup_exact_size"),
        ("carto_dup_near_id", "carto_dup_near_size"),
    ):
        for sid, text, cluster, size in zip(ids, table["text"], table[column_id], table[column_size], strict=True):
            members = by_text[text]
            assert cluster == min(members) and size == len(members), (column_id, sid)
    # The published copy of the withheld row's text is unique among the published rows; the
    # published pair names its first published row.
    lone = ids[table["text"].index(texts[6])]
    assert table["carto_dup_exact_size"][lone] == 1 and table["carto_dup_exact_id"][lone] == lone
    pair = [sid for sid, text in zip(ids, table["text"], strict=True) if text == texts[7]]
    assert [table["carto_dup_exact_id"][sid] for sid in pair] == [pair[0]] * 2 and len(pair) == 2
