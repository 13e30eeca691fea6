"""Two processes under a real `accelerate launch` (gloo on CPU) record the same matrix as one.

On a machine without GPUs, `accelerate launch --multi_gpu --num_processes 2` starts two CPU
processes with the gloo backend; `--cpu --num_processes 2` starts only one unless MPI is set up.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hf_carto.record.merge import load_loss_matrix
from hf_carto.record.store import LossStore

SCRIPT = Path(__file__).parent / "launch" / "record_tiny.py"
sys.path.insert(0, str(SCRIPT.parent))
import record_tiny  # noqa: E402
from launching import accelerate_launch, accelerate_launch_nodes  # noqa: E402

pytestmark = pytest.mark.slow


def launch_two(out: Path, *args: str) -> None:
    accelerate_launch(SCRIPT, str(out), *args, timeout=300, cleanup=lambda: shutil.rmtree(out, ignore_errors=True))
    assert LossStore(out).settings().world_size == 2


def run_one(out: Path, *args: str) -> None:
    record_tiny.main([str(out), *args])
    assert LossStore(out).settings().world_size == 1


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_training_on_two_processes_records_the_one_process_matrix(tmp_path, mode):
    """Same global batch (2 x 4 vs 1 x 8), same data order, real updates: same checkpoints."""
    common = ["--mode", mode, "--num-samples", "40", "--lr", "0.01", "--epochs", "3"]
    run_one(tmp_path / "one", *common, "--batch-size", "8")
    launch_two(tmp_path / "two", *common, "--batch-size", "4")
    ids = np.arange(100, 140)
    one, two = load_loss_matrix(tmp_path / "one", ids), load_loss_matrix(tmp_path / "two", ids)
    assert one.losses.shape == (40, 3)
    assert one.losses[:, -1].mean() < one.losses[:, 0].mean()  # the weights did move
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_callback_on_the_stock_trainer_on_two_processes_records_the_one_process_matrix(tmp_path, mode):
    """CartographyCallback + compute_loss_func on the stock Trainer under `accelerate launch` with 2
    processes: the matrix RecordingTrainer records in one process, with real updates."""
    common = ["--mode", mode, "--num-samples", "40", "--lr", "0.01", "--epochs", "3"]
    run_one(tmp_path / "one", *common, "--batch-size", "8")
    launch_two(tmp_path / "two", *common, "--batch-size", "4", "--loop", "callback")
    ids = np.arange(100, 140)
    one, two = load_loss_matrix(tmp_path / "one", ids), load_loss_matrix(tmp_path / "two", ids)
    assert one.losses.shape == two.losses.shape == (40, 3)
    assert one.losses[:, -1].mean() < one.losses[:, 0].mean()  # the weights did move
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5, atol=1e-5)


def test_training_and_eval_snapshots_under_torch_fsdp_record_the_unsharded_matrix(tmp_path):
    """torch's FSDP2 (fully_shard, gloo on CPU): every GPT-2 block and the model sharded across
    two processes, trained with real updates, snapshotted in eval mode while sharded; the matrix
    equals one unsharded process's (same global batch)."""
    common = ["--mode", "eval", "--loop", "accelerate", "--num-samples", "40", "--lr", "0.05", "--epochs", "3"]
    run_one(tmp_path / "one", *common, "--batch-size", "8")
    launch_two(tmp_path / "fsdp", *common, "--batch-size", "4", "--fsdp")
    ids = np.arange(100, 140)
    one, fsdp = load_loss_matrix(tmp_path / "one", ids), load_loss_matrix(tmp_path / "fsdp", ids)
    assert one.losses.shape == fsdp.losses.shape == (40, 3)
    assert one.losses[:, -1].mean() < one.losses[:, 0].mean()  # the weights did move
    np.testing.assert_allclose(fsdp.losses, one.losses, rtol=1e-5, atol=1e-5)


def test_two_nodes_over_loopback_record_the_one_process_matrix(tmp_path):
    """Two "machines" (one accelerate launch each, --num_machines 2, meeting at 127.0.0.1) write one
    recording into a shared folder, as nodes of a cluster do on a shared filesystem."""
    common = ["--mode", "eval", "--num-samples", "40", "--lr", "0.01", "--epochs", "2"]
    run_one(tmp_path / "one", *common, "--batch-size", "8")
    accelerate_launch_nodes(SCRIPT, str(tmp_path / "nodes"), *common, "--batch-size", "4", timeout=300)
    assert LossStore(tmp_path / "nodes").settings().world_size == 2
    ids = np.arange(100, 140)
    one, nodes = load_loss_matrix(tmp_path / "one", ids), load_loss_matrix(tmp_path / "nodes", ids)
    assert one.losses.shape == (40, 2)
    np.testing.assert_allclose(nodes.losses, one.losses, rtol=1e-5, atol=1e-5)


