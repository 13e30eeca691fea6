"""Run a script under a real `accelerate launch` with two gloo processes on the CPU."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

TEARDOWN_ABORT = "terminate called without an active exception"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(
    script: Path, *args: str, num_processes: int = 2, timeout: int = 600, cleanup: Callable[[], None] | None = None
) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes N script args`; fails the test on a non-zero exit.

    On a machine without GPUs, `--multi_gpu` starts N CPU processes with the gloo backend (with
    accelerate 1.x, `--cpu --num_processes 2` starts only one unless MPI is set up).
    """
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_port",
        str(free_port()),
        str(script),
        *args,
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0 and TEARDOWN_ABORT in result.stderr:
        # torch's gloo backend on CPU now and then aborts a process during interpreter shutdown,
        # after the script has finished. One fresh attempt, checked the same way.
        if cleanup is not None:
            cleanup()
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def accelerate_launch_nodes(script: Path, *args: str, num_machines: int = 2, timeout: int = 600) -> list[str]:
    """``num_machines`` "nodes" on this machine: one ``accelerate launch --num_machines N
    --machine_rank R --main_process_ip 127.0.0.1`` per rank, one process each, meeting over
    loopback, as separate machines meet over the network. Fails the test unless every node exits
    with 0; returns their standard errors."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    port = str(free_port())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    nodes = []
    for rank in range(num_machines):
        cmd = [
            accelerate, "launch", "--multi_gpu", "--num_machines", str(num_machines), "--num_processes",
            str(num_machines), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port",
            port, "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
            str(script), *args,
        ]  # fmt: skip
        nodes.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    errors = []
    for rank, node in enumerate(nodes):
        try:
            _, err = node.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise AssertionError(f"node {rank} did not finish in {timeout} s") from None
        errors.append(err)
        assert node.returncode == 0, f"node {rank}: {err[-4000:]}"
    return errors
