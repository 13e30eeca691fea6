"""Cartography on `datasets`: the map path must agree with the array path, label without dropping."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from datasets import ClassLabel, Dataset

from hf_carto import (
    CartographyFit,
    Quadrant,
    add_cartography,
    apply_interventions,
    assign_quadrants,
    cartography_summary,
    difficulty,
    fit_cartography,
    format_summary,
    loss_columns,
    memorization,
    resolve_eps,
)
from hf_carto.core.columns import read_columns
from hf_carto.score.scored_io import FIT_FILE, load_scored, load_table, save_scored


def make_dataset(losses: np.ndarray, *, ids_offset: int = 1000, extra: bool = True) -> Dataset:
    columns = {f"carto_loss_{t + 1}": losses[:, t].astype(np.float32) for t in range(losses.shape[1])}
    columns["sample_id"] = np.arange(ids_offset, ids_offset + len(losses), dtype=np.int64)
    if extra:
        columns["text"] = [f"row {i}" for i in range(len(losses))]
    return Dataset.from_dict(columns)


@pytest.fixture(scope="module")
def losses() -> np.ndarray:
    # Values on a coarse grid: many ties and many forget events, like a real memorizing run.
    rng = np.random.default_rng(7)
    return rng.choice([0.3, 0.6, 1.2, 2.5, 4.0], size=(3000, 6)).astype(np.float32)


@pytest.mark.parametrize("eps", [1.0, "quantile:0.3", "min+0.5", "min*(1+1.5)"])
def test_dataset_path_matches_array_path(losses, eps):
    ds = make_dataset(losses)
    fit = fit_cartography(ds, burn_in=2, eps=eps, alpha_d=0.6, alpha_m=0.7, batch_size=512)
    as_float = losses.astype(np.float64)
    expected_eps = resolve_eps(losses, eps)
    assert fit.eps == pytest.approx(expected_eps, rel=1e-6)
    d = difficulty(as_float, 2)
    m = memorization(as_float, fit.eps)
    qa = assign_quadrants(d, m, 0.6, 0.7)
    assert (fit.tau_d, fit.tau_m) == (qa.tau_d, qa.tau_m)
    assert fit.num_with_forget_events == int((m > 0).sum())

    scored = add_cartography(ds, fit, batch_size=700)
    out = read_columns(scored, ["carto_difficulty", "carto_memorization", "carto_quadrant"])
    np.testing.assert_allclose(out["carto_difficulty"], d, rtol=1e-12)
    np.testing.assert_array_equal(out["carto_memorization"], m)
    np.testing.assert_array_equal(out["carto_quadrant"], qa.quadrants)
    # Other columns are untouched and nothing is dropped.
    assert scored["text"][:3] == ["row 0", "row 1", "row 2"]
    assert len(scored) == len(ds)
    assert isinstance(scored.features["carto_quadrant"], ClassLabel)
    assert scored.features["carto_quadrant"].names == Quadrant.names()


def test_num_proc_gives_identical_columns(losses):
    ds = make_dataset(losses)
    fit = fit_cartography(ds, burn_in=3, eps=1.0)
    names = ["carto_difficulty", "carto_memorization", "carto_quadrant"]
    one = read_columns(add_cartography(ds, fit, batch_size=256), names)
    two = read_columns(add_cartography(ds, fit, num_proc=2, batch_size=256), names)
    for col in names:
        np.testing.assert_array_equal(one[col], two[col])


def test_add_cartography_fits_when_given_settings(losses):
    ds = make_dataset(losses[:200])
    direct = add_cartography(ds, burn_in=2, eps=1.0)
    via_fit = add_cartography(ds, fit_cartography(ds, burn_in=2, eps=1.0))
    assert direct["carto_quadrant"][:] == via_fit["carto_quadrant"][:]
    with pytest.raises(ValueError, match="either a fit or both burn_in and eps"):
        add_cartography(ds, burn_in=2)


def test_fit_round_trips_through_json(losses):
    fit = fit_cartography(make_dataset(losses[:100]), burn_in=2, eps="quantile:0.1")
    again = CartographyFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again == fit
    assert again.num_snapshots == 6


# --- interventions ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(losses) -> Dataset:
    return add_cartography(make_dataset(losses), burn_in=2, eps=1.0, alpha_d=0.5, alpha_m=0.5)


@pytest.mark.parametrize(
    ("kwargs", "table"),
    [
        # quadrant -> (loss weight, sampling weight, keep)
        ({}, {0: (1.0, 1.0, True), 1: (1.0, 2.0, True), 2: (0.5, 1.0, True), 3: (0.0, 0.0, False)}),
        (
            {"gamma": 3.0, "alpha": 0.0, "remove_noisy": False, "stable_easy_gamma": 1.25},
            {0: (1.0, 1.25, True), 1: (1.0, 3.0, True), 2: (0.0, 0.0, False), 3: (1.0, 1.0, True)},
        ),
    ],
)
def test_interventions_follow_the_quadrant_table(scored, kwargs, table):
    out = apply_interventions(scored, **kwargs)
    assert len(out) == len(scored)  # labelled, never dropped
    cols = read_columns(out, ["carto_quadrant", "carto_loss_weight", "carto_sampling_weight", "carto_keep"])
    for quad, (lw, sw, keep) in table.items():
        sel = cols["carto_quadrant"] == quad
        assert sel.any(), f"fixture should populate quadrant {quad}"
        assert (cols["carto_loss_weight"][sel] == lw).all()
        assert (cols["carto_sampling_weight"][sel] == sw).all()
        assert (cols["carto_keep"][sel] == keep).all()
    kept = out.filter(lambda k: k, input_columns="carto_keep")
    assert len(kept) == int(cols["carto_keep"].sum())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gamma": 0.5}, "gamma"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"stable_easy_gamma": float("inf")}, "stable_easy_gamma"),
    ],
)
def test_interventions_reject_bad_factors(scored, kwargs, match):
    with pytest.raises(ValueError, match=match):
        apply_interventions(scored, **kwargs)


def test_interventions_need_quadrants(losses):
    with pytest.raises(ValueError, match="no 'carto_quadrant' column; run add_cartography first"):
        apply_interventions(make_dataset(losses[:10]))


# --- summary ---------------------------------------------------------------------------------


def test_summary_counts_and_weight_totals(scored):
    fit = fit_cartography(scored, burn_in=2, eps=1.0, alpha_d=0.5, alpha_m=0.5)
    out = apply_interventions(scored)
    summary = cartography_summary(out, fit)
    q = np.asarray(out["carto_quadrant"][:])
    for quad in Quadrant:
        assert summary["quadrants"][quad.name.lower()]["count"] == int((q == quad).sum())
    assert sum(r["count"] for r in summary["quadrants"].values()) == len(out)
    lw = np.asarray(out["carto_loss_weight"][:], dtype=np.float64)
    assert summary["weights"]["loss_weight_total"] == pytest.approx(lw.sum())
    assert summary["weights"]["num_removed"] == int((q == Quadrant.NOISY_OUTLIER).sum())
    assert summary["settings"]["eps"] == 1.0
    text = format_summary(summary)
    assert "hotspot_memorized" in text and "tau_d=" in text and "removed=" in text
    json.dumps(summary)  # plain JSON types only


# --- bad input -------------------------------------------------------------------------------


def test_loss_columns_are_ordered_numerically():
    names = [f"carto_loss_{t}" for t in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9)] + ["text"]
    assert loss_columns(names) == [f"carto_loss_{t}" for t in range(1, 11)]


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        (["text"], "no 'carto_loss_"),
        (["carto_loss_1", "carto_loss_3"], r"missing snapshots \[2\]"),
        (["carto_loss_0", "carto_loss_1"], r"\['carto_loss_0'\]"),
    ],
)
def test_loss_column_problems_are_named(columns, match):
    with pytest.raises(ValueError, match=match):
        loss_columns(columns)


@pytest.mark.parametrize(
    "odd",
    ["carto_loss_07", "carto_loss_01", "carto_loss_0", "carto_loss_+1", "carto_loss_ 2", "carto_loss_\u0661"],
)
def test_non_canonical_loss_columns_are_refused_by_name(odd):
    # carto_loss_07 was read as snapshot 7, and carto_loss_01 silently replaced carto_loss_1.
    names = ["carto_loss_1", "carto_loss_2", odd, "carto_loss_weight", "text"]
    with pytest.raises(ValueError, match=re.escape(repr(odd))):
        loss_columns(names)
    ds = Dataset.from_dict({name: [1.0, 2.0] for name in names})
    with pytest.raises(ValueError, match=re.escape(repr(odd))):
        fit_cartography(ds, burn_in=1, eps=1.0)


def test_carto_loss_weight_is_not_a_loss_column():
    assert loss_columns(["carto_loss_weight", "carto_loss_2", "carto_loss_1"]) == ["carto_loss_1", "carto_loss_2"]


def test_fit_rejects_bad_datasets(losses):
    with pytest.raises(ValueError, match="empty"):
        fit_cartography(make_dataset(losses[:0]), burn_in=1, eps=1.0)
    with pytest.raises(ValueError, match="T >= 2"):
        fit_cartography(make_dataset(losses[:5, :1]), burn_in=1, eps=1.0)
    with pytest.raises(ValueError, match=r"burn_in must be in \[1, T - 1\]"):
        fit_cartography(make_dataset(losses[:5]), burn_in=6, eps=1.0)
    with pytest.raises(ValueError, match="alpha_m"):
        fit_cartography(make_dataset(losses[:5]), burn_in=1, eps=1.0, alpha_m=1.0)
    with pytest.raises(ValueError, match="unknown eps policy"):
        fit_cartography(make_dataset(losses[:5]), burn_in=1, eps="median")


def test_non_finite_losses_name_sample_ids_across_batches(losses):
    bad = losses[:100].copy()
    bad[[3, 50, 99], 2] = np.nan
    bad[60, 0] = np.inf
    ds = make_dataset(bad, ids_offset=5000)
    with pytest.raises(
        ValueError, match=r"4 of 100 rows have non-finite .* first sample_ids: \[5003, 5050, 5060, 5099\]"
    ):
        fit_cartography(ds, burn_in=2, eps=1.0, batch_size=32)
    no_ids = ds.remove_columns("sample_id")
    with pytest.raises(ValueError, match=r"first rows: \[3, 50, 60, 99\]"):
        fit_cartography(no_ids, burn_in=2, eps=1.0, batch_size=32)


def test_add_cartography_refuses_rows_a_given_fit_cannot_label(losses):
    # A NaN compares false with every threshold: the row used to be labelled stable_easy.
    fit = fit_cartography(make_dataset(losses[:300]), burn_in=2, eps=1.0)
    bad = losses[:300].copy()
    bad[[10, 250], 3] = np.nan
    bad[120, 5] = np.inf
    bad[[40, 290], 1] = -0.5
    ds = make_dataset(bad, ids_offset=7000)
    message = (
        r"3 of 300 rows have non-finite \(NaN or inf\) losses \(in carto_loss_4, carto_loss_6\); first sample_ids: "
        r"\[7010, 7120, 7250\]; 2 of 300 rows have negative losses \(in carto_loss_2\); first sample_ids: "
        r"\[7040, 7290\]\..*allow_nonfinite=True .* or allow_negative=True"
    )
    # Small batches: the rows are found in every batch (the last one included) and named by id.
    with pytest.raises(ValueError, match=message):
        add_cartography(ds, fit, batch_size=64)
    with pytest.raises(ValueError, match=message):
        fit_cartography(ds, burn_in=2, eps=1.0, batch_size=64)
    with pytest.raises(ValueError, match=message):
        add_cartography(ds, burn_in=2, eps=1.0, batch_size=64)
    # The fit applied directly as a map function refuses the batch too.
    with pytest.raises(ValueError, match="non-finite .* and 2 rows with negative losses"):
        ds.map(fit, batched=True, batch_size=300, input_columns=list(fit.loss_columns))


def test_negative_losses_only_when_allowed(losses):
    shifted = losses[:400] - 1.0  # some values negative, all finite
    ds = make_dataset(shifted)
    with pytest.raises(
        ValueError, match=r"377 of 400 rows have negative losses .* first sample_ids: \[1001, 1002, 1003, 1004, 1006\]"
    ):
        fit_cartography(ds, burn_in=2, eps=0.0, batch_size=100)
    fit = fit_cartography(ds, burn_in=2, eps=0.0, batch_size=100, allow_negative=True)
    assert fit.allow_negative and not fit.allow_nonfinite
    as_float = shifted.astype(np.float64)
    qa = assign_quadrants(difficulty(as_float, 2), memorization(as_float, 0.0), 0.75, 0.75)
    assert (fit.tau_d, fit.tau_m) == (qa.tau_d, qa.tau_m)
    scored = add_cartography(ds, fit, batch_size=100)
    np.testing.assert_array_equal(read_columns(scored, ["carto_quadrant"])["carto_quadrant"], qa.quadrants)
    assert CartographyFit.from_dict(json.loads(json.dumps(fit.to_dict()))) == fit


def test_non_finite_losses_only_when_allowed(losses):
    bad = losses[:500].copy()
    bad[[5, 77, 400], 2] = np.nan
    ds = make_dataset(bad)
    fit = add_cartography(ds, burn_in=2, eps="quantile:0.2", batch_size=128, allow_nonfinite=True)
    finite = np.ones(500, dtype=bool)
    finite[[5, 77, 400]] = False
    clean = fit_cartography(make_dataset(bad[finite]), burn_in=2, eps="quantile:0.2")
    settings = json.loads(
        json.dumps(fit_cartography(ds, burn_in=2, eps="quantile:0.2", allow_nonfinite=True).to_dict())
    )
    # eps and the thresholds come from the finite rows only.
    assert (settings["eps"], settings["tau_d"], settings["tau_m"]) == (clean.eps, clean.tau_d, clean.tau_m)
    assert settings["allow_nonfinite"] is True
    assert len(fit) == 500


def test_loss_columns_that_are_not_numbers_are_named():
    ds = Dataset.from_dict({"carto_loss_1": ["1.0", "2"], "carto_loss_2": [[2.0], [3.0]], "sample_id": [0, 1]})
    with pytest.raises(
        ValueError, match=r"2 of 2 do not, in all 2 rows: carto_loss_1 \(Value\('string'\)\), carto_loss_2"
    ):
        fit_cartography(ds, burn_in=1, eps=1.0)


def test_fit_from_a_file_names_missing_keys_and_reads_older_fits(losses):
    data = fit_cartography(make_dataset(losses[:100]), burn_in=2, eps=1.0).to_dict()
    older = {k: v for k, v in data.items() if not k.startswith("allow_")}  # written before the options
    assert CartographyFit.from_dict(older).allow_nonfinite is False
    with pytest.raises(ValueError, match=r"lacks \['tau_d'\]"):
        CartographyFit.from_dict({k: v for k, v in data.items() if k != "tau_d"})
    with pytest.raises(ValueError, match=r"wrong type for \['eps'\]"):
        CartographyFit.from_dict({**data, "eps": "1.0"})


# --- files -----------------------------------------------------------------------------------


def test_save_and_load_scored(tmp_path, scored):
    fit = fit_cartography(scored, burn_in=2, eps=1.0, alpha_d=0.5, alpha_m=0.5)
    target = save_scored(scored, tmp_path / "out", fit=fit, summary=cartography_summary(scored, fit))
    loaded, loaded_fit = load_scored(target)
    assert loaded_fit == fit
    assert loaded.features == scored.features
    assert loaded["carto_quadrant"][:] == scored["carto_quadrant"][:]
    with pytest.raises(FileExistsError, match="already exists"):
        save_scored(scored, target)
    save_scored(scored.select(range(10)), target, overwrite=True)
    assert len(load_table(target)) == 10
    assert not (target / FIT_FILE).exists()  # the replaced folder is gone whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_save_leaves_nothing_behind(tmp_path, scored, monkeypatch):
    def explode(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "save_to_disk", explode)
    with pytest.raises(OSError, match="disk full"):
        save_scored(scored, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_load_table_reads_parquet_and_names_bad_paths(tmp_path, losses):
    ds = make_dataset(losses[:50])
    ds.to_parquet(str(tmp_path / "losses.parquet"))
    assert load_table(tmp_path / "losses.parquet")["sample_id"][:] == ds["sample_id"][:]
    assert len(load_table(tmp_path)) == 50  # a folder of parquet files
    with pytest.raises(FileNotFoundError, match="nope"):
        load_table(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a save_to_disk folder"):
        load_table(tmp_path / "empty")


def test_scoring_an_on_disk_dataset_writes_only_the_three_new_columns(tmp_path, losses):
    """A dataset with text and token ids is not copied to add three numbers a row; the format stays."""
    import pyarrow as pa

    make_dataset(losses).save_to_disk(str(tmp_path / "ds"))
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "ds")).with_format("numpy")
    scored = add_cartography(ds, burn_in=2, eps=1.0)
    written = [f["filename"] for f in scored.cache_files if "data-" not in f["filename"]]
    assert len(written) == 1
    with pa.memory_map(written[0]) as source:
        assert pa.ipc.open_stream(source).schema.names == ["carto_difficulty", "carto_memorization", "carto_quadrant"]
    assert scored.format["type"] == "numpy"
    reference = make_dataset(losses).map(
        fit_cartography(make_dataset(losses), burn_in=2, eps=1.0),
        batched=True,
        input_columns=[f"carto_loss_{t + 1}" for t in range(losses.shape[1])],
    )
    for name in ("carto_difficulty", "carto_memorization", "carto_quadrant", "text", "sample_id"):
        assert scored.with_format(None)[name][:] == reference[name][:], name
    again = add_cartography(scored.with_format(None), burn_in=2, eps="quantile:0.5")  # re-scored: replaced
    assert again.column_names.count("carto_quadrant") == 1


@pytest.mark.parametrize("kind", ["numpy", None])
def test_scoring_keeps_a_restricted_format_as_map_does(losses, kind):
    ds = make_dataset(losses).with_format(kind, columns=["sample_id", "carto_loss_1"])
    fit = fit_cartography(ds, burn_in=2, eps=1.0)
    scored = add_cartography(ds, fit)
    by_map = ds.map(fit, batched=True, input_columns=list(fit.loss_columns))  # what datasets itself keeps
    assert scored.format["type"] == by_map.format["type"] == kind
    assert sorted(scored.format["columns"]) == sorted(by_map.format["columns"])
    assert sorted(scored[0]) == sorted(by_map[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_column_scores_equal_the_matrix_arithmetic_to_the_bit(dtype):
    """The fit and the map score a batch from its columns; the values are those of the float64
    matrix formulas (mean of the burn-in slice, forget events of the matrix), bit for bit, whatever the
    column type, with exponents spread wide and eps between two float32 values."""
    from hf_carto.core.kernel import burn_in_difficulty, forget_count_dtype, forget_event_counts

    rng = np.random.default_rng(5)
    for snapshots in (2, 3, 9, 12):
        if dtype is np.int64:  # large integers round when made float64
            values = rng.integers(0, 2**62, size=(500, snapshots)) >> rng.integers(0, 62, size=(500, snapshots))
        else:
            scale = 10.0 ** rng.integers(-30, 30, size=(500, snapshots))
            values = np.abs(rng.standard_normal((500, snapshots)) * scale).astype(dtype)
        values[:20] = np.float32(4.7055)  # ties with eps once rounded to float32
        columns = [values[:, t].copy() for t in range(snapshots)]
        matrix = values.astype(np.float64)
        for burn_in in range(1, snapshots):
            want = matrix[:, :burn_in].mean(axis=1)
            assert burn_in_difficulty(columns, burn_in).tobytes() == want.tobytes()
        for eps in (4.7055, float(np.float32(4.7055)), 1e-20, 3.0):
            counts = forget_event_counts(columns, eps, dtype=forget_count_dtype(snapshots))
            np.testing.assert_array_equal(counts, forget_event_counts(matrix, eps))


def test_a_direct_map_over_python_lists_reads_none_as_a_non_finite_loss():
    """``dataset.map(fit, batched=True, input_columns=...)`` in the default Python format: a None
    (a null) is a non-finite loss, refused by name, or scored as NaN when the fit allows it."""
    columns = {
        "carto_loss_1": [1.0, None, 2.0, 0.1],
        "carto_loss_2": [0.1, 3.0, None, 2.0],
        "carto_loss_3": [2.0, 0.1, 1.0, 0.1],
    }
    names = list(columns)
    dataset = Dataset.from_dict(columns)
    fit = fit_cartography(dataset, burn_in=1, eps=0.5, allow_nonfinite=True)
    mapped = dataset.map(fit, batched=True, input_columns=names)
    d = np.asarray(mapped["carto_difficulty"], dtype=np.float64)
    assert np.isnan(d[1]) and d[[0, 2, 3]].tolist() == [1.0, 2.0, 0.1]
    assert mapped["carto_memorization"] == [0.5, 0.0, 0.0, 0.5]
    strict = dataclasses.replace(fit, allow_nonfinite=False)
    with pytest.raises(ValueError, match=r"a batch of 4 rows has 2 rows with non-finite \(NaN or inf\) losses"):
        dataset.map(strict, batched=True, input_columns=names)


def test_a_quantile_eps_on_float64_columns_is_resolved_in_float64():
    losses = np.array([[0.1, 0.7], [0.7, 0.7]])
    ds = Dataset.from_dict({"carto_loss_1": losses[:, 0], "carto_loss_2": losses[:, 1]})
    assert ds.features["carto_loss_1"].dtype == "float64"
    fit = fit_cartography(ds, burn_in=1, eps="quantile:0.5")
    assert fit.eps == resolve_eps(losses, "quantile:0.5") == 0.7  # not float32's 0.699999988
    scored = add_cartography(ds, burn_in=1, eps="quantile:0.5")
    assert read_columns(scored, ["carto_memorization"])["carto_memorization"].tolist() == [0.0, 0.0]


def test_a_quantile_eps_on_float32_columns_stays_float32_interpolation():
    rng = np.random.default_rng(5)
    losses = rng.gamma(2.0, 1.0, size=(777, 4)).astype(np.float32)
    fit = fit_cartography(make_dataset(losses), burn_in=1, eps="quantile:0.37")
    assert fit.eps == float(np.quantile(losses, 0.37))  # numpy on the float32 matrix, to the bit


def test_mixed_and_integer_loss_columns_resolve_a_quantile_in_float64():
    ds = Dataset.from_dict(
        {"carto_loss_1": np.array([1, 3, 4, 9], dtype=np.int64), "carto_loss_2": np.array([0.3, 0.6, 0.7, 0.7])}
    )
    matrix = np.stack([ds["carto_loss_1"][:], ds["carto_loss_2"][:]], axis=1).astype(np.float64)
    for q in (0.1, 0.45, 0.5, 0.9):
        assert fit_cartography(ds, burn_in=1, eps=f"quantile:{q}").eps == float(np.quantile(matrix, q))


def test_the_fit_counts_rows_never_below_eps_like_the_mask():
    from hf_carto.score.scores import never_learned

    rng = np.random.default_rng(8)
    losses = rng.choice([0.3, 0.6, 1.2, 2.5, 4.0], size=(2000, 5)).astype(np.float32)
    fit = fit_cartography(make_dataset(losses), burn_in=2, eps=1.2, batch_size=333)
    naive = sum(all(float(v) >= 1.2 for v in row) for row in losses)
    assert fit.num_never_learned == naive == int(never_learned(losses, 1.2).sum()) > 0
    again = CartographyFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again.num_never_learned == naive
    assert f"never below eps={naive}" in format_summary(
        cartography_summary(add_cartography(make_dataset(losses), fit), fit)
    )
    runs = [make_dataset(losses), make_dataset(losses[::-1].copy())]
    combined = fit_cartography(runs, burn_in=2, eps=1.2)
    both = never_learned(losses, 1.2) & never_learned(losses[::-1], 1.2)
    assert combined.num_never_learned == int(both.sum())


def test_a_summary_of_zero_rows_formats():
    empty = Dataset.from_dict(
        {
            "carto_difficulty": np.zeros(0),
            "carto_memorization": np.zeros(0),
            "carto_quadrant": np.zeros(0, dtype=np.int64),
        }
    )
    text = format_summary(cartography_summary(empty))
    assert "samples=0" in text and "max m=-" in text


def test_scored_datasets_save_and_load_with_their_fit_from_the_top_level(tmp_path, losses):
    import hf_carto

    ds = make_dataset(losses[:200])
    fit = hf_carto.fit_cartography(ds, burn_in=2, eps="quantile:0.2")
    scored = hf_carto.add_cartography(ds, fit)
    hf_carto.save_scored(scored, tmp_path / "with_fit", fit=fit)
    again, again_fit = hf_carto.load_scored(tmp_path / "with_fit")
    assert again_fit == fit and again.num_rows == 200
    scored.save_to_disk(str(tmp_path / "plain"))  # scored in Python, saved without its fit
    with pytest.warns(UserWarning, match=r"holds scores but no cartography.json.*hf_carto.save_scored"):
        _, missing = hf_carto.load_scored(tmp_path / "plain")
    assert missing is None
    assert "ensure_sample_ids" in hf_carto.__all__ and hf_carto.ensure_sample_ids(ds) is ds
