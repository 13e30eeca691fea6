"""Merging shards: exact placement by sample_id, and every kind of bad recording named precisely."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from hf_carto.record.merge import add_loss_columns, load_loss_matrix, merged_snapshot
from hf_carto.record.store import LossStore, RecordingSettings


def records(ids, losses, step=0, n_tokens=10):
    ids = np.asarray(ids)
    return {
        "sample_id": ids,
        "loss": np.asarray(losses, dtype=np.float32),
        "n_tokens": np.full(ids.shape, n_tokens),
        "step": np.full(ids.shape, step),
    }


def write_run(out, shards_by_snapshot, mode="eval", world_size=2, num_samples=None, complete=None):
    """shards_by_snapshot: {t: {rank: records}}; complete: snapshots to mark (default all)."""
    store = LossStore(out)
    store.create_or_check(RecordingSettings(mode=mode, world_size=world_size, num_samples=num_samples))
    for t, by_rank in shards_by_snapshot.items():
        for rank, recs in by_rank.items():
            store.write_shard(t, rank, recs)
    for t in complete if complete is not None else shards_by_snapshot:
        store.mark_complete(t, step=10 * t, epoch=float(t))
    return store


def naive_merge(shards_by_snapshot, ids):
    """A dict-based reference: first copy wins (all copies agree in these fixtures)."""
    out = np.full((len(ids), len(shards_by_snapshot)), np.nan, dtype=np.float32)
    for col, t in enumerate(sorted(shards_by_snapshot)):
        seen = {}
        for rank in sorted(shards_by_snapshot[t]):
            r = shards_by_snapshot[t][rank]
            for sid, loss in zip(r["sample_id"], r["loss"], strict=True):
                seen.setdefault(int(sid), loss)
        for row, sid in enumerate(ids):
            out[row, col] = seen[int(sid)]
    return out


def random_run(rng, n=50, t=3, world_size=2):
    """Shards as a distributed sampler writes them: interleaved ranks and padding duplicates."""
    ids = rng.permutation(np.arange(1000, 1000 + n))
    shards = {}
    for snap in range(1, t + 1):
        losses = rng.random(n).astype(np.float32) * 5
        loss_of = dict(zip(ids.tolist(), losses.tolist(), strict=True))
        padded = np.concatenate([ids, ids[: (-n) % (world_size * 4)]])
        shards[snap] = {
            rank: records(padded[rank::world_size], [loss_of[int(i)] for i in padded[rank::world_size]], step=snap)
            for rank in range(world_size)
        }
    return ids, shards


def test_merge_matches_a_naive_dictionary_merge(tmp_path):
    rng = np.random.default_rng(0)
    ids, shards = random_run(rng)
    write_run(tmp_path, shards)
    wanted = np.sort(ids)
    matrix = load_loss_matrix(tmp_path, wanted)
    np.testing.assert_array_equal(matrix.losses, naive_merge(shards, wanted))
    assert matrix.losses.dtype == np.float32 and matrix.losses.shape == (50, 3)
    # Any requested order is honoured.
    shuffled = rng.permutation(wanted)
    np.testing.assert_array_equal(load_loss_matrix(tmp_path, shuffled).losses, naive_merge(shards, shuffled))


def test_train_mode_keeps_the_earliest_copy(tmp_path):
    write_run(
        tmp_path,
        {
            1: {0: records([1, 2], [0.5, 0.6], step=3), 1: records([1], [9.0], step=1)},
            2: {0: records([1, 2], [0.4, 0.3], step=5), 1: records([2], [7.0], step=6)},
        },
        mode="train",
    )
    matrix = load_loss_matrix(tmp_path, np.array([1, 2]))
    np.testing.assert_array_equal(matrix.losses, np.float32([[9.0, 0.4], [0.6, 0.3]]))


def test_eval_mode_duplicates_that_disagree_are_refused(tmp_path):
    write_run(tmp_path, {1: {0: records([1, 2, 3], [1.0, 2.0, 3.0]), 1: records([1, 2], [1.0 + 1e-6, 2.5])}})
    with pytest.raises(ValueError, match=r"snapshot 1: 1 sample_ids were recorded more than once .* \[2\]"):
        load_loss_matrix(tmp_path, np.array([1, 2, 3]))


def test_missing_rank_and_foreign_world_size(tmp_path):
    store = write_run(tmp_path / "a", {1: {0: records([1], [1.0])}})
    with pytest.raises(ValueError, match=r"snapshot=1: missing shards for ranks \[1\]"):
        load_loss_matrix(tmp_path / "a", np.array([1]))
    store = write_run(tmp_path / "b", {1: {0: records([1], [1.0]), 1: records([2], [1.0]), 3: records([3], [1.0])}})
    with pytest.raises(ValueError, match=r"shards for ranks \[3\] that a world size of 2 cannot have"):
        merged_snapshot(store, 1, store.settings())


def test_missing_snapshot_and_stray_folder(tmp_path, caplog):
    one = {0: records([1, 2], [1.0, 1.0]), 1: records([3], [1.0])}
    write_run(tmp_path, {1: one, 2: one, 3: one}, complete=[1, 3])
    with pytest.raises(ValueError, match=r"snapshots \[2\] are missing \(1 of 3\)"):
        load_loss_matrix(tmp_path, np.array([1, 2, 3]))
    write_run(tmp_path / "stray", {1: one, 2: one}, complete=[1])
    with caplog.at_level(logging.WARNING):
        matrix = load_loss_matrix(tmp_path / "stray", np.array([1, 2, 3]))
    assert matrix.losses.shape == (3, 1)
    assert "never marked complete" in caplog.text


def test_missing_and_unknown_samples(tmp_path):
    write_run(tmp_path, {1: {0: records([1, 2], [1.0, 1.0]), 1: records([4], [1.0])}})
    with pytest.raises(
        ValueError, match=r"snapshot 1: 2 of 5 samples have no recorded loss; first sample_ids: \[3, 5\]"
    ):
        load_loss_matrix(tmp_path, np.array([1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match=r"snapshot 1: 1 recorded sample_ids are not in the dataset; first: \[4\]"):
        load_loss_matrix(tmp_path, np.array([1, 2]))


def test_non_finite_losses_are_reported_with_ids_and_snapshots(tmp_path):
    write_run(
        tmp_path,
        {
            1: {0: records([1, 2], [np.nan, 1.0]), 1: records([3], [1.0])},
            2: {0: records([1, 2], [1.0, 1.0]), 1: records([3], [np.inf])},
        },
    )
    with pytest.raises(
        ValueError,
        match=r"2 recorded losses are NaN or infinite \(first: sample_id 1 at snapshot 1, "
        r"sample_id 3 at snapshot 2\)",
    ):
        load_loss_matrix(tmp_path, np.array([1, 2, 3]))
    matrix = load_loss_matrix(tmp_path, np.array([1, 2, 3]), allow_nonfinite=True)
    assert np.isnan(matrix.losses[0, 0]) and np.isinf(matrix.losses[2, 1])


def test_defaults_for_expected_ids(tmp_path):
    write_run(tmp_path, {1: {0: records([0, 1], [1.0, 2.0]), 1: records([2], [3.0])}}, num_samples=4)
    with pytest.raises(ValueError, match=r"1 of 4 samples have no recorded loss; first sample_ids: \[3\]"):
        load_loss_matrix(tmp_path)


def test_add_loss_columns_needs_sample_ids_and_rejects_duplicates(tmp_path):
    write_run(tmp_path, {1: {0: records([1, 2], [1.0, 2.0]), 1: records([3], [3.0])}})
    with pytest.raises(ValueError, match="no 'sample_id' column"):
        add_loss_columns(Dataset.from_dict({"x": [1, 2, 3]}), tmp_path)
    with pytest.raises(ValueError, match=r"1 duplicated sample_ids; first: \[2\]"):
        add_loss_columns(Dataset.from_dict({"sample_id": [1, 2, 2]}), tmp_path, progress=False)
    ds = Dataset.from_dict({"sample_id": [3, 1, 2], "carto_loss_9": [0.0, 0.0, 0.0]})
    merged = add_loss_columns(ds, tmp_path, progress=False)
    assert merged.column_names == ["sample_id", "carto_loss_1"]  # stale loss columns replaced
    assert merged["carto_loss_1"][:] == [3.0, 1.0, 2.0]
    # A curated dataset's weight column shares the prefix but is not a snapshot: it stays.
    weighted = Dataset.from_dict(
        {"sample_id": [1, 2, 3], "carto_loss_weight": [0.5, 1.0, 0.0], "carto_loss_1": [9.0] * 3}
    )
    merged = add_loss_columns(weighted, tmp_path, progress=False)
    assert merged.column_names == ["sample_id", "carto_loss_weight", "carto_loss_1"]
    assert merged["carto_loss_weight"][:] == [0.5, 1.0, 0.0] and merged["carto_loss_1"][:] == [1.0, 2.0, 3.0]


def test_shards_are_written_atomically(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    store = write_run(tmp_path, {})

    def broken(table, where, **kwargs):
        with open(where, "wb") as handle:
            handle.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        store.write_shard(1, 0, records([1], [1.0]))
    assert store.shards(1) == {}
    assert not list(tmp_path.rglob("*.tmp"))


def naive_kept(shards_by_snapshot, ids):
    """Per snapshot, the record the merge keeps, found by brute force: the smallest step, then the
    lowest rank, then the first in its file."""
    out = np.full((len(ids), len(shards_by_snapshot)), np.nan, dtype=np.float32)
    for col, t in enumerate(sorted(shards_by_snapshot)):
        best = {}
        for rank, r in shards_by_snapshot[t].items():
            for position, (sid, loss, step) in enumerate(zip(r["sample_id"], r["loss"], r["step"], strict=True)):
                key = (int(step), rank, position)
                if int(sid) not in best or key < best[int(sid)][0]:
                    best[int(sid)] = (key, loss)
        for row, sid in enumerate(ids):
            out[row, col] = best[int(sid)][1]
    return out


@pytest.mark.parametrize("gaps", [False, True], ids=["consecutive ids", "ids with gaps"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_merging_a_few_records_at_a_time_keeps_what_the_whole_snapshot_merge_keeps(tmp_path, mode, gaps):
    """Shards larger than the read batch, copies inside one batch, across batches and across ranks:
    the streamed merge equals brute force and the whole-snapshot merge (merged_snapshot)."""
    rng = np.random.default_rng(7)
    n, world = 60, 3
    ids = rng.permutation(np.arange(500, 500 + n) * (7 if gaps else 1))
    shards = {}
    for t in (1, 2):
        base = dict(zip(ids.tolist(), (rng.random(n) * 4).astype(np.float32).tolist(), strict=True))
        by_rank = {}
        for rank in range(world):
            mine = np.concatenate([ids[rank::world], rng.choice(ids, size=15)])  # every id once, plus copies
            rng.shuffle(mine)
            losses = [base[int(i)] if mode == "eval" else float(rng.random() * 4) for i in mine]
            steps = rng.integers(0, 4, size=mine.size)
            by_rank[rank] = {**records(mine, losses), "step": steps}
        shards[t] = by_rank
    store = write_run(tmp_path, shards, mode=mode, world_size=world)
    wanted = rng.permutation(ids)
    streamed = load_loss_matrix(tmp_path, wanted, batch_rows=4)
    np.testing.assert_array_equal(streamed.losses, naive_kept(shards, wanted))
    for col, t in enumerate((1, 2)):
        whole = merged_snapshot(store, t, store.settings())
        by_id = dict(zip(whole["sample_id"].tolist(), whole["loss"].tolist(), strict=True))
        np.testing.assert_array_equal(streamed.losses[:, col], np.float32([by_id[int(i)] for i in wanted]))
    np.testing.assert_array_equal(load_loss_matrix(tmp_path, wanted).losses, streamed.losses)


def test_errors_are_the_same_when_records_are_read_one_at_a_time(tmp_path):
    write_run(tmp_path / "c", {1: {0: records([1, 2, 3], [1.0, 2.0, 3.0]), 1: records([2, 1], [2.5, 1.0 + 1e-6])}})
    with pytest.raises(ValueError, match=r"snapshot 1: 1 sample_ids were recorded more than once .* \[2\]"):
        load_loss_matrix(tmp_path / "c", np.array([1, 2, 3]), batch_rows=1)
    write_run(tmp_path / "u", {1: {0: records([9, 1, 7, 2], [1.0] * 4), 1: records([8, 3], [1.0] * 2)}})
    with pytest.raises(
        ValueError, match=r"snapshot 1: 3 recorded sample_ids are not in the dataset; first: \[7, 8, 9\]"
    ):
        load_loss_matrix(tmp_path / "u", np.array([1, 2, 3, 4]), batch_rows=1)
    write_run(tmp_path / "m", {1: {0: records([1, 2], [1.0] * 2), 1: records([5], [1.0])}})
    with pytest.raises(
        ValueError, match=r"snapshot 1: 2 of 5 samples have no recorded loss; first sample_ids: \[3, 4\]"
    ):
        load_loss_matrix(tmp_path / "m", np.arange(1, 6), batch_rows=1)


def test_columns_of_an_on_disk_dataset_are_written_in_row_batches_and_memory_mapped(tmp_path):
    """A dataset loaded from disk gets its loss columns in an Arrow file of their own, written a few
    rows at a time (a case larger than the batch), equal to the in-memory merge, also after a
    shuffle; the dataset's folder keeps its own files."""
    from datasets import load_from_disk

    rng = np.random.default_rng(3)
    ids, shards = random_run(rng, n=45, t=4, world_size=3)
    write_run(tmp_path / "run", shards, world_size=3)
    rows = rng.permutation(ids)
    Dataset.from_dict({"sample_id": rows, "text": [f"row {i}" for i in rows]}).save_to_disk(tmp_path / "ds")
    on_disk = load_from_disk(str(tmp_path / "ds"))
    merged = add_loss_columns(on_disk, tmp_path / "run", progress=False, batch_rows=7)
    files = [Path(f["filename"]).name for f in merged.cache_files]
    assert any(name.startswith("cache-carto-losses-") and name.endswith(".arrow") for name in files)
    assert merged.column_names == ["sample_id", "text", "carto_loss_1", "carto_loss_2", "carto_loss_3", "carto_loss_4"]
    in_memory = add_loss_columns(Dataset.from_dict(on_disk.to_dict()), tmp_path / "run", progress=False)
    assert merged.to_dict() == in_memory.to_dict()
    expected = naive_merge(shards, rows)
    got = np.stack([np.asarray(merged[f"carto_loss_{t}"]) for t in range(1, 5)], axis=1)
    np.testing.assert_array_equal(got, expected)
    # A shuffled view (an indices mapping) is put in order first; the values follow their ids.
    shuffled = on_disk.shuffle(seed=1)
    again = add_loss_columns(shuffled, tmp_path / "run", progress=False, batch_rows=5)
    by_id = dict(zip(rows.tolist(), expected[:, 2].tolist(), strict=True))
    assert np.asarray(again["carto_loss_3"]).tolist() == [np.float32(by_id[i]) for i in again["sample_id"]]
    # Merging again replaces the loss columns rather than adding a second set.
    twice = add_loss_columns(merged, tmp_path / "run", progress=False, batch_rows=7)
    assert twice.column_names == merged.column_names and twice.to_dict() == merged.to_dict()
    assert not [p for p in (tmp_path / "ds").iterdir() if p.name.endswith(".tmp")]


