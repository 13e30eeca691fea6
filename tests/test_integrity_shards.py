"""Recorded shards are checked when merged: a changed byte stops the merge, it never changes a loss."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from hf_carto.commands.main import main
from hf_carto.record.merge import load_loss_matrix
from hf_carto.record.recorder import LossRecorder
from hf_carto.record.shards import read_records
from hf_carto.record.store import LossStore

N = 64


def record_run(out, snapshots=3, world_size=1):
    """A train-mode recording through the recorder itself; returns the losses it recorded per snapshot."""
    rng = np.random.default_rng(0)
    recorder = LossRecorder(out, mode="train", num_samples=N, progress=False)
    recorder.start()
    recorded = {}
    for t in range(1, snapshots + 1):
        losses = (rng.random(N) * 4).astype(np.float32)
        recorder.record(np.arange(N), losses, np.full(N, 8), step=t)
        recorder.end_snapshot(t, step=t, epoch=float(t))
        recorded[t] = losses
    return recorded


def last_byte_of_the_losses(shard):
    """Offset of the last byte of the loss column's pages (its values, not a header)."""
    chunk = pq.ParquetFile(shard).metadata.row_group(0).column(1)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    return start + chunk.total_compressed_size - 1


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_manifest_records_each_shards_sha256(tmp_path):
    record_run(tmp_path)
    info = LossStore(tmp_path).completed()[2]
    shard = LossStore(tmp_path).shard_path(2, 0)
    assert info["shards"]["0"]["bytes"] == shard.stat().st_size
    assert len(info["shards"]["0"]["sha256"]) == 64
    assert pq.ParquetFile(shard).metadata.row_group(0).column(1).total_compressed_size > 0


def test_a_flipped_byte_anywhere_in_a_shard_stops_the_merge(tmp_path):
    recorded = record_run(tmp_path)
    expected = np.stack([recorded[t] for t in (1, 2, 3)], axis=1)
    np.testing.assert_array_equal(load_loss_matrix(tmp_path).losses, expected)
    shard = LossStore(tmp_path).shard_path(2, 0)
    original = shard.read_bytes()
    # Every byte: the magic, page headers, the data pages of every column, the footer. Before
    # checksums, flips in the footer's statistics or in the unchecked data pages changed losses.
    for offset in range(len(original)):
        flip(shard, offset)
        with pytest.raises(ValueError) as caught:
            load_loss_matrix(tmp_path)
        message = str(caught.value)
        assert str(shard) in message and "snapshot 2, rank 0" in message, (offset, message)
        shard.write_bytes(original)
    np.testing.assert_array_equal(load_loss_matrix(tmp_path).losses, expected)


def test_the_command_line_names_the_corrupted_shard(tmp_path, capsys):
    record_run(tmp_path)
    shard = LossStore(tmp_path).shard_path(3, 0)
    flip(shard, last_byte_of_the_losses(shard))
    assert main(["merge", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert str(shard) in line and "snapshot 3, rank 0" in line and "corrupted" in line
    assert not (tmp_path / "carto" / "losses.parquet").exists()


def test_page_checksums_catch_a_flipped_loss_without_the_manifest(tmp_path):
    record_run(tmp_path, snapshots=1)
    shard = LossStore(tmp_path).shard_path(1, 0)
    flip(shard, last_byte_of_the_losses(shard))
    with pytest.raises(ValueError, match="is not a readable loss shard") as caught:
        read_records(shard)  # partial shards are read this way: no manifest entry, page checksums only
    assert str(shard) in str(caught.value)


def test_recordings_from_before_checksums_still_merge_unverified(tmp_path):
    recorded = record_run(tmp_path)
    store = LossStore(tmp_path)
    manifest = json.loads(store.manifest_path.read_text())
    for info in manifest["snapshots"].values():
        del info["shards"]
    store.manifest_path.write_text(json.dumps(manifest))
    assert store.shard_checksums(1) is None
    matrix = load_loss_matrix(tmp_path)
    np.testing.assert_array_equal(matrix.losses, np.stack([recorded[t] for t in (1, 2, 3)], axis=1))


def test_a_shard_written_after_its_snapshot_was_completed_is_refused(tmp_path):
    store = LossStore(tmp_path)
    from hf_carto.record.store import RecordingSettings

    store.create_or_check(RecordingSettings(mode="eval", world_size=2, num_samples=4))
    ids = np.arange(4)
    store.write_shard(1, 0, {"sample_id": ids[:2], "loss": [1.0, 2.0], "n_tokens": [3, 3], "step": [1, 1]})
    store.mark_complete(1, 1, 1.0)  # rank 1 had not written yet
    store.write_shard(1, 1, {"sample_id": ids[2:], "loss": [3.0, 4.0], "n_tokens": [3, 3], "step": [1, 1]})
    with pytest.raises(ValueError, match=r"rank=1\.parquet \(snapshot 1, rank 1\): .* shards for ranks \[0\] only"):
        load_loss_matrix(tmp_path)
