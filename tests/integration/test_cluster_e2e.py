"""End to end on the cluster testbed: everything real but the kubelet (see docs/testbed.md).

The Helm chart installs the controller, which runs as a pod; `sobertctl submit tiny --backend
kubernetes --nodes 2` creates a SobertRun, and the run goes through every phase with real
processes: the prepare Job (kube-controller-manager's Job controller), the 2-node PyTorchJob
(Kubeflow Training Operator v1.9.3), the convert Job and a RayJob per finetune task (KubeRay
v1.5.1), with data and checkpoints on S3 (SeaweedFS on the pod network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, shared_path

pytestmark = pytest.mark.integration
NAMESPACE = "sobert"
TRAINER_IMAGE = "ghcr.io/sobert-dev/sobert-trainer:0.1.0"
BUCKET = "sobert-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import kubecluster

    with kubecluster.cluster(tmp_path_factory.mktemp("cluster"), nodes=2, node_labels={"sobert.dev/pool": "cpu"}) as c:
        kubecluster.start_training_operator(c)
        kubecluster.start_kuberay(c)
        yield c


@pytest.fixture(scope="module")
def s3(cluster, tmp_path_factory):
    import s3server

    server = s3server.start(tmp_path_factory.mktemp("s3-cluster"), address=cluster.gateway)
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    s3server.stop(server)


def _sobertctl(cluster, s3, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **s3.env()}
    result = subprocess.run(
        [sys.executable, "-m", "sobertctl.main", *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sobertctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _values(s3) -> dict[str, Any]:
    """The chart's values for the testbed: one CPU pool whose nodes advertise a (fake) GPU each."""
    return {
        "metrics": {"port": 0},
        "cluster": {
            "trainerImage": TRAINER_IMAGE,
            "defaultNodePool": "cpu",
            "nodePools": {
                "cpu": {
                    "gpuType": "h100",
                    "gpusPerNode": 1,
                    "cpu": "1",
                    "memory": "2Gi",
                    "shmSize": "1Gi",
                    "nodeSelector": {"sobert.dev/pool": "cpu"},
                }
            },
            "storageSecret": "sobert-s3",
            "terminationGraceSeconds": 60,
            "ttlSecondsAfterFinished": 600,
            "rayClusterTtlSeconds": 10,
        },
    }


@pytest.fixture(scope="module")
def controller(cluster, s3, tmp_path_factory):
    """`helm install` of charts/sobert into the testbed; the controller runs as a pod."""
    import kubetestbed

    tools = kubetestbed.tools_dir()
    values = tmp_path_factory.mktemp("helm") / "values.yaml"
    values.write_text(yaml.safe_dump(_values(s3)))
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "create", "secret", "generic", "sobert-s3", "-n", NAMESPACE,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
    )
    home = tmp_path_factory.mktemp("helm-home")
    helm_env = {**os.environ, **{f"HELM_{k}_HOME": str(home / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
    result = subprocess.run(
        [str(tools / "helm4"), "install", "sobert", str(ROOT / "charts" / "sobert"), "-n", NAMESPACE, "-f", str(values),
         f"--kubeconfig={cluster.kubeconfig}", "--wait", "--timeout=180s"],
        capture_output=True, text=True, timeout=240, env=helm_env,
    )
    if result.returncode != 0:
        pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise AssertionError(f"helm install failed:\n{result.stdout}\n{result.stderr}\n{pods}")
    yield


def _upload(s3, path: Path, key: str) -> str:
    s3.client().upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def _run_status(cluster, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "sobertrun", name, "-n", NAMESPACE, "-o", "json", check=False)
    return (json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _wait_phase(cluster, name: str, phases: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = _run_status(cluster, name)
        if status.get("phase") in phases:
            return status
        time.sleep(2)
    pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    raise AssertionError(f"run {name} not in {phases} after {timeout}s: {json.dumps(status, indent=1)}\n{pods}")


def test_submit_tiny_two_nodes_runs_every_phase_to_succeeded(cluster, s3, controller, so_dump):
    posts = [_upload(s3, Path(p), f"dumps/{Path(p).name}") for p in so_dump["posts"]]
    comments = [_upload(s3, Path(p), f"dumps/{Path(p).name}") for p in so_dump["comments"]]
    quality = _upload(s3, shared_path("question_quality", "processed_valid_sample.jsonl"), "tasks/quality.jsonl")
    _sobertctl(
        cluster, s3, "submit", "tiny", "--backend", "kubernetes", "-n", NAMESPACE, "--name", "e2e",
        "--nodes", "2", "--procs-per-node", "1",
        "--storage", f"s3://{BUCKET}/runs", "--endpoint-url", s3.endpoint_url,
        "--posts", *posts, "--comments", *comments, "--finetune", f"quality={quality}",
    )
    status = _wait_phase(cluster, "e2e", {"Succeeded", "Failed"}, timeout=900)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)

    # Pretraining ran on both nodes, as one job of two pods, and its progress reached the status.
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    pretrain = [p for p in pods if p["metadata"]["name"].startswith("e2e-pretrain-")]
    assert sorted(p["spec"]["nodeName"] for p in pretrain) == ["node-0", "node-1"]
    assert all(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0 for p in pretrain)
    assert status["pretrain"]["step"] == 40 and status["pretrain"]["world_size"] == 2
    assert 0 <= status["finetune"]["quality"]["macro_f1"] <= 1, status["finetune"]

    # What a user runs next.
    listing = _sobertctl(cluster, s3, "status", "-n", NAMESPACE).stdout
    assert "e2e" in listing and "Succeeded" in listing
    logs = _sobertctl(cluster, s3, "logs", "e2e", "--stage", "pretrain", "-n", NAMESPACE).stdout
    assert "step" in logs.lower(), logs[-2000:]
    report = _sobertctl(cluster, s3, "report", "e2e", "--storage", f"s3://{BUCKET}/runs", "--endpoint-url", s3.endpoint_url)
    assert "pretrain" in report.stdout and "$" in report.stdout

    # The controller ran with the chart's namespaced Role and never hit a permission it lacks.
    controller_log = cluster.kubectl("logs", "-n", NAMESPACE, "deploy/sobert").stdout
    assert "Forbidden" not in controller_log, controller_log[-3000:]
