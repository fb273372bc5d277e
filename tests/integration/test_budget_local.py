"""Budgets on the embedded backend: refused before launch, metered per process, stopped at the limit
(after a checkpoint), resumed when raised; the report's ledger is process time x price."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sobert_api import paths
from sobert_api.checkpoints import complete_checkpoints
from sobert_api.storage import Storage
from sobert_operator.cost.catalog import load_catalog

pytestmark = pytest.mark.integration
PRICE = load_catalog().cpu.usd_per_core_hour


def submit(so_dump, storage: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sobertctl.main", "submit", "tiny", "--name", "b", "--storage", str(storage)]
    command += ["--workdir", str(storage.parent / "work"), "--procs-per-node", "2"]
    command += ["--posts", *so_dump["posts"], "--comments", *so_dump["comments"], *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_a_budget_below_the_forecast_is_refused_and_nothing_is_written(so_dump, tmp_path):
    result = submit(so_dump, tmp_path / "store", "--budget", "0.000001")
    assert result.returncode == 2
    assert "budget: forecast $0.00" in result.stderr and "exceeds the budget $0.000001" in result.stderr
    assert not (tmp_path / "store").exists()


def test_run_is_metered_stopped_at_its_budget_then_resumed(so_dump, tmp_path):
    storage_dir = tmp_path / "store"
    storage = Storage.open(str(storage_dir))
    # Publish the dataset with a 1-step run, so the budgeted run below is all pretraining.
    first = submit(so_dump, storage_dir, "--set", "train.train_tokens=2048")
    assert first.returncode == 0, first.stderr[-2000:]
    assert {json.loads(x)["phase"] for x in storage.read_bytes(paths.ledger_key("b")).decode().splitlines()} == {
        "prepare",
        "pretrain",
        "convert",
    }

    # 900 steps (~100 s of training on 2 cores after ~15 s of start-up), money for 60 s of 2 cores.
    budget = 2 * PRICE / 3600 * 60
    longer = ["--name", "b2", "--set", "train.train_tokens=1843200", "--set", "train.checkpoint_interval=1000"]
    stopped = submit(so_dump, storage_dir, *longer, "--budget", f"{budget:.9f}", "--over-budget")
    output = stopped.stdout[-3000:] + stopped.stderr[-3000:]
    assert stopped.returncode == 1, output
    assert "stopped at its budget" in stopped.stderr
    assert "budget: 80% of" in stopped.stdout and "asking pretrain to checkpoint now" in stopped.stdout
    steps = complete_checkpoints(storage.child(paths.checkpoints_prefix("b2")))
    if storage.exists(paths.progress_key("b2")):  # training had begun (start-up is ~15 s of the 60)
        assert steps and steps[-1] < 900, output  # checkpointed mid-run (95% request, then the stop)
    ledger = [json.loads(x) for x in storage.read_bytes(paths.ledger_key("b2")).decode().splitlines()]
    assert [(a["phase"], a["reason"]) for a in ledger] == [("pretrain", "BudgetStopped")]
    report = json.loads(storage.read_bytes("runs/b2/cost/report.json"))
    assert report["state"] == "budget-stopped" and report["budget"]["submitted_over_forecast"] is True
    assert budget <= report["spent"]["usd"] <= budget * 1.5  # the stop lands after the step and checkpoint

    # A raised budget resumes the same run from its checkpoint, to the end.
    resumed = submit(so_dump, storage_dir, *longer, "--budget", "1")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert complete_checkpoints(storage.child(paths.checkpoints_prefix("b2")))[-1] == 900
    report = json.loads(storage.read_bytes("runs/b2/cost/report.json"))
    assert [a["reason"] for a in report["ledger"]] == ["BudgetStopped", "Completed", "Completed"]
    # The ledger is process wall time x cores x the catalog's core-hour price.
    total = sum(a["devices"] * (a["end"] - a["start"]) * PRICE / 3600 for a in report["ledger"])
    assert all(a["usd_per_hour"] == PRICE and a["devices"] == (2 if a["phase"] == "pretrain" else 1)
               for a in report["ledger"])  # fmt: skip
    assert report["spent"]["usd"] == pytest.approx(total)
    html = storage.read_bytes("runs/b2/cost/report.html").decode()
    assert html.count("data:image/png;base64,") == 4 and "<script" not in html  # spend, phases, loss, ETA
    # The budget stop checkpointed the step it stopped at: the resumed run restored it and lost nothing.
    pretrain = report["goodput"]["by_phase"]["pretrain"]
    assert pretrain["lost_to_restarts"] == 0 and (pretrain["checkpoint_restore"] > 0) == bool(steps)
