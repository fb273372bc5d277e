"""Every pod sobert renders runs as the trainer image's own user, whose HOME the caches need."""

from __future__ import annotations

import re
from pathlib import Path

from sobert_api import build_spec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.render.finetune import render_rayjob
from sobert_operator.render.jobs import render_stage_job
from sobert_operator.render.pretrain import render_pytorchjob

ROOT = Path(__file__).resolve().parents[2]
SPEC = build_spec(
    {
        "preset": "base",
        "name": "ids",
        "backend": "kubernetes",
        "data": {"posts": ["s3://dumps/Posts.xml"]},
        "storage": {"uri": "s3://bucket/sobert"},
        "parallel": {"nodes": 2, "procs_per_node": 8},
        "finetune": {"tasks": {"ner": {"train": "s3://bucket/ner/train.txt"}}},
    }
)
CLUSTER = ClusterConfig.model_validate(
    {
        "trainer_image": "ghcr.io/sobert/trainer:0.1.0",
        "node_pools": {"h100": {"gpu_type": "h100", "gpus_per_node": 8}},
        "default_node_pool": "h100",
    }
)


def image_user() -> tuple[int, int]:
    """USER uid:gid of trainer/Dockerfile, the image every stage runs."""
    (uid, gid) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "trainer" / "Dockerfile").read_text(), re.MULTILINE)[-1]
    return int(uid), int(gid)


def pod_specs():
    yield "prepare", render_stage_job(SPEC, CLUSTER, "prepare", "so-1")["spec"]["template"]["spec"]
    yield "convert", render_stage_job(SPEC, CLUSTER, "convert", "so-1")["spec"]["template"]["spec"]
    for rtype, replica in render_pytorchjob(SPEC, CLUSTER, "so-1")["spec"]["pytorchReplicaSpecs"].items():
        yield f"pretrain {rtype}", replica["template"]["spec"]
    rayjob = render_rayjob(SPEC, CLUSTER, next(iter(SPEC.finetune.tasks)))["spec"]
    yield "ray head", rayjob["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    for group in rayjob["rayClusterSpec"]["workerGroupSpecs"]:
        yield f"ray {group['groupName']}", group["template"]["spec"]
    yield "ray submitter", rayjob["submitterPodTemplate"]["spec"]


def test_every_pod_runs_as_the_image_user():
    uid, gid = image_user()
    for name, pod in pod_specs():
        security = pod.get("securityContext", {})
        assert (security.get("runAsUser"), security.get("runAsGroup"), security.get("fsGroup")) == (uid, gid, gid), name
        assert security.get("runAsNonRoot") is True, name
