"""Reconcile planning: from a SobertRun and its observed jobs to objects to create and a status.

Pure: the controller handler fetches, calls `plan`, then applies. Names are deterministic
(<run>-<stage>), so applying a plan twice never creates a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig, PretrainTarget
from sobert_operator.kube.observe import failure_message, job_phase, job_state
from sobert_operator.pipeline import STAGE_ORDER, Decision, Stage, StageState, decide
from sobert_operator.render.common import spec_configmap
from sobert_operator.render.jobs import render_stage_job
from sobert_operator.render.pretrain import render_pytorchjob, render_trainjob

PHASE_OF_STAGE = {Stage.prepare: "Preparing", Stage.pretrain: "Pretraining", Stage.convert: "Converting"}


def stage_kind(stage: Stage, cluster: ClusterConfig) -> tuple[str, str]:
    """(apiVersion, kind) of the object that runs `stage`."""
    if stage is Stage.pretrain:
        if cluster.pretrain_target is PretrainTarget.trainjob:
            return "trainer.kubeflow.org/v1alpha1", "TrainJob"
        return "kubeflow.org/v1", "PyTorchJob"
    return "batch/v1", "Job"


def render_stage(spec: RunSpec, cluster: ClusterConfig, stage: Stage, dataset_id: str) -> dict[str, Any]:
    if stage is Stage.pretrain:
        render = render_trainjob if cluster.pretrain_target is PretrainTarget.trainjob else render_pytorchjob
        return render(spec, cluster, dataset_id)
    return render_stage_job(spec, cluster, stage.value, dataset_id)


def render_all(spec: RunSpec, cluster: ClusterConfig, dataset_id: str) -> list[dict[str, Any]]:
    """Every object the run will create, in order (for `--dry-run`)."""
    return [spec_configmap(spec)] + [render_stage(spec, cluster, stage, dataset_id) for stage in STAGE_ORDER]


def condition(type_: str, status: bool, reason: str, message: str, now: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now,
    }


@dataclass
class Plan:
    decision: Decision
    create: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    event: tuple[str, str] | None = None  # (reason, message) worth an Event


def plan(
    spec: RunSpec,
    cluster: ClusterConfig,
    dataset_id: str,
    jobs: dict[Stage, dict[str, Any] | None],
    now: str,
    configmap_exists: bool,
) -> Plan:
    states = {stage: job_state(jobs.get(stage)) for stage in STAGE_ORDER}
    decision = decide(states)
    result = Plan(decision)
    if not configmap_exists:
        result.create.append(spec_configmap(spec))
    stage_status = {
        stage.value: {
            "state": states[stage].value,
            "job": (jobs.get(stage) or {}).get("metadata", {}).get("name"),
            "jobPhase": job_phase(jobs.get(stage)),
        }
        for stage in STAGE_ORDER
    }
    status: dict[str, Any] = {"datasetId": dataset_id, "stages": stage_status}
    if decision.action == "start":
        assert decision.stage is not None
        result.create.append(render_stage(spec, cluster, decision.stage, dataset_id))
        status.update(phase=PHASE_OF_STAGE[decision.stage], stage=decision.stage.value)
        result.event = ("StageStarted", f"creating {stage_kind(decision.stage, cluster)[1]} for stage {decision.stage}")
        status["conditions"] = [condition("Ready", False, "StageStarted", f"{decision.stage} starting", now)]
    elif decision.action == "wait":
        assert decision.stage is not None
        status.update(phase=PHASE_OF_STAGE[decision.stage], stage=decision.stage.value)
        status["conditions"] = [condition("Ready", False, "StageRunning", f"{decision.stage} running", now)]
    elif decision.action == "fail":
        assert decision.stage is not None
        message = f"stage {decision.stage} failed: {failure_message(jobs[decision.stage] or {})}"
        status.update(phase="Failed", stage=decision.stage.value, message=message)
        status["conditions"] = [
            condition("Ready", False, "StageFailed", message, now),
            condition("Failed", True, "StageFailed", message, now),
        ]
        result.event = ("StageFailed", message)
    else:
        status.update(phase="Succeeded", stage=None, message="all stages succeeded")
        status["conditions"] = [condition("Ready", True, "Succeeded", "all stages succeeded", now)]
        result.event = ("Succeeded", "all stages succeeded")
    result.status = status
    return result


def is_terminal(status: dict[str, Any] | None) -> bool:
    return (status or {}).get("phase") in ("Succeeded", "Failed", "Invalid")


__all__ = ["Plan", "StageState", "plan", "render_all", "stage_kind"]
