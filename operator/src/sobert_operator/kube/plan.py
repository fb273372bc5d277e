"""Reconcile planning: from a SobertRun and its observed jobs to objects to create and a status.

Pure: the controller handler fetches, calls `plan`, then applies. Names are deterministic
(<run>-<stage>, <run>-finetune-<task>), so applying a plan twice never creates a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sobert_api.spec import RunSpec, TaskName
from sobert_operator.cluster import ClusterConfig, PretrainTarget
from sobert_operator.kube.observe import failure_message, job_phase, job_state
from sobert_operator.pipeline import STAGE_ORDER, Decision, Observed, Stage, StageState, combine, decide
from sobert_operator.render.common import object_name, spec_configmap
from sobert_operator.render.finetune import finetune_object_name, render_rayjob
from sobert_operator.render.jobs import render_stage_job
from sobert_operator.render.pretrain import render_pytorchjob, render_trainjob

PHASE_OF_STAGE = {
    Stage.prepare: "Preparing",
    Stage.pretrain: "Pretraining",
    Stage.convert: "Converting",
    Stage.finetune: "Finetuning",
}


@dataclass(frozen=True)
class StageObject:
    """One object that runs (part of) a stage: a Job, PyTorchJob/TrainJob, or one task's RayJob."""

    stage: Stage
    name: str
    api_version: str
    kind: str
    task: TaskName | None = None


def stage_objects(spec: RunSpec, cluster: ClusterConfig) -> list[StageObject]:
    """Every object the run's stages create, in pipeline order (finetune: one per task)."""
    out = []
    for stage in STAGE_ORDER:
        api_version, kind = stage_kind(stage, cluster)
        if stage is Stage.finetune:
            out += [
                StageObject(stage, finetune_object_name(spec.name, task), api_version, kind, task)
                for task in spec.finetune.tasks
            ]
        else:
            out.append(StageObject(stage, object_name(spec.name, stage.value), api_version, kind))
    return out


def stage_kind(stage: Stage, cluster: ClusterConfig) -> tuple[str, str]:
    """(apiVersion, kind) of the object that runs `stage`."""
    if stage is Stage.pretrain:
        if cluster.pretrain_target is PretrainTarget.trainjob:
            return "trainer.kubeflow.org/v1alpha1", "TrainJob"
        return "kubeflow.org/v1", "PyTorchJob"
    if stage is Stage.finetune:
        return "ray.io/v1", "RayJob"
    return "batch/v1", "Job"


def render_object(
    spec: RunSpec,
    cluster: ClusterConfig,
    obj: StageObject,
    dataset_id: str,
    deadline_seconds: int | None = None,
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    if obj.stage is Stage.pretrain:
        render = render_trainjob if cluster.pretrain_target is PretrainTarget.trainjob else render_pytorchjob
        return render(spec, cluster, dataset_id, active_deadline_seconds=deadline_seconds, peak_tflops=peak_tflops)
    if obj.stage is Stage.finetune:
        assert obj.task is not None
        return render_rayjob(spec, cluster, obj.task, active_deadline_seconds=deadline_seconds)
    return render_stage_job(spec, cluster, obj.stage.value, dataset_id)


def render_all(spec: RunSpec, cluster: ClusterConfig, dataset_id: str) -> list[dict[str, Any]]:
    """Every object the run will create, in order (for `--dry-run`)."""
    objects = stage_objects(spec, cluster)
    return [spec_configmap(spec)] + [render_object(spec, cluster, obj, dataset_id) for obj in objects]


def _object_state(
    spec: RunSpec, obj: StageObject, job: dict[str, Any] | None, published: Observed | None
) -> StageState:
    state = job_state(job)
    if state is StageState.missing and published is not None and published.done(spec, obj.stage, obj.task):
        return StageState.succeeded
    return state


def gone_after_success(objects: list[StageObject], jobs: dict[str, Any], status: dict[str, Any]) -> list[StageObject]:
    """Objects the run's last status saw succeed that no longer exist: what storage must settle."""
    stages = status.get("stages") or {}

    def last_state(obj: StageObject) -> str | None:
        entry = stages.get(obj.stage.value) or {}
        if obj.task is not None:
            entry = (entry.get("tasks") or {}).get(obj.task.value) or {}
        return entry.get("state")

    return [o for o in objects if jobs.get(o.name) is None and last_state(o) == StageState.succeeded.value]


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
    jobs: dict[str, dict[str, Any] | None],
    now: str,
    configmap_exists: bool,
    deadline_seconds: int | None = None,
    published: Observed | None = None,
    peak_tflops: float | None = None,
) -> Plan:
    """`jobs` maps each of `stage_objects(spec, cluster)`'s names to the object found (or None).
    `deadline_seconds` (what the budget leaves) becomes the new GPU jobs' activeDeadlineSeconds.
    `peak_tflops` (the pool's GPU peak, from the price catalog) lets pretraining report its MFU.
    `published` (what storage holds, when read): an object that is gone but whose outputs are
    published succeeded (its job was removed by its TTL after it finished); it is not run again."""
    objects = stage_objects(spec, cluster)
    object_states = {obj.name: _object_state(spec, obj, jobs.get(obj.name), published) for obj in objects}
    states = {
        stage: combine([object_states[o.name] for o in objects if o.stage is stage])
        if any(o.stage is stage for o in objects)
        else StageState.succeeded  # a stage with nothing to run (finetune without tasks)
        for stage in STAGE_ORDER
    }
    decision = decide(states)
    result = Plan(decision)
    if not configmap_exists:
        result.create.append(spec_configmap(spec))
    status: dict[str, Any] = {"datasetId": dataset_id, "stages": _stages_status(objects, states, object_states, jobs)}
    if decision.action == "start":
        assert decision.stage is not None
        # A stage's missing objects (several finetune RayJobs start together: each is its own cluster).
        starting = [o for o in objects if o.stage is decision.stage and jobs.get(o.name) is None]
        result.create += [render_object(spec, cluster, o, dataset_id, deadline_seconds, peak_tflops) for o in starting]
        status.update(phase=PHASE_OF_STAGE[decision.stage], stage=decision.stage.value)
        kind = stage_kind(decision.stage, cluster)[1]
        result.event = ("StageStarted", f"creating {len(starting)} {kind}(s) for stage {decision.stage}")
        status["conditions"] = [condition("Ready", False, "StageStarted", f"{decision.stage} starting", now)]
    elif decision.action == "wait":
        assert decision.stage is not None
        status.update(phase=PHASE_OF_STAGE[decision.stage], stage=decision.stage.value)
        status["conditions"] = [condition("Ready", False, "StageRunning", f"{decision.stage} running", now)]
    elif decision.action == "fail":
        assert decision.stage is not None
        result.event = _failed(status, decision.stage, objects, object_states, jobs, now)
    elif decision.action == "partial":
        result.event = _partly_succeeded(status, objects, object_states, jobs, now)
    else:
        status.update(phase="Succeeded", stage=None, message="all stages succeeded")
        status["conditions"] = [condition("Ready", True, "Succeeded", "all stages succeeded", now)]
        result.event = ("Succeeded", "all stages succeeded")
    result.status = status
    return result


