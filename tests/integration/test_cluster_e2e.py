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
from sobert_api import paths

pytestmark = pytest.mark.integration
NAMESPACE = "sobert"
TRAINER_IMAGE = "ghcr.io/sobert-dev/sobert-trainer:0.1.0"
BUCKET = "sobert-e2e"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import kubecluster

    # One (fake) GPU per node, as in the pool below: a 2-node job must span both nodes.
    labels = {"sobert.dev/pool": "cpu"}
    with kubecluster.cluster(tmp_path_factory.mktemp("cluster"), nodes=2, node_labels=labels, gpus=1) as c:
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
        raise AssertionError(
            f"sobertctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
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


def _helm_install(cluster, s3, workdir: Path, namespace: str, **cluster_values: Any) -> None:
    """`helm install` of charts/sobert into `namespace`; the controller runs there as a pod."""
    import kubetestbed

    values = _values(s3)
    values["cluster"].update(cluster_values)
    (workdir / "values.yaml").write_text(yaml.safe_dump(values))
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "create", "secret", "generic", "sobert-s3", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
    )  # fmt: skip
    helm_env = {**os.environ, **{f"HELM_{k}_HOME": str(workdir / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
    result = subprocess.run(
        [str(kubetestbed.tools_dir() / "helm4"), "install", "sobert", str(ROOT / "charts" / "sobert"), "-n", namespace,
         "-f", str(workdir / "values.yaml"), f"--kubeconfig={cluster.kubeconfig}", "--wait", "--timeout=180s"],
        capture_output=True, text=True, timeout=240, env=helm_env,
    )  # fmt: skip
    if result.returncode != 0:
        pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise AssertionError(f"helm install failed:\n{result.stdout}\n{result.stderr}\n{pods}")


@pytest.fixture(scope="module")
def controller(cluster, s3, tmp_path_factory):
    _helm_install(cluster, s3, tmp_path_factory.mktemp("helm"), NAMESPACE)


def _upload(s3, path: Path, key: str) -> str:
    s3.client().upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def _submit_tiny(cluster, s3, so_dump, name: str, namespace: str, *extra: str) -> None:
    """`sobertctl submit tiny --backend kubernetes` of the real dump sample (uploaded to S3) on
    2 nodes x 1 process, storage on the testbed's S3."""
    posts = [_upload(s3, Path(p), f"dumps/{Path(p).name}") for p in so_dump["posts"]]
    comments = [_upload(s3, Path(p), f"dumps/{Path(p).name}") for p in so_dump["comments"]]
    _sobertctl(
        cluster, s3, "submit", "tiny", "--backend", "kubernetes", "-n", namespace, "--name", name,
        "--nodes", "2", "--procs-per-node", "1",
        "--storage", f"s3://{BUCKET}/runs", "--endpoint-url", s3.endpoint_url,
        "--posts", *posts, "--comments", *comments, *extra,
    )  # fmt: skip


def _run_status(cluster, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    out = cluster.kubectl("get", "sobertrun", name, "-n", namespace, "-o", "json", check=False)
    return (json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _wait_phase(
    cluster, name: str, phases: set[str], timeout: float, namespace: str = NAMESPACE, placements: dict | None = None
) -> dict[str, Any]:
    """Wait for the run to reach one of `phases`; `placements` collects pod name -> node meanwhile."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if placements is not None:
            out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False).stdout
            for pod in json.loads(out or '{"items": []}')["items"]:
                if pod["spec"].get("nodeName"):
                    placements[pod["metadata"]["name"]] = pod["spec"]["nodeName"]
        status = _run_status(cluster, name, namespace)
        if status.get("phase") in phases:
            return status
        time.sleep(2)
    pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    raise AssertionError(f"run {name} not in {phases} after {timeout}s: {json.dumps(status, indent=1)}\n{pods}")


def test_submit_tiny_two_nodes_runs_every_phase_to_succeeded(cluster, s3, controller, so_dump):
    quality = _upload(s3, shared_path("question_quality", "processed_valid_sample.jsonl"), "tasks/quality.jsonl")
    _submit_tiny(cluster, s3, so_dump, "e2e", NAMESPACE, "--finetune", f"quality={quality}")
    placements: dict[str, str] = {}
    status = _wait_phase(cluster, "e2e", {"Succeeded", "Failed"}, timeout=900, placements=placements)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)

    # Pretraining ran as one job of two pods, one per node (one GPU each), and its progress
    # reached the status.
    pretrain = {pod: node for pod, node in placements.items() if pod.startswith("e2e-pretrain-")}
    assert sorted(pretrain.values()) == ["node-0", "node-1"], pretrain
    assert status["pretrain"]["step"] == status["pretrain"]["trainIters"] == 40, status["pretrain"]
    assert _progress(s3, "e2e")[-1]["world_size"] == 2
    quality = status["finetune"]["quality"]
    assert quality["metric"] == "macro_f1" and 0 <= quality["score"] <= 1 and quality["hf_step"] == 40, quality

    # The task's Ray cluster (GPU workers included) is gone soon after its job (rayClusterTtlSeconds
    # 10 here); the driver's output outlives it in storage; the ledger priced the cluster's pods.
    deadline = time.monotonic() + 180
    while cluster.kubectl("get", "rayclusters", "-n", NAMESPACE, "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, "the finished task's Ray cluster is still up"
        time.sleep(2)
    assert "finetune quality:" in _storage(s3).read_bytes(paths.finetune_driver_log_key("e2e", "quality")).decode()
    deadline = time.monotonic() + 150  # the controller's resync (60 s) closes the vanished pods
    while (status := _run_status(cluster, "e2e"))["cost"].get("openPods"):
        assert time.monotonic() < deadline, status["cost"]
        time.sleep(3)
    assert status["cost"]["spentUsd"] > 0

    # What a user runs next.
    listing = _sobertctl(cluster, s3, "status", "-n", NAMESPACE).stdout
    assert "e2e" in listing and "Succeeded" in listing
    logs = _sobertctl(cluster, s3, "logs", "e2e", "--stage", "pretrain", "-n", NAMESPACE).stdout
    assert "step" in logs.lower(), logs[-2000:]
    report = _sobertctl(
        cluster, s3, "report", "e2e", "--storage", f"s3://{BUCKET}/runs", "--endpoint-url", s3.endpoint_url
    )
    assert "pretrain" in report.stdout and "$" in report.stdout

    # The controller ran with the chart's namespaced Role and never hit a permission it lacks.
    controller_log = cluster.kubectl("logs", "-n", NAMESPACE, "deploy/sobert").stdout
    assert "Forbidden" not in controller_log, controller_log[-3000:]


def _storage(s3):
    from sobert_trainer.storage import Storage

    return Storage.open(f"s3://{BUCKET}/runs", s3.endpoint_url, (s3.access_key, s3.secret_key))


def _progress(s3, run: str) -> list[dict[str, Any]]:
    from sobert_trainer.pretrain.progress import read_progress

    return read_progress(_storage(s3), paths.progress_key(run))


def _wait_step(s3, run: str, step: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = _progress(s3, run)
        if records and records[-1]["step"] >= step:
            return
        time.sleep(1)
    raise AssertionError(f"run {run} did not reach step {step} in {timeout}s")


def _pod_uid(cluster, name: str) -> str | None:
    out = cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}", check=False)
    return out.stdout or None


def _jobs_of(cluster, run: str) -> dict[str, list[str]]:
    """kind -> names of the objects the controller created for `run` (by its label)."""
    found: dict[str, list[str]] = {}
    for kind in ("jobs.batch", "pytorchjobs.kubeflow.org", "rayjobs.ray.io"):
        out = cluster.kubectl("get", kind, "-n", NAMESPACE, "-l", f"sobert.dev/run={run}", "-o", "name").stdout
        found[kind] = sorted(out.split())
    return found


def test_preempted_pretrain_pod_restarts_and_resumes_and_a_controller_restart_duplicates_nothing(
    cluster, s3, controller, so_dump
):
    """A node's pod is evicted mid-run (graceful delete: SIGTERM, then the grace period): the
    Training Operator starts it again, the job resumes from the checkpoint the SIGTERM wrote and
    ends at the same final step. The controller pod is killed meanwhile; its successor picks the
    run up without creating any object twice."""
    _submit_tiny(cluster, s3, so_dump, "preempt", NAMESPACE)
    _wait_step(s3, "preempt", 10, timeout=600)
    before = _jobs_of(cluster, "preempt")
    evicted = _pod_uid(cluster, "preempt-pretrain-worker-0")
    cluster.kubectl("delete", "pod", "preempt-pretrain-worker-0", "-n", NAMESPACE, "--wait=false")
    cluster.kubectl("delete", "pod", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=sobert", "--wait=false")
    # The Training Operator, not the controller, brings the evicted replica back as a new pod.
    deadline = time.monotonic() + 180
    while _pod_uid(cluster, "preempt-pretrain-worker-0") in (None, evicted):
        assert time.monotonic() < deadline, "the evicted worker was not replaced"
        time.sleep(0.5)
    status = _wait_phase(cluster, "preempt", {"Succeeded", "Failed"}, timeout=900)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)

    records = _progress(s3, "preempt")
    assert records[-1]["step"] == 40
    # The SIGTERM's checkpoint is the one step off the logging grid (every 5), and the run went
    # on from it to the last step.
    stopped = [r["step"] for r in records if r["step"] % 5 and r["step"] != 1]
    assert len(stopped) == 1, [r["step"] for r in records]
    after = _jobs_of(cluster, "preempt")
    assert (
        after["pytorchjobs.kubeflow.org"]
        == before["pytorchjobs.kubeflow.org"]
        == ["pytorchjob.kubeflow.org/preempt-pretrain"]
    )
    assert len(after["jobs.batch"]) == 2  # one prepare, one convert
    job = json.loads(cluster.kubectl("get", "pytorchjob", "preempt-pretrain", "-n", NAMESPACE, "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Succeeded"] == "True"


def test_trainjob_target_pretrains_on_two_nodes(cluster, s3, so_dump, tmp_path_factory):
    """The same pretraining through Kubeflow Trainer v2.2.1 and JobSet v0.11.1: the controller
    renders a TrainJob on the `torch-distributed` runtime, whose patches carry the spec volume,
    scratch, shm, placement and user; Trainer makes a JobSet, JobSet the Jobs, the Job controller
    the pods."""
    import kubecluster

    kubecluster.start_jobset(cluster)
    kubecluster.start_trainer(cluster)
    namespace = "sobert-tj"
    _helm_install(cluster, s3, tmp_path_factory.mktemp("helm-tj"), namespace, pretrainTarget="trainjob")
    _submit_tiny(cluster, s3, so_dump, "tj", namespace)
    placements: dict[str, str] = {}
    status = _wait_phase(cluster, "tj", {"Succeeded", "Failed"}, 600, namespace=namespace, placements=placements)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert sorted(node for pod, node in placements.items() if pod.startswith("tj-pretrain")) == ["node-0", "node-1"]
    records = _progress(s3, "tj")
    assert records[-1]["step"] == 40 and records[-1]["world_size"] == 2
    trainjob = json.loads(cluster.kubectl("get", "trainjob", "tj-pretrain", "-n", namespace, "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in trainjob["status"]["conditions"]}.get("Complete") == "True", trainjob
