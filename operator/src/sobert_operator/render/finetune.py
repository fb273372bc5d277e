"""Finetuning as one KubeRay RayJob (ray.io/v1) per task.

Each RayJob brings up its own small Ray cluster: a head that runs the driver
(`python -m sobert_trainer.finetune`, the same command the local executor runs) and schedules
no training (`num-cpus: 0`), plus one worker group sized by the task (Ray Train workers, each
with a GPU from the run's node pool when `finetune.use_gpu`). The cluster is torn down when
the job finishes (`shutdownAfterJobFinishes`, after `cluster.ray_cluster_ttl_seconds`); results
are in the run's S3 storage.
"""

from __future__ import annotations

import math
from typing import Any

from sobert_api.spec import RunSpec, TaskName
from sobert_operator.cluster import ClusterConfig, SchedulerKind
from sobert_operator.launch import finetune_command
from sobert_operator.render.common import (
    SCRATCH,
    SPEC_PATH,
    container_security,
    labels,
    object_name,
    place_on_pool,
    pod_security,
    scratch_volume,
    spec_volume,
    storage_env,
)

STAGE = "finetune"
LABEL_TASK = "sobert.dev/task"
LABEL_RAY_NODE = "sobert.dev/ray-node"  # head | worker | submitter (the submitter's log is the driver's)
SUBMITTER_RESOURCES = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
HEAD_RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
WORKER_MEMORY = "16Gi"
WORKER_MEMORY_GPU = "64Gi"


def finetune_object_name(run: str, task: TaskName | str) -> str:
    return object_name(run, f"{STAGE}-{TaskName(task).value}")


def _task_labels(spec: RunSpec, task: TaskName) -> dict[str, str]:
    return {**labels(spec, STAGE), LABEL_TASK: task.value}


def _container(name: str, spec: RunSpec, cluster: ClusterConfig, resources: dict[str, Any]) -> dict[str, Any]:
    _spec_vol, spec_mount = spec_volume(spec)
    return {
        "name": name,
        "image": cluster.trainer_image,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "TMPDIR", "value": SCRATCH},
            *storage_env(spec, cluster),
        ],
        "resources": resources,
        "volumeMounts": [
            spec_mount,
            {"name": "scratch", "mountPath": SCRATCH},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
        "securityContext": container_security(),
    }


def _pod(
    spec: RunSpec, cluster: ClusterConfig, task: TaskName, container: dict[str, Any], gpu: bool, node: str
) -> dict[str, Any]:
    spec_vol, _ = spec_volume(spec)
    scratch_vol, _ = scratch_volume()
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [spec_vol, scratch_vol, {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
    }
    if gpu:
        place_on_pool(pod_spec, cluster.pool(spec.placement.node_pool)[1], cluster)
    else:
        if cluster.cpu_node_selector:
            pod_spec["nodeSelector"] = dict(cluster.cpu_node_selector)
        if cluster.scheduler is SchedulerKind.volcano:
            pod_spec["schedulerName"] = "volcano"
    return {
        "metadata": {
            "labels": {**_task_labels(spec, task), LABEL_RAY_NODE: node},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": pod_spec,
    }


def _submitter_pod(spec: RunSpec, cluster: ClusterConfig, task: TaskName) -> dict[str, Any]:
    """The pod KubeRay runs `ray job submit` in; it tails the driver, so its log is the task's log."""
    container = {
        "name": "ray-job-submitter",
        "image": cluster.trainer_image,
        "resources": SUBMITTER_RESOURCES,
        "securityContext": container_security(),
    }
    return {
        "metadata": {
            "labels": {**_task_labels(spec, task), LABEL_RAY_NODE: "submitter"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {"restartPolicy": "Never", "securityContext": pod_security(), "containers": [container]},
    }


def worker_resources(spec: RunSpec) -> dict[str, Any]:
    cpu = str(math.ceil(spec.finetune.cpus_per_worker))
    memory = WORKER_MEMORY_GPU if spec.finetune.use_gpu else WORKER_MEMORY
    gpu = {"nvidia.com/gpu": "1"} if spec.finetune.use_gpu else {}
    return {"requests": {"cpu": cpu, "memory": memory, **gpu}, "limits": {"memory": memory, **gpu}}


def render_rayjob(
    spec: RunSpec,
    cluster: ClusterConfig,
    task: TaskName,
    active_deadline_seconds: int | None = None,
    suspend: bool = False,
) -> dict[str, Any]:
    workers = spec.finetune.tasks[task].workers or spec.finetune.workers
    head = _container("ray-head", spec, cluster, HEAD_RESOURCES)
    worker = _container("ray-worker", spec, cluster, worker_resources(spec))
    job_spec: dict[str, Any] = {
        "entrypoint": " ".join(finetune_command(SPEC_PATH, task.value)),
        "shutdownAfterJobFinishes": True,
        # KubeRay deletes the RayCluster at EndTime + this (rayjob_controller.go
        # handleShutdownAfterJobFinishes, v1.5.1); the submitter Job, with the driver's log, stays.
        "ttlSecondsAfterFinished": cluster.ray_cluster_ttl_seconds,
        "backoffLimit": cluster.backoff_limit,
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": _submitter_pod(spec, cluster, task),
        "suspend": suspend,
        "rayClusterSpec": {
            "rayVersion": cluster.ray_version,
            "headGroupSpec": {
                # The head runs the driver only; Ray Train workers go to the worker group.
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                "template": _pod(spec, cluster, task, head, gpu=False, node="head"),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "train",
                    "replicas": workers,
                    "minReplicas": workers,
                    "maxReplicas": workers,
                    "rayStartParams": {},
                    "template": _pod(spec, cluster, task, worker, gpu=spec.finetune.use_gpu, node="worker"),
                }
            ],
        },
    }
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    metadata: dict[str, Any] = {"name": finetune_object_name(spec.name, task), "labels": _task_labels(spec, task)}
    if cluster.scheduler is SchedulerKind.kueue and spec.placement.queue:
        metadata["labels"]["kueue.x-k8s.io/queue-name"] = spec.placement.queue
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": metadata, "spec": job_spec}
