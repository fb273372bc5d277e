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
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PYTORCH_INIT_CONTAINER, ROOT, shared_path
from sobert_api import paths
from sobert_operator.cost.money import usd
from sobert_operator.render.pretrain import PYTORCHJOB_CONTAINER

pytestmark = pytest.mark.integration
NAMESPACE = "sobert"
TRAINER_IMAGE = "ghcr.io/sobert-dev/sobert-trainer:0.1.0"
BUCKET = "sobert-e2e"
RESYNC_SECONDS = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, workload_images):
    from sobert_testbed import cluster as kubecluster

    # One (fake) GPU per node, as in the pool below: a 2-node job must span both nodes.
    labels = {"sobert.dev/pool": "cpu"}
    with kubecluster.cluster(tmp_path_factory.mktemp("cluster"), nodes=2, node_labels=labels, gpus=1) as c:
        kubecluster.start_training_operator(c, PYTORCH_INIT_CONTAINER)
        kubecluster.start_kuberay(c)
        yield c


@pytest.fixture(scope="module")
def s3(cluster, tmp_path_factory):
    from sobert_testbed import s3 as s3server

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
    """The chart's values for the testbed: one CPU pool whose nodes advertise a (fake) GPU each;
    the controller re-checks each run every RESYNC_SECONDS (spend, budget, vanished pods)."""
    return {
        "metrics": {"port": 0},
        "resyncSeconds": RESYNC_SECONDS,
        "cluster": {
            "trainerImage": TRAINER_IMAGE,
            "defaultNodePool": "cpu",
            "nodePools": {
                "cpu": {
                    "gpuType": "h100",
                    "gpusPerNode": 1,
                    "cpu": "1",
                    "memory": "6Gi",  # the pods' limit: a rank with its loader workers peaks near 2 GiB
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
    from sobert_testbed import apiserver

    values = _values(s3)
    values["cluster"].update(cluster_values)
    (workdir / "values.yaml").write_text(yaml.safe_dump(values))
    apiserver.create_namespace(cluster.testbed, namespace, pod_security="restricted")
    cluster.kubectl(
        "create", "secret", "generic", "sobert-s3", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
    )  # fmt: skip
    helm_env = {**os.environ, **{f"HELM_{k}_HOME": str(workdir / k.lower()) for k in ("CACHE", "CONFIG", "DATA")}}
    result = subprocess.run(
        [str(apiserver.tools_dir() / "helm4"), "install", "sobert", str(ROOT / "charts" / "sobert"), "-n", namespace,
         "-f", str(workdir / "values.yaml"), f"--kubeconfig={cluster.kubeconfig}", "--wait", "--timeout=180s"],
        capture_output=True, text=True, timeout=240, env=helm_env,
    )  # fmt: skip
    if result.returncode != 0:
        pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise AssertionError(f"helm install failed:\n{result.stdout}\n{result.stderr}\n{pods}")
    # The controller runs from its built image under runc (the chart's securityContext with it).
    selector = "app.kubernetes.io/name=sobert,app.kubernetes.io/component=controller"
    ids = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o",
                          "jsonpath={.items[*].status.containerStatuses[*].containerID}").stdout.split()  # fmt: skip
    assert ids and all(i.startswith("runc://") for i in ids), ids


@pytest.fixture(scope="module")
def controller(cluster, s3, controller_image, tmp_path_factory):
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
    cluster, name: str, phases: set[str], timeout: float, namespace: str = NAMESPACE, pods: dict | None = None
) -> dict[str, Any]:
    """Wait for the run to reach one of `phases`; `pods` collects pod name -> spec of each pod
    scheduled meanwhile (its node, grace period)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if pods is not None:
            out = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json", check=False).stdout
            for pod in json.loads(out or '{"items": []}')["items"]:
                if pod["spec"].get("nodeName"):
                    pods[pod["metadata"]["name"]] = pod["spec"]
        status = _run_status(cluster, name, namespace)
        if status.get("phase") in phases:
            return status
        time.sleep(2)
    pods = cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
    raise AssertionError(f"run {name} not in {phases} after {timeout}s: {json.dumps(status, indent=1)}\n{pods}")


@pytest.mark.timeout(2400)  # waits: Finetuning 900 s, the RayJobs in flight 300 s, the end 900 s; then the CLI
def test_submit_tiny_two_nodes_runs_every_phase_to_succeeded(cluster, s3, controller, so_dump):
    quality = _upload(s3, shared_path("question_quality", "processed_valid_sample.jsonl"), "tasks/quality.jsonl")
    closed = _upload(s3, shared_path("closed_questions", "sample_2000.csv"), "tasks/closed.csv")
    tasks = ("--finetune", f"quality={quality}", "--finetune", f"closed={closed}")
    with cluster.pod_history(NAMESPACE) as history:  # every controller pod, the killed one included
        _submit_tiny(cluster, s3, so_dump, "e2e", NAMESPACE, *tasks)
        pods: dict[str, dict] = {}
        # The controller pod is killed while the tasks' RayJobs run; its successor picks them up.
        _wait_phase(cluster, "e2e", {"Finetuning"}, timeout=900, pods=pods)
        # The restart lands while the tasks run: both RayJobs in flight, at least one Running.
        running = _wait_for(
            "the tasks' RayJobs in flight, one Running",
            lambda: _in_flight(states := _rayjob_states(cluster, "e2e")) and states,
            300,
            show=lambda: str(_rayjob_states(cluster, "e2e")),
        )
        finetuning = _jobs_of(cluster, "e2e")
        _restart_controller(cluster, NAMESPACE)
        status = _wait_phase(cluster, "e2e", {"Succeeded", "Failed"}, timeout=900, pods=pods)
    assert set(running) == {"closed", "quality"} and _in_flight(running), running
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert _jobs_of(cluster, "e2e") == finetuning, finetuning
    assert sorted(finetuning["rayjobs.ray.io"]) == ["e2e-finetune-closed", "e2e-finetune-quality"], finetuning

    # Pretraining ran as one job of two pods, one per node (one GPU each), and its progress
    # reached the status.
    pretrain = {pod: spec["nodeName"] for pod, spec in pods.items() if pod.startswith("e2e-pretrain-")}
    assert sorted(pretrain.values()) == ["node-0", "node-1"], pretrain
    assert status["pretrain"]["step"] == status["pretrain"]["trainIters"] == 40, status["pretrain"]
    assert _progress(s3, "e2e")[-1]["world_size"] == 2
    for task, metric in (("quality", "macro_f1"), ("closed", "macro_f1")):
        result = status["finetune"][task]
        assert result["metric"] == metric and 0 <= result["score"] <= 1 and result["hf_step"] == 40, (task, result)

    # The tasks' Ray clusters (GPU workers included) are gone soon after their jobs
    # (rayClusterTtlSeconds 10 here); the drivers' output outlives them in storage; the ledger
    # priced the clusters' pods.
    deadline = time.monotonic() + 180
    while cluster.kubectl("get", "rayclusters", "-n", NAMESPACE, "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, "a finished task's Ray cluster is still up"
        time.sleep(2)
    for task in ("quality", "closed"):
        assert f"finetune {task}:" in _storage(s3).read_bytes(paths.finetune_driver_log_key("e2e", task)).decode()
    deadline = time.monotonic() + 60  # the controller's resync (RESYNC_SECONDS here) closes the vanished pods
    while (status := _run_status(cluster, "e2e"))["cost"].get("openPods"):
        assert time.monotonic() < deadline, status["cost"]
        time.sleep(3)
    assert status["cost"]["spentUsd"] > 0

    # What a user runs next.
    listing = _sobertctl(cluster, s3, "status", "-n", NAMESPACE).stdout
    assert "e2e" in listing and "Succeeded" in listing
    logs = _sobertctl(cluster, s3, "logs", "e2e", "--stage", "pretrain", "-n", NAMESPACE)
    pods = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
    assert "pretrain step" in logs.stdout, (logs.stdout[-2000:], logs.stderr[-2000:], pods)
    report = _sobertctl(
        cluster, s3, "report", "e2e", "--storage", f"s3://{BUCKET}/runs", "--endpoint-url", s3.endpoint_url
    )
    # The status says the run is done; the report prices each task's Ray cluster idling after its
    # job until its TTL removed it, and lists the controller's ETA estimates stage by stage.
    assert status["progress"]["progressPercentage"] == 100 and status["progress"]["estimatedRemainingSeconds"] == 0
    assert "100%" in listing
    figures = _storage(s3).read_json(f"{paths.cost_prefix('e2e')}/report.json")
    # What the user reads is what the run's report.json holds (its spend closed, so regenerating
    # the report gives the same figures).
    spent = figures["spent"]
    assert f"Spent: {usd(spent['usd'])} over {spent['device_hours']:.4f} device-hours" in report.stdout, report.stdout
    assert spent["usd"] == pytest.approx(status["cost"]["spentUsd"], abs=0.005), (spent, status["cost"])
    assert "Step: 40 of 40" in report.stdout, report.stdout
    for task in ("quality", "closed"):
        phase = figures["goodput"]["by_phase"][f"finetune/{task}"]
        assert phase["idle_cluster"] > 0 and phase["productive"] > 0, (task, phase)
    stages = [p["stage"] for p in figures["eta"]["points"]]
    seen, order = [s for s in dict.fromkeys(stages) if s], ["prepare", "pretrain", "convert", "finetune"]
    assert seen == sorted(seen, key=order.index) and {"pretrain", "finetune"} <= set(seen), stages

    # The controllers (the killed one and its successor) ran with the chart's namespaced Role and
    # never hit a permission they lack.
    controllers = [
        (p["metadata"]["name"], uid) for uid, p in history.pods.items() if p["metadata"]["name"].startswith("sobert-")
    ]
    assert len(controllers) >= 2, controllers
    for name, uid in controllers:
        controller_log = cluster.pod_logs(NAMESPACE, name, uid, "controller")
        assert controller_log and "Forbidden" not in controller_log, (name, controller_log[-3000:])


def _storage(s3):
    from sobert_api.storage import Storage

    return Storage.open(f"s3://{BUCKET}/runs", s3.endpoint_url, (s3.access_key, s3.secret_key))


def _progress(s3, run: str) -> list[dict[str, Any]]:
    from sobert_api.progress import read_progress

    return read_progress(_storage(s3), run)


def _wait_step(s3, run: str, step: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = _progress(s3, run)
        if records and records[-1]["step"] >= step:
            return
        time.sleep(1)
    raise AssertionError(f"run {run} did not reach step {step} in {timeout}s")


def _restart_controller(cluster, namespace: str) -> None:
    """Kill the controller's pod (no grace); its Deployment starts another. The run's pods carry
    `app.kubernetes.io/name: sobert` too: select the controller's component."""
    selector = "app.kubernetes.io/name=sobert,app.kubernetes.io/component=controller"
    cluster.kubectl("delete", "pod", "-n", namespace, "-l", selector, "--wait=false", "--grace-period=0")


def _pod_uid(cluster, name: str) -> str | None:
    out = cluster.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}", check=False)
    return out.stdout or None


def _unschedulable_replica(cluster, run: str, history) -> str | None:
    """The uid of a pretraining pod of `run` for which the scheduler has found no node."""
    for uid, pod in list(history.pods.items()):  # the watch thread adds to it meanwhile
        conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        unschedulable = conditions.get("PodScheduled", {}).get("reason") == "Unschedulable"
        if pod["metadata"]["name"].startswith(f"{run}-pretrain-") and uid not in history.deleted and unschedulable:
            return uid
    return None


def _in_flight(states: dict[str, str]) -> bool:
    """Every task's RayJob started and not finished, and one of them running its driver."""
    return len(states) == 2 and set(states.values()) <= {"Initializing", "Running"} and "Running" in states.values()


def _rayjob_states(cluster, run: str) -> dict[str, str]:
    """task -> the RayJob's jobDeploymentStatus."""
    out = cluster.kubectl("get", "rayjobs", "-n", NAMESPACE, "-l", f"sobert.dev/run={run}", "-o", "json").stdout
    return {
        job["metadata"]["labels"]["sobert.dev/task"]: (job.get("status") or {}).get("jobDeploymentStatus", "")
        for job in json.loads(out)["items"]
    }


def _jobs_of(cluster, run: str) -> dict[str, dict[str, str]]:
    """kind -> {name: uid} of the objects the controller created for `run` (by its label). By uid:
    an object deleted and created again under its fixed name is a different one."""
    found: dict[str, dict[str, str]] = {}
    template = 'jsonpath={range .items[*]}{.metadata.name}{" "}{.metadata.uid}{"\\n"}{end}'
    for kind in ("jobs.batch", "pytorchjobs.kubeflow.org", "rayjobs.ray.io"):
        out = cluster.kubectl("get", kind, "-n", NAMESPACE, "-l", f"sobert.dev/run={run}", "-o", template).stdout
        found[kind] = dict(line.split() for line in out.splitlines() if line.strip())
    return found


@pytest.mark.timeout(2000)  # waits: step 5 600 s, the drain 180 s, the replacement 180 s, the end 900 s
def test_preempted_pretrain_pod_restarts_and_resumes_and_a_controller_restart_duplicates_nothing(
    cluster, s3, controller, so_dump
):
    """A node is drained mid-run (`kubectl drain`: cordoned, its pods evicted through the Eviction
    API, SIGTERM then the grace period): the worker exits 143 after the checkpoint of the step the
    ranks reached (rank 0 says so after the save: it is the stop's, even where it falls on a
    periodic step). The Training Operator starts the replicas again; the worker's waits
    unschedulable while its node is cordoned, and once the node is back the job resumes from that
    checkpoint to the same final step. The controller pod is killed meanwhile; its successor
    picks the run up without creating any object twice."""
    _submit_tiny(cluster, s3, so_dump, "preempt", NAMESPACE)
    with cluster.pod_history(NAMESPACE) as history:
        _wait_step(s3, "preempt", 5, timeout=600)
        before = _jobs_of(cluster, "preempt")
        evicted = _pod_uid(cluster, "preempt-pretrain-worker-0")
        node = history.pods[evicted]["spec"]["nodeName"]
        try:
            drained = cluster.kubectl(
                "drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s", check=False
            )
            _restart_controller(cluster, NAMESPACE)
            assert drained.returncode == 0, (drained.stdout, drained.stderr)
            assert f"evicting pod {NAMESPACE}/preempt-pretrain-worker-0" in drained.stderr + drained.stdout, drained
            # The Training Operator, not the controller, brings the replicas back (the master stopped
            # with its peer) as new pods; one node's GPU is free, the other node is cordoned: one
            # replica waits unschedulable, whichever the scheduler placed second.
            pending = _wait_for(
                "the evicted worker gone and a replica unschedulable",
                lambda: evicted in history.deleted and _unschedulable_replica(cluster, "preempt", history),
                180,
            )
            assert history.exit_codes(evicted) == {PYTORCHJOB_CONTAINER: 143}, history.pods[evicted].get("status")
        finally:
            cluster.kubectl("uncordon", node, check=False)
        status = _wait_phase(cluster, "preempt", {"Succeeded", "Failed"}, timeout=900)
        assert history.pods[pending]["spec"].get("nodeName") == node  # placed once the node was back
        masters = [pod["metadata"]["uid"] for pod in history.named("preempt-pretrain-master-0")]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)

    steps = [r["step"] for r in _progress(s3, "preempt")]
    assert steps[-1] == 40
    # Rank 0 (the master, restarted when its peer stopped) checkpointed the step the ranks agreed to
    # stop at, and went on from it; the run never started over.
    master_log = "".join(cluster.pod_logs(NAMESPACE, "preempt-pretrain-master-0", uid, PYTORCHJOB_CONTAINER)
                         for uid in masters)  # fmt: skip
    stopped = re.search(r"SIGTERM received; checkpointed step (\d+)", master_log)
    resumed = re.search(r"pretrain: resumed from step (\d+)", master_log)
    assert stopped and resumed, master_log[-3000:]
    stopped_at = int(stopped.group(1))
    assert int(resumed.group(1)) == stopped_at and 5 <= stopped_at < 40, master_log[-3000:]
    assert stopped_at + 1 in steps and steps.count(1) == 1, steps
    after = _jobs_of(cluster, "preempt")
    assert after["pytorchjobs.kubeflow.org"] == before["pytorchjobs.kubeflow.org"], (before, after)
    assert list(after["pytorchjobs.kubeflow.org"]) == ["preempt-pretrain"], after
    assert len(after["jobs.batch"]) == 2  # one prepare, one convert
    job = json.loads(cluster.kubectl("get", "pytorchjob", "preempt-pretrain", "-n", NAMESPACE, "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}["Succeeded"] == "True"


@pytest.mark.timeout(1000)  # helm 240 s, the end 600 s, JobSet and Trainer started
def test_trainjob_target_pretrains_on_two_nodes(cluster, s3, so_dump, controller_image, tmp_path_factory):
    """The same pretraining through Kubeflow Trainer v2.2.1 and JobSet v0.11.1: the controller
    renders a TrainJob on the chart's TrainingRuntime (Trainer's `torch-distributed` with the grace
    period), whose patches carry the spec volume, scratch, shm, placement and user; Trainer makes a
    JobSet, JobSet the Jobs, the Job controller the pods."""
    from sobert_testbed import cluster as kubecluster

    kubecluster.start_jobset(cluster)
    kubecluster.start_trainer(cluster)
    namespace = "sobert-tj"
    _helm_install(cluster, s3, tmp_path_factory.mktemp("helm-tj"), namespace, pretrainTarget="trainjob")
    _submit_tiny(cluster, s3, so_dump, "tj", namespace)
    pods: dict[str, dict] = {}
    status = _wait_phase(cluster, "tj", {"Succeeded", "Failed"}, 600, namespace=namespace, pods=pods)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    pretrain = {pod: spec for pod, spec in pods.items() if pod.startswith("tj-pretrain")}
    assert sorted(spec["nodeName"] for spec in pretrain.values()) == ["node-0", "node-1"]
    # The pods the process kubelet ran had the grace period the launcher counts on to checkpoint
    # after SIGTERM (terminationGraceSeconds 60 here; the stock runtime's pods get 30 s).
    assert {spec["terminationGracePeriodSeconds"] for spec in pretrain.values()} == {60}, pretrain
    records = _progress(s3, "tj")
    assert records[-1]["step"] == 40 and records[-1]["world_size"] == 2
    trainjob = json.loads(cluster.kubectl("get", "trainjob", "tj-pretrain", "-n", namespace, "-o", "json").stdout)
    assert {c["type"]: c["status"] for c in trainjob["status"]["conditions"]}.get("Complete") == "True", trainjob


@pytest.mark.timeout(1500)  # waits: a pod 600 s, the failure 600 s, the ledger and the report 120 s each
def test_a_diverged_pretraining_fails_the_run_with_its_pods_error_through_a_controller_restart(
    cluster, s3, controller, so_dump
):
    """A worker exits 1 mid-training for a deliberately bad input (a learning rate that drives the
    weights past fp32's range by step 3; the trainer's NaN check stops it there). Under
    `restartPolicy: ExitCode` the Training Operator fails the PyTorchJob, nothing is retried, and
    the run is `Failed` with the stage, the operator's reason and the failing container's exit
    and last log lines in its status and in `sobertctl status`. The controller is restarted while
    pretraining heads for the failure: the outcome is the same and nothing is created twice. The
    spend stops and the report is written."""
    run = "diverge"
    with cluster.pod_history(NAMESPACE) as history:
        _submit_tiny(
            cluster, s3, so_dump, run, NAMESPACE,
            "--set", "train.lr=1e36", "--set", "train.min_lr=0", "--set", "train.log_interval=1",
        )  # fmt: skip
        _wait_for("a pretraining pod", lambda: _stage_pods(cluster, run, "pretrain"), 600,
                  show=lambda: json.dumps(_run_status(cluster, run), indent=1))  # fmt: skip
        before = _jobs_of(cluster, run)
        _restart_controller(cluster, NAMESPACE)
        status = _wait_phase(cluster, run, {"Failed", "Succeeded"}, timeout=600)
        controllers = [
            (pod["metadata"]["name"], uid)
            for uid, pod in history.pods.items()
            if pod["metadata"]["name"].startswith("sobert-")
        ]
    assert status["phase"] == "Failed" and status["stage"] == "pretrain", json.dumps(status, indent=1)
    failure = status["failure"]
    assert failure["stage"] == "pretrain" and failure["pod"].startswith(f"{run}-pretrain-"), failure
    assert (failure["container"], failure["exitCode"], failure["reason"]) == ("pytorch", 1, "Error"), failure
    assert failure.get("logTail"), json.dumps(status, indent=1)  # read from a rank whose pod the operator kept
    said = re.search(r"error: pretrain: the run diverged at step (\d+): non-finite gradients", failure["logTail"])
    assert said and 1 < int(said.group(1)) < 40, failure["logTail"]
    # The message: the stage, the operator's own reason, and the container's error line.
    assert status["message"].startswith("stage pretrain failed: "), status["message"]
    assert said.group(0) in status["message"] and f"{failure['pod']}: pytorch exited 1" in status["message"]
    job = json.loads(cluster.kubectl("get", "pytorchjob", f"{run}-pretrain", "-n", NAMESPACE, "-o", "json").stdout)
    conditions = {c["type"]: c for c in job["status"]["conditions"]}
    assert conditions["Failed"]["status"] == "True", job["status"]
    assert conditions["Failed"]["message"] in status["message"], (conditions["Failed"], status["message"])
    failed_pod = json.loads(cluster.kubectl("get", "pod", failure["pod"], "-n", NAMESPACE, "-o", "json").stdout)
    assert failed_pod["status"]["containerStatuses"][0]["restartCount"] == 0  # exit 1 is permanent: not retried
    shown = _sobertctl(cluster, s3, "status", run, "-n", NAMESPACE).stdout
    assert "Failed" in shown and said.group(0) in shown and "exit 1 (Error)" in shown, shown

    # Nothing created twice across the restart, and the controllers (the killed one too) had
    # every permission they used (reading the failed pod's log included).
    assert _jobs_of(cluster, run) == before, (before, _jobs_of(cluster, run))
    assert len(controllers) >= 2, controllers
    for name, uid in controllers:
        log = cluster.pod_logs(NAMESPACE, name, uid, "controller")
        assert log and "Forbidden" not in log, (name, log[-3000:])

    # The spend stops: no pod left to price, and the figure holds over resyncs; the report is written.
    cost = _wait_for(
        "the ledger closed",
        lambda: not (c := _run_status(cluster, run)["cost"]).get("openPods") and c,
        120,
        show=lambda: json.dumps(_run_status(cluster, run).get("cost"), indent=1),
    )
    spent = cost["spentUsd"]
    assert spent > 0, cost
    time.sleep(3 * RESYNC_SECONDS)
    assert _run_status(cluster, run)["cost"]["spentUsd"] == pytest.approx(spent)
    report = _wait_for(
        "report.json", lambda: _storage(s3).read_json_if_exists(f"{paths.cost_prefix(run)}/report.json"), 120
    )
    assert report["spent"]["usd"] == pytest.approx(spent, abs=0.005), (report["spent"], spent)


def _patch_budget(cluster, run: str, usd: float) -> None:
    """What a user does to change a running run's budget (`kubectl patch sobertrun`)."""
    patch = json.dumps({"spec": {"budget": {"usd": usd}}})
    cluster.kubectl("patch", "sobertrun", run, "-n", NAMESPACE, "--type=merge", "-p", patch)


def _wait_for(what: str, probe, timeout: float, show=lambda: "") -> Any:
    """Poll `probe` until it is truthy; on timeout, fail with `what` and what `show` returns."""
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}\n{show()}"
        time.sleep(1)
    return found


def _events(cluster, run: str) -> list[str]:
    out = cluster.kubectl(
        "get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={run}", "-o", "json"
    ).stdout  # fmt: skip
    return [event["reason"] for event in json.loads(out)["items"]]


def _stage_pods(cluster, run: str, stage: str) -> list[str]:
    out = cluster.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", f"sobert.dev/run={run},sobert.dev/stage={stage}", "-o", "name"
    ).stdout  # fmt: skip
    return out.split()


