"""`sobert_trainer.torchrun` run for real over toy workers: the exit codes the Training Operator's
`restartPolicy: ExitCode` sees, and the time workers get between SIGTERM and SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
WORKER = Path(__file__).parent / "workers" / "signal_worker.py"


def launch(out: Path, mode: str, grace: int, save_seconds: float = 0.0) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "sobert_trainer.torchrun",
        f"--grace-seconds={grace}",
        "--nproc-per-node=2",
        "--nnodes=1",
        "--standalone",
        str(WORKER),
        f"--mode={mode}",
        f"--save-seconds={save_seconds}",
        f"--out={out}",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_started(out: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((out / f"started-{rank}").exists() for rank in (0, 1)):
            return
        time.sleep(0.1)
    raise AssertionError("workers did not start")


def test_sigterm_lets_workers_checkpoint_and_exits_143(tmp_path):
    process = launch(tmp_path, "term", grace=60, save_seconds=3)
    wait_started(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert (tmp_path / "saved-0").exists() and (tmp_path / "saved-1").exists()


def test_workers_are_killed_after_the_grace_period_less_the_margin(tmp_path):
    """Grace 12 s: the workers get 2 s (12 - 10 s for the launcher), not torchrun's default 30 s."""
    process = launch(tmp_path, "term", grace=12, save_seconds=20)
    wait_started(tmp_path)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert time.monotonic() - sent < 10
    assert not (tmp_path / "saved-0").exists()


def test_a_worker_killed_by_a_signal_is_retryable(tmp_path):
    process = launch(tmp_path, "kill:SIGKILL", grace=30)
    assert process.wait(timeout=60) == 128 + signal.SIGKILL


def test_a_worker_that_fails_on_its_input_is_permanent(tmp_path):
    process = launch(tmp_path, "exit:2", grace=30)
    assert process.wait(timeout=60) == 2
    assert "; exit 2" in process.stderr.read()
