"""Batch Jobs for the CPU stages: prepare (dumps -> shards) and convert (checkpoint -> Hugging Face)."""

from __future__ import annotations

from typing import Any

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.launch import convert_command, prepare_command
from sobert_operator.render.common import (
    SPEC_PATH,
    container_security,
    labels,
    object_name,
    pod_security,
    scratch_volume,
    spec_volume,
    storage_env,
)

CPU_RESOURCES = {
    "prepare": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
    "convert": {"requests": {"cpu": "2", "memory": "32Gi"}, "limits": {"memory": "32Gi"}},
}


def _stage_command(stage: str, dataset_id: str) -> list[str]:
    if stage == "prepare":
        return prepare_command(SPEC_PATH, dataset_id)
    return convert_command(SPEC_PATH, dataset_id)


def render_stage_job(spec: RunSpec, cluster: ClusterConfig, stage: str, dataset_id: str) -> dict[str, Any]:
    if stage not in CPU_RESOURCES:
        raise ValueError(f"no batch Job for stage {stage!r}")
    spec_vol, spec_mount = spec_volume(spec)
    scratch_vol, scratch_mount = scratch_volume()
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security(),
        "containers": [
            {
                "name": "sobert",
                "image": cluster.trainer_image,
                "command": _stage_command(stage, dataset_id),
                "env": [
                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                    {"name": "TMPDIR", "value": "/scratch"},
                    *storage_env(spec, cluster),
                ],
                "resources": CPU_RESOURCES[stage],
                "volumeMounts": [spec_mount, scratch_mount],
                "securityContext": container_security(),
                # Temp files (sqlite spill, shard staging) go to the scratch volume.
                "workingDir": "/scratch",
            }
        ],
        "volumes": [spec_vol, scratch_vol],
    }
    if cluster.cpu_node_selector:
        pod_spec["nodeSelector"] = dict(cluster.cpu_node_selector)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": object_name(spec.name, stage), "labels": labels(spec, stage)},
        "spec": {
            "backoffLimit": cluster.backoff_limit,
            "ttlSecondsAfterFinished": cluster.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels(spec, stage), "annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": pod_spec,
            },
        },
    }