def _failed(status: dict[str, Any], stage: Stage, objects, object_states, jobs, now: str) -> tuple[str, str]:
    """The run failed at `stage`: phase, message and conditions; the Event to post."""
    failed = [o for o in objects if o.stage is stage and object_states[o.name] is StageState.failed]
    if len(failed) > 1:  # every finetune task: each one's reason
        reasons = "; ".join(f"{o.task}: {failure_message(jobs[o.name] or {})}" for o in failed)
        message = f"stage {stage} failed: every task failed ({reasons})"
    else:
        where = f" (task {failed[0].task})" if failed[0].task else ""
        message = f"stage {stage}{where} failed: {failure_message(jobs[failed[0].name] or {})}"
    status.update(phase="Failed", stage=stage.value, message=message)
    status["conditions"] = [
        condition("Ready", False, "StageFailed", message, now),
        condition("Failed", True, "StageFailed", message, now),
    ]
    return ("StageFailed", message)


def _partly_succeeded(status: dict[str, Any], objects, object_states, jobs, now: str) -> tuple[str, str]:
    """Every stage ran and some finetune tasks failed: phase `PartiallySucceeded`, each task's
    outcome in the message (a failed task's in `.status.stages.finetune.tasks`, its driver's log in
    storage)."""
    tasks = [o for o in objects if o.stage is Stage.finetune]
    failed = [o for o in tasks if object_states[o.name] is StageState.failed]
    outcomes = ", ".join(f"{o.task} {object_states[o.name].value}" for o in tasks)
    message = f"{len(failed)} of {len(tasks)} finetune tasks failed ({outcomes}); the others' results are in status"
    status.update(phase="PartiallySucceeded", stage=None, message=message)
    status["conditions"] = [
        condition("Ready", False, "TasksFailed", message, now),
        condition("PartiallySucceeded", True, "TasksFailed", message, now),
    ]
    return ("PartiallySucceeded", message)


def _stages_status(objects, states, object_states, jobs) -> dict[str, Any]:
    """`.status.stages`: each stage's state and its job (each finetune task's, by task)."""
    stage_status: dict[str, Any] = {}
    for stage in STAGE_ORDER:
        mine = [o for o in objects if o.stage is stage]
        entry: dict[str, Any] = {"state": states[stage].value}
        if stage is Stage.finetune:
            entry["tasks"] = {
                str(o.task): {
                    "state": object_states[o.name].value,
                    "job": o.name if jobs.get(o.name) else None,
                    "jobPhase": job_phase(jobs.get(o.name)),
                    **(
                        {"message": failure_message(jobs[o.name] or {})}
                        if object_states[o.name] is StageState.failed
                        else {}
                    ),
                }
                for o in mine
            }
        else:
            found = jobs.get(mine[0].name)
            entry |= {"job": mine[0].name if found else None, "jobPhase": job_phase(found)}
        stage_status[stage.value] = entry
    return stage_status


TERMINAL_PHASES = ("Succeeded", "PartiallySucceeded", "Failed", "Invalid")


def is_terminal(status: dict[str, Any] | None) -> bool:
    return (status or {}).get("phase") in TERMINAL_PHASES


__all__ = [
    "Plan",
    "StageObject",
    "StageState",
    "gone_after_success",
    "plan",
    "render_all",
    "stage_kind",
    "stage_objects",
]
