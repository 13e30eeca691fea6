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