def test_errors_name_the_ids_when_the_expected_ids_have_gaps(tmp_path):
    write_run(tmp_path / "m", {1: {0: records([1, 20], [1.0] * 2), 1: records([50], [1.0])}})
    with pytest.raises(
        ValueError, match=r"snapshot 1: 2 of 5 samples have no recorded loss; first sample_ids: \[3, 9\]"
    ):
        load_loss_matrix(tmp_path / "m", np.array([9, 1, 50, 20, 3]), batch_rows=1)
    with pytest.raises(
        ValueError, match=r"snapshot 1: 2 recorded sample_ids are not in the dataset; first: \[1, 50\]"
    ):
        load_loss_matrix(tmp_path / "m", np.array([20, 3, 9]), batch_rows=1)


def test_eval_copies_are_checked_largest_against_smallest_and_unknown_ids_counted_once(tmp_path):
    """Three copies each within the tolerance of the kept one but not of each other are refused,
    as the whole-snapshot merge refuses them; an unknown id recorded three times counts once."""
    tol = 1e-4 + 1e-4 * 1.0
    write_run(
        tmp_path / "spread",
        {1: {0: records([1, 2], [1.0, 2.0]), 1: records([1, 1, 2], [1.0 + 0.9 * tol, 1.0 - 0.9 * tol, 2.0])}},
    )
    store = LossStore(tmp_path / "spread")
    for batch_rows in (1, 2, 100):
        with pytest.raises(ValueError, match=r"snapshot 1: 1 sample_ids were recorded more than once .* \[1\]"):
            load_loss_matrix(tmp_path / "spread", np.array([1, 2]), batch_rows=batch_rows)
    with pytest.raises(ValueError, match=r"1 sample_ids were recorded more than once"):
        merged_snapshot(store, 1, store.settings())
    write_run(tmp_path / "unknown", {1: {0: records([1, 9, 9], [1.0] * 3), 1: records([9, 2], [1.0] * 2)}})
    for batch_rows in (1, 100):
        with pytest.raises(ValueError, match=r"1 recorded sample_ids are not in the dataset; first: \[9\]"):
            load_loss_matrix(tmp_path / "unknown", np.array([1, 2]), batch_rows=batch_rows)