def test_uneven_n_padding_duplicates_loops_and_streams(tmp_path):
    """N = 37 is not divisible by 2 x 4: the last batches carry padding duplicates.

    With a learning rate of 0 every snapshot uses the initial weights, so every way of recording
    must give exactly the one-process eval-mode matrix: the Trainer in both modes, a hand-written
    accelerate loop, and a streaming (iterable) dataset in train mode.
    """
    from concurrent.futures import ThreadPoolExecutor

    common = ["--num-samples", "37", "--lr", "0", "--batch-size", "4"]
    variants = {
        "trainer-eval": ["--mode", "eval"],
        "trainer-train": ["--mode", "train"],
        "loop-eval": ["--mode", "eval", "--loop", "accelerate"],
        "stream-train": ["--mode", "train", "--iterable", "--max-steps", "10"],
    }
    # The launches are independent and mostly start-up: two at a time, beside the reference run.
    with ThreadPoolExecutor(max_workers=2) as pool:
        launches = [pool.submit(launch_two, tmp_path / name, *common, *extra) for name, extra in variants.items()]
        run_one(tmp_path / "reference", "--mode", "eval", *common)
        for launch in launches:
            launch.result()
    ids = np.arange(100, 137)
    reference = load_loss_matrix(tmp_path / "reference", ids).losses
    for name in variants:
        shards = LossStore(tmp_path / name).shards(1)
        rows = sum(len(record_tiny_rows(p)) for p in shards.values())
        assert rows >= 37, name
        got = load_loss_matrix(tmp_path / name, ids).losses
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6, err_msg=name)
    # The Trainer's eval pass pads 37 to 40: three ids were written twice and merged once.
    shards = LossStore(tmp_path / "trainer-eval").shards(1)
    assert sum(len(record_tiny_rows(p)) for p in shards.values()) == 40


def record_tiny_rows(path: Path) -> np.ndarray:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("sample_id").to_numpy()


def test_weighted_training_on_two_processes_equals_one_process(tmp_path):
    """CartoTrainer with loss weights (some 0), up-sampling and removals, SGD, same global batch."""
    from collections import Counter

    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    common = [
        "--mode",
        "train",
        "--curated",
        "--num-samples",
        "40",
        "--epoch-samples",
        "40",
        "--lr",
        "0.1",
        "--optim",
        "sgd",
        "--epochs",
        "2",
    ]
    run_one(tmp_path / "one", *common, "--batch-size", "8")
    launch_two(tmp_path / "two", *common, "--batch-size", "4")
    one = load_file(tmp_path / "one" / "final" / "model.safetensors")
    two = load_file(tmp_path / "two" / "final" / "model.safetensors")
    start = record_tiny.make_model(50, 12, 0).state_dict()
    assert any(not np.allclose(one[k].numpy(), start[k].numpy()) for k in one)  # it trained
    for name in one:
        np.testing.assert_allclose(two[name].numpy(), one[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # Each epoch, the two ranks trained on disjoint halves of the same weighted draw.
    for snapshot in (1, 2):
        drawn = [Counter(), Counter()]
        for i, run in enumerate(("one", "two")):
            for path in LossStore(tmp_path / run).shards(snapshot).values():
                drawn[i].update(pq.read_table(path).column("sample_id").to_pylist())
        assert drawn[0] == drawn[1] and sum(drawn[0].values()) == 40


@pytest.mark.parametrize("alone", [False, True], ids=["split across processes", "each process alone"])
def test_leakage_columns_on_two_processes_equal_one_process(tmp_path, alone):
    """Split: each process computes a share of the batches and both return every row. Alone (the
    default): each process computes every row itself, without waiting for the other. Both equal
    one process."""
    script = SCRIPT.parent / "leak_tiny.py"
    sys.path.insert(0, str(script.parent))
    import leak_tiny

    leak_tiny.main([str(tmp_path / "one.parquet")])
    accelerate_launch(script, str(tmp_path / "two.parquet"), *(["--alone"] if alone else []), timeout=300)
    one = pd.read_parquet(tmp_path / "one.rank0.parquet")
    assert one["carto_leak_extractable"].any() and not one["carto_leak_extractable"].all()
    for rank in (0, 1):
        two = pd.read_parquet(tmp_path / f"two.rank{rank}.parquet")
        pd.testing.assert_frame_equal(two, one)


def test_evaluation_on_two_processes_equals_one_process(tmp_path):
    """Every measurement's batches split across two processes (greedy decoding, exposure per
    canary, membership signals, perplexity): both return the one-process report, and the first
    process alone writes the files."""
    import json

    script = SCRIPT.parent / "eval_tiny.py"
    sys.path.insert(0, str(script.parent))
    import eval_tiny

    eval_tiny.main([str(tmp_path / "one")])
    accelerate_launch(script, str(tmp_path / "two"), timeout=300)
    one = json.loads((tmp_path / "one" / "returned.rank0.json").read_text())
    assert one["canaries"]["num_canaries"] == 3 and one["validation"]["num_tokens"] > 0
    assert json.loads((tmp_path / "one" / "owners.rank0.json").read_text()) == [0] * 5
    for rank in (0, 1):
        assert json.loads((tmp_path / "two" / f"returned.rank{rank}.json").read_text()) == one
        # the work was shared: every other item computed by the other process, all results on both
        assert json.loads((tmp_path / "two" / f"owners.rank{rank}.json").read_text()) == [0, 1, 0, 1, 0]
    assert json.loads((tmp_path / "two" / "report.json").read_text()) == json.loads(
        (tmp_path / "one" / "report.json").read_text()
    )
