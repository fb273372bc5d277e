"""Pieces shared by every rendered object: names, labels, storage credentials, the spec ConfigMap.

Renderers are pure: validated spec + cluster config in, plain dicts out. Credentials are only
ever referenced (`secretKeyRef`), never inlined.
"""

from __future__ import annotations

import json
from typing import Any

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig, NodePool, SchedulerKind

SPEC_MOUNT = "/etc/sobert"
SPEC_PATH = f"{SPEC_MOUNT}/spec.json"
SCRATCH = "/scratch"
# The trainer image's user (trainer/Dockerfile USER): its HOME holds the caches of transformers and
# triton, and fsGroup makes the pods' emptyDirs writable by it.
TRAINER_UID = 10001
LABEL_RUN = "sobert.dev/run"
LABEL_STAGE = "sobert.dev/stage"


def object_name(run: str, stage: str) -> str:
    return f"{run}-{stage}"


def labels(spec: RunSpec, stage: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "sobert",
        "app.kubernetes.io/instance": spec.name,
        "app.kubernetes.io/managed-by": "sobert-controller",
        LABEL_RUN: spec.name,
    }
    if stage:
        out["app.kubernetes.io/component"] = stage
        out[LABEL_STAGE] = stage
    return out


def storage_secret_name(spec: RunSpec, cluster: ClusterConfig) -> str:
    """The Secret with the run's S3 keys: the run's own, else the cluster's default."""
    return spec.storage.credentials_secret or cluster.storage_secret


def storage_env(spec: RunSpec, cluster: ClusterConfig) -> list[dict[str, Any]]:
    secret = storage_secret_name(spec, cluster)
    env: list[dict[str, Any]] = [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    if spec.storage.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.storage.endpoint_url})
    return env


def spec_configmap(spec: RunSpec) -> dict[str, Any]:
    """The validated, fully expanded spec every stage container reads from SPEC_PATH."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": object_name(spec.name, "spec"), "labels": labels(spec)},
        "data": {"spec.json": json.dumps(json.loads(spec.model_dump_json()), indent=2, sort_keys=True)},
    }


def spec_volume(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": "spec", "configMap": {"name": object_name(spec.name, "spec")}}
    mount = {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True}
    return volume, mount


def scratch_volume(size: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    empty_dir: dict[str, Any] = {"sizeLimit": size} if size else {}
    return {"name": "scratch", "emptyDir": empty_dir}, {"name": "scratch", "mountPath": SCRATCH}


def pod_security() -> dict[str, Any]:
    """Every sobert pod runs as the trainer image's user, whatever stage it is, under the runtime's
    default seccomp profile: with `container_security()`, what Pod Security's `restricted` level
    asks of a pod (kubernetes v1.35, staging/src/k8s.io/pod-security-admission/policy/)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """What `restricted` asks of each container: no privilege escalation, every capability dropped."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def place_on_pool(pod_spec: dict[str, Any], pool: NodePool, cluster: ClusterConfig) -> dict[str, Any]:
    """Node selector, tolerations and affinity of a GPU pool, and the gang scheduler's name."""
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in pool.tolerations]
    if pool.affinity:
        pod_spec["affinity"] = pool.affinity
    if cluster.scheduler is SchedulerKind.volcano:
        pod_spec["schedulerName"] = "volcano"
    return pod_spec