@pytest.mark.timeout(2100)  # waits: 120 + 600 + 120 + 120 + 180 + 120 + 60 + 600 s, a restart
def test_budget_running_out_checkpoints_and_suspends_and_a_raise_resumes_to_succeeded(cluster, s3, controller, so_dump):
    """The budget runs out while the 2-node pretraining runs: the controller warns, asks the
    trainer for a checkpoint, then suspends the PyTorchJob, and the Training Operator stops its
    pods (SIGTERM: one more checkpoint). Nothing is spent while it is suspended. A raise resumes
    the job from its checkpoint to the last step. The controller is restarted at the prepare stage
    and while the run is suspended; nothing is created twice."""
    from sobert_api.checkpoints import complete_checkpoints

    final_step = 300
    # Warn and checkpoint early, so that a budget cut to a few seconds of pretraining lands between
    # the checkpoint threshold and the end of the budget. A dataset of its own (the other runs'
    # is published already): the prepare stage runs, and the controller is killed during it.
    _submit_tiny(
        cluster, s3, so_dump, "budget", NAMESPACE, "--budget", "50",
        "--set", "budget.warn_fraction=0.1", "--set", "budget.checkpoint_fraction=0.2",
        "--set", f"train.train_tokens={final_step * 16 * 128}", "--set", "data.min_document_chars=40",
    )  # fmt: skip
    _wait_phase(cluster, "budget", {"Preparing"}, timeout=120)
    _restart_controller(cluster, NAMESPACE)
    _wait_step(s3, "budget", 10, timeout=600)
    # The spend the budget is cut from includes the pretraining pods (the controller has priced
    # them since they started; a restarted controller may not have yet).
    pretraining = {"budget-pretrain-master-0", "budget-pretrain-worker-0"}
    cost = _wait_for(
        "the pretraining pods priced",
        lambda: (c := _run_status(cluster, "budget")["cost"]).get("openPods", {}).keys() >= pretraining and c,
        60,
    )
    assert cost["action"] == "ok" and cost["burnUsdPerHour"] > 0, cost
    # The budget left lasts a third of the time the remaining steps take (at least 10 s), at the
    # run's burn rate: it runs out mid-pretraining whatever this machine's speed.
    records = _progress(s3, "budget")
    seconds_per_step = (records[-1]["time"] - records[0]["time"]) / (records[-1]["step"] - records[0]["step"])
    seconds = max(10.0, (final_step - records[-1]["step"]) * seconds_per_step / 3)
    budget_usd = cost["spentUsd"] + cost["burnUsdPerHour"] * seconds / 3600
    _patch_budget(cluster, "budget", budget_usd)

    # Over the checkpoint threshold at once: a warning, and a checkpoint request the trainer
    # answers at its next log interval.
    requested = _progress(s3, "budget")[-1]["step"]

    def status_now() -> str:  # what a failure shows: the run's status and the controller's last words
        log = cluster.kubectl("logs", "-n", NAMESPACE, "deploy/sobert", "--tail=40").stdout
        return json.dumps(_run_status(cluster, "budget"), indent=1) + "\ncontroller log:\n" + log

    _wait_for(
        "checkpoint requested",
        lambda: _run_status(cluster, "budget")["cost"].get("checkpointRequested"),
        60,
        show=lambda: f"budget {budget_usd}, at step {requested}: {status_now()}",
    )
    conditions = {c["type"]: c["status"] for c in _run_status(cluster, "budget")["conditions"]}
    assert conditions.get("BudgetWarning") == "True", conditions
    checkpoints = _storage(s3).child(paths.checkpoints_prefix("budget"))
    _wait_for("the requested checkpoint", lambda: any(s > requested for s in complete_checkpoints(checkpoints)), 120)

    # Then the budget is spent: the run stops, the job is suspended and its pods are gone.
    status = _wait_phase(cluster, "budget", {"BudgetStopped", "Succeeded", "Failed"}, timeout=180)
    assert status["phase"] == "BudgetStopped", json.dumps(status, indent=1)
    _wait_for("pretraining pods stopped", lambda: not _stage_pods(cluster, "budget", "pretrain"), 120, show=status_now)
    job = json.loads(cluster.kubectl("get", "pytorchjob", "budget-pretrain", "-n", NAMESPACE, "-o", "json").stdout)
    assert job["spec"]["runPolicy"]["suspend"] is True
    assert {c["type"]: c["status"] for c in job["status"]["conditions"]}.get("Suspended") == "True", job["status"]
    # The pods' SIGTERM checkpoint: at the step they were on, past every step they logged.
    stopped_at = complete_checkpoints(checkpoints)[-1]
    assert _progress(s3, "budget")[-1]["step"] <= stopped_at < final_step, (stopped_at, _progress(s3, "budget"))
    events = _events(cluster, "budget")
    assert {"BudgetWarning", "BudgetCheckpoint", "BudgetExceeded"} <= set(events), events
    before = _jobs_of(cluster, "budget")

    # Suspended, the run costs nothing (its pods are closed in the ledger), through a controller restart.
    _wait_for("ledger closed", lambda: not _run_status(cluster, "budget")["cost"].get("openPods"), 60, show=status_now)
    spent = _run_status(cluster, "budget")["cost"]["spentUsd"]
    _restart_controller(cluster, NAMESPACE)
    time.sleep(15)  # a few resyncs of the new controller
    status = _run_status(cluster, "budget")
    assert status["phase"] == "BudgetStopped" and status["cost"]["spentUsd"] == pytest.approx(spent), status["cost"]
    assert _stage_pods(cluster, "budget", "pretrain") == []

    # A raise resumes the same job, from the checkpoint, to the last step.
    _patch_budget(cluster, "budget", 50)
    status = _wait_phase(cluster, "budget", {"Succeeded", "Failed"}, timeout=600)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    steps = [r["step"] for r in _progress(s3, "budget")]
    assert steps[-1] == final_step
    # On from the checkpoint (a resumed run logs its first step), not from step 1 again.
    assert stopped_at + 1 in steps and steps.count(1) == 1, steps
    # The same jobs as before the suspension (none twice), and the convert stage's that follows pretraining.
    after = _jobs_of(cluster, "budget")
    convert = after["jobs.batch"].pop("budget-convert", None)
    assert convert is not None and after == before, (before, after)
    assert "BudgetRaised" in _events(cluster, "budget")


