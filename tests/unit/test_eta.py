"""Progress and ETA (KEP-2779's progressPercentage / estimatedRemainingSeconds) for a run and its
current stage, from the forecast's phase seconds and pretraining's newest progress record."""

from __future__ import annotations

import pytest

from sobert_operator.eta import PhaseState, estimate

FORECAST = {"phases": [{"phase": "prepare", "seconds": 50}, {"phase": "pretrain", "seconds": 1000},
                       {"phase": "convert", "seconds": 60}, {"phase": "finetune/quality", "seconds": 100},
                       {"phase": "finetune/ner", "seconds": 200}]}  # fmt: skip
BATCH = 4096  # tokens a step


def phases(running: str, started_at: float = 500.0) -> list[PhaseState]:
    order = ["prepare", "pretrain", "convert", "finetune/quality", "finetune/ner"]
    current = order.index(running)
    return [PhaseState(p, "done" if i < current else "running" if i == current else "pending",
                       started_at if i == current else None) for i, p in enumerate(order)]  # fmt: skip


def test_pretraining_left_is_its_steps_left_at_its_throughput_then_the_forecast_of_the_rest():
    record = {"step": 100, "train_iters": 400, "tokens_per_s": 2048.0}  # 2 s a step
    got = estimate(phases("pretrain"), FORECAST, record, BATCH, run_started_at=0, now=800)
    pretrain_left = 300 * 2.0
    left = pretrain_left + 60 + 200  # convert, then the two tasks side by side: the longer one
    assert got["stage"] == {"name": "pretrain", "progressPercentage": 25, "estimatedRemainingSeconds": 600}
    assert got["estimatedRemainingSeconds"] == left
    assert got["progressPercentage"] == int(100 * 800 / (800 + left))
    assert got["lastUpdatedTime"] == "1970-01-01T00:13:20Z"


def test_the_local_executor_runs_tasks_one_after_another():
    got = estimate(phases("convert"), FORECAST, None, BATCH, run_started_at=0, now=510, parallel_tasks=False)
    assert got["stage"]["estimatedRemainingSeconds"] == 50  # 10 s into a 60 s forecast
    assert got["estimatedRemainingSeconds"] == 50 + 100 + 200
    assert got["stage"]["progressPercentage"] == int(100 * 10 / 60)


def test_a_stage_past_its_forecast_has_nothing_left_and_a_finished_run_is_done():
    late = estimate(phases("convert"), FORECAST, None, BATCH, run_started_at=0, now=700)
    assert late["stage"]["estimatedRemainingSeconds"] == 0 and late["stage"]["progressPercentage"] == 100
    done = [PhaseState(p.phase, "done") for p in phases("prepare")]
    assert estimate(done, FORECAST, None, BATCH, 0, 900) | {"lastUpdatedTime": None} == {
        "progressPercentage": 100, "estimatedRemainingSeconds": 0, "stage": None, "lastUpdatedTime": None}  # fmt: skip


@pytest.mark.parametrize("running", ["prepare", "pretrain", "convert", "finetune/quality"])
def test_run_progress_never_goes_past_100_or_below_0(running):
    got = estimate(phases(running), FORECAST, None, BATCH, run_started_at=0, now=500)
    assert 0 <= got["progressPercentage"] <= 100 and got["estimatedRemainingSeconds"] >= 0
    assert got["stage"]["name"] == running.split("/")[0]


def test_a_cluster_runs_stages_from_its_status_and_jobs_and_sobertctl_shows_them():
    from sobert_api import build_spec
    from sobert_operator.kube.progress import cluster_phases, run_progress
    from sobertctl.kube import run_row

    spec = build_spec({"preset": "tiny", "name": "r", "data": {"posts": ["p"]}, "storage": {"uri": "/tmp/x"}})
    stages = {
        "prepare": {"state": "succeeded", "job": "r-prepare"},
        "pretrain": {"state": "succeeded", "job": None},  # removed by its TTL
        "convert": {"state": "succeeded", "job": "r-convert"},
        "finetune": {"state": "running", "tasks": {
            "quality": {"state": "succeeded", "job": "r-finetune-quality"},
            "ner": {"state": "running", "job": "r-finetune-ner"}}},
    }  # fmt: skip
    created = {"metadata": {"creationTimestamp": "1970-01-01T00:10:00Z"}}
    jobs = {"r-prepare": created, "r-convert": created, "r-finetune-quality": created, "r-finetune-ner": created}
    assert cluster_phases(stages, jobs) == [
        PhaseState("prepare", "done", 600.0), PhaseState("pretrain", "done", None),
        PhaseState("convert", "done", 600.0), PhaseState("finetune/quality", "done", 600.0),
        PhaseState("finetune/ner", "running", 600.0)]  # fmt: skip
    status = {"stages": stages}
    figures = run_progress(spec, status, jobs, FORECAST, run_created=0.0, now=700.0)
    assert figures["stage"] == {"name": "finetune", "progressPercentage": 50, "estimatedRemainingSeconds": 100}
    assert figures["estimatedRemainingSeconds"] == 100 and figures["progressPercentage"] == 87
    row = run_row({"metadata": {"name": "r"}, "spec": {}, "status": {**status, "progress": figures}})
    assert (row["PROGRESS"], row["ETA"]) == ("87% (finetune 50%)", "1m")
    assert (run_row({"metadata": {"name": "r"}, "status": {}})["PROGRESS"], "-") == ("-", "-")