def _closed_with_a_bad_label_at(record: int, path: Path) -> Path:
    """The closed-questions sample with one record's `OpenStatus` misspelt, past the records the
    submit's input check reads (its first 100): a bad input that only the finetune stage finds."""
    import csv

    assert record > 100
    with shared_path("closed_questions", "sample_2000.csv").open(newline="", encoding="utf-8") as source:
        rows = list(csv.reader(source))
    rows[record][rows[0].index("OpenStatus")] = "opened"
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\n").writerows(rows)
    return path


@pytest.mark.timeout(1700)  # helm 240 s, the end 1,200 s, the report 120 s
def test_a_finetune_task_whose_driver_fails_leaves_the_others_to_finish_a_partial_success(
    cluster, s3, so_dump, controller_image, tmp_path_factory
):
    """One task's Ray driver fails (its file has a bad label at record 150, past what the submit's
    input check reads); KubeRay fails that RayJob (the chart's `backoffLimit: 0` here: no retry).
    The other task finishes, and the run ends `PartiallySucceeded`: each task's outcome in status,
    in `sobertctl status` and in the report, the failed task's driver log in storage."""
    namespace, run = "sobert-partial", "partial"
    workdir = tmp_path_factory.mktemp("partial")
    _helm_install(cluster, s3, tmp_path_factory.mktemp("helm-partial"), namespace, backoffLimit=0)
    quality = _upload(s3, shared_path("question_quality", "processed_valid_sample.jsonl"), "tasks/quality.jsonl")
    closed = _upload(s3, _closed_with_a_bad_label_at(150, workdir / "closed.csv"), "tasks/closed-bad.csv")
    _submit_tiny(
        cluster, s3, so_dump, run, namespace, "--finetune", f"quality={quality}", "--finetune", f"closed={closed}"
    )
    status = _wait_phase(cluster, run, {"PartiallySucceeded", "Succeeded", "Failed"}, 1200, namespace=namespace)
    assert status["phase"] == "PartiallySucceeded", json.dumps(status, indent=1)
    tasks = status["stages"]["finetune"]["tasks"]
    assert (tasks["quality"]["state"], tasks["closed"]["state"]) == ("succeeded", "failed"), tasks
    assert "1 of 2 finetune tasks failed (closed failed, quality succeeded)" in status["message"], status["message"]
    assert set(status["finetune"]) == {"quality"}, status["finetune"]  # the succeeded task's scores
    rayjob = json.loads(
        cluster.kubectl("get", "rayjob", f"{run}-finetune-closed", "-n", namespace, "-o", "json").stdout
    )
    assert rayjob["status"]["jobDeploymentStatus"] == "Failed", rayjob["status"]

    # The failed driver's own output, kept in storage: the loader's error naming the file and line.
    driver_log = _storage(s3).read_bytes(paths.finetune_driver_log_key(run, "closed")).decode()
    said = re.search(r"error: \S+closed-bad\.csv:\d+: OpenStatus 'opened' is not one of open", driver_log)
    assert said, driver_log[-3000:]
    shown = _sobertctl(cluster, s3, "status", run, "-n", namespace).stdout
    assert "PartiallySucceeded" in shown and "closed failed" in shown, shown
    assert f"driver log: s3://{BUCKET}/runs/{paths.finetune_driver_log_key(run, 'closed')}" in shown, shown
    report = _wait_for(
        "report.json", lambda: _storage(s3).read_json_if_exists(f"{paths.cost_prefix(run)}/report.json"), 120
    )
    assert set(report["finetune"]) == {"quality"} and set(report["finetune_failed"]) == {"closed"}, report
    assert said.group(0).removeprefix("error: ") in report["finetune_failed"]["closed"], report["finetune_failed"]
