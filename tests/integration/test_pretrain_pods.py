"""The rendered PyTorchJob run by the Kubeflow Training Operator v1.9.3 on the cluster testbed (the
real control plane; the process kubelet runs each pod, see docs/testbed.md), against a reference:

- two nodes x one process reach the final step with the loss curve of one node x two processes;
- a pod deleted mid-run (the SIGTERM of a drain or a preemption): the kubelet reports its exit 143,
  with a complete checkpoint of the step it stopped at; the operator recreates it (exit 143 is
  retryable under `restartPolicy: ExitCode`), and the run resumes and matches the uninterrupted
  run step for step, ignoring a checkpoint whose save was cut short;
- the SIGTERM lands while a checkpoint is being written: that save completes, then the stop's
  own, then exit 143.

Each pod has its own empty /scratch (an emptyDir): nothing is shared between nodes but S3, here
SeaweedFS on the pod network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import PYTORCH_INIT_CONTAINER
from pretrain_runs import assert_same_curve, assert_same_grad_norm, first_grad_norm, loss_curve, numerics_spec
from sobert_api import paths
from sobert_api.checkpoints import checkpoint_name, complete_checkpoints
from sobert_api.dataset import dataset_id
from sobert_api.progress import read_progress
from sobert_api.spec import RunSpec
from sobert_api.stages import EXIT_PEER_LOST
from sobert_api.storage import Storage
from sobert_operator.cluster import ClusterConfig
from sobert_operator.render.common import spec_configmap
from sobert_operator.render.pretrain import PYTORCHJOB_CONTAINER, render_pytorchjob
from sobert_testbed import apiserver
from sobert_testbed import cluster as kubecluster
from sobert_testbed import s3 as s3server

pytestmark = pytest.mark.integration
NAMESPACE = "pods"
SECRET = "sobert-s3"
POOL_LABEL = {"sobert.dev/pool": "cpu"}
GRACE_SECONDS = 120
CLUSTER = ClusterConfig.model_validate(
    {
        "trainer_image": "ghcr.io/sobert-dev/sobert-trainer:0.1.0",
        # Two (fake) GPUs per node: a pod per node with one or two processes.
        "node_pools": {
            "cpu": {
                "gpu_type": "h100",
                "gpus_per_node": 2,
                "cpu": "1",
                "memory": "6Gi",  # the pods' limit: two ranks with their loader workers peak near 3 GiB
                "shm_size": "1Gi",
                "node_selector": POOL_LABEL,
            }
        },
        "default_node_pool": "cpu",
        "storage_secret": SECRET,
        "termination_grace_seconds": GRACE_SECONDS,
    }
)


def wait_for(what: str, probe, timeout: float = 600, show=lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"not after {timeout}s: {what}\n{show()}"
        time.sleep(0.5)
    return found


class Runs:
    """PyTorchJobs of tiny numerics runs on the cluster, their storage on the pod network's S3."""

    def __init__(self, kube, s3, bucket: str, dump: dict[str, list[str]]):
        self.kube, self.s3, self.bucket, self.dump = kube, s3, bucket, dump
        self.dataset_id = ""
        self.reference: RunSpec | None = None

    def spec(self, name: str, **parallel: int) -> RunSpec:
        return numerics_spec(
            name,
            f"s3://{self.bucket}/sobert",
            self.dump,
            backend="kubernetes",
            parallel=parallel,
            storage={"endpoint_url": self.s3.endpoint_url},
        )

    def storage(self, spec: RunSpec) -> Storage:
        return Storage.open(spec.storage.uri, spec.storage.endpoint_url, (self.s3.access_key, self.s3.secret_key))

    def curve(self, spec: RunSpec) -> dict[int, float]:
        return loss_curve(spec, self.storage(spec))

    def steps(self, spec: RunSpec) -> list[int]:
        return [record["step"] for record in read_progress(self.storage(spec), spec.name)]

    def create(self, spec: RunSpec, cluster: ClusterConfig = CLUSTER) -> dict[str, Any]:
        """The run's spec ConfigMap and PyTorchJob, as the controller renders them, created."""
        job = render_pytorchjob(spec, cluster, self.dataset_id)
        documents = [spec_configmap(spec), job]
        self.kube.kubectl("create", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump_all(documents))
        return job

    def job_status(self, spec: RunSpec) -> dict[str, str]:
        out = self.kube.kubectl("get", "pytorchjob", f"{spec.name}-pretrain", "-n", NAMESPACE, "-o", "json").stdout
        return {c["type"]: c["status"] for c in (json.loads(out).get("status") or {}).get("conditions") or []}

    def describe(self, spec: RunSpec) -> str:
        pods = self.kube.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
        return f"{self.job_status(spec)}\n{pods}"

    def run(self, spec: RunSpec, timeout: float = 900) -> None:
        self.create(spec)
        finished = wait_for(
            f"PyTorchJob {spec.name}-pretrain finished",
            lambda: {"Succeeded", "Failed"} & {k for k, v in self.job_status(spec).items() if v == "True"},
            timeout,
            show=lambda: self.describe(spec),
        )
        assert finished == {"Succeeded"}, self.describe(spec)

    def pod_uid(self, name: str) -> str | None:
        out = self.kube.kubectl("get", "pod", name, "-n", NAMESPACE, "-o", "jsonpath={.metadata.uid}", check=False)
        return out.stdout or None


@pytest.fixture(scope="module")
def runs(tmp_path_factory, so_dump, trainer_image):
    """A two-node cluster with the Training Operator, S3 on its pod network with the dump and the
    prepared dataset, and one node x two processes pretrained to the end as the reference."""
    with kubecluster.cluster(tmp_path_factory.mktemp("cluster"), nodes=2, node_labels=POOL_LABEL, gpus=2) as kube:
        kubecluster.start_training_operator(kube, PYTORCH_INIT_CONTAINER)
        s3 = s3server.start(tmp_path_factory.mktemp("s3-pods"), address=kube.gateway)
        try:
            yield _prepared(kube, s3, so_dump)
        finally:
            s3server.stop(s3)


def _prepared(kube, s3, so_dump) -> Runs:
    from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset

    client = s3.client()
    bucket = "pods-" + secrets.token_hex(4)
    client.create_bucket(Bucket=bucket)
    dump: dict[str, list[str]] = {}
    for kind, files in so_dump.items():
        dump[kind] = []
        for path in files:
            key = f"dumps/{Path(path).name}"
            client.upload_file(path, bucket, key)
            dump[kind].append(f"s3://{bucket}/{key}")
    apiserver.create_namespace(kube.testbed, NAMESPACE, pod_security="restricted")
    kube.kubectl(
        "create", "secret", "generic", SECRET, "-n", NAMESPACE,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3.access_key}", f"--from-literal=AWS_SECRET_ACCESS_KEY={s3.secret_key}",
    )  # fmt: skip
    runs = Runs(kube, s3, bucket, dump)
    reference = runs.spec("ref", nodes=1, procs_per_node=2)
    with pytest.MonkeyPatch.context() as env:  # prepare runs in this process, with the server's keys
        for key, value in s3.env().items():
            env.setenv(key, value)
        prepare_dataset(PrepareConfig.from_spec(reference), runs.storage(reference), dataset_id(reference))
    runs.dataset_id = dataset_id(reference)
    runs.run(reference)
    runs.reference = reference
    return runs


@pytest.mark.timeout(1900)  # the module's reference run 900 s, this run 900 s
def test_two_nodes_match_one_node_of_the_same_world_size(runs):
    spec = runs.spec("nodes2", nodes=2, procs_per_node=1)
    assert runs.reference is not None
    job = runs.create(spec)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    wait_for("2-node job finished", lambda: runs.job_status(spec).get("Succeeded") == "True", 900,
             show=lambda: runs.describe(spec))  # fmt: skip
    # Rank 0 built megatron's sample index and published it; the other node fetched it.
    assert runs.storage(spec).read_manifest(paths.dataset_index_prefix(spec.name)) is not None
    reference_norm = first_grad_norm(runs.reference, runs.storage(runs.reference))
    assert_same_grad_norm(first_grad_norm(spec, runs.storage(spec)), reference_norm, "2 nodes vs 1")
    curve = runs.curve(spec)
    assert max(curve) == spec.train_iters
    assert_same_curve(curve, runs.curve(runs.reference), "2 nodes x 1 vs 1 node x 2")
    assert read_progress(runs.storage(spec), spec.name)[-1]["world_size"] == 2


def _delete_when(runs: Runs, spec: RunSpec, history, ready) -> tuple[str, str]:
    """Once `ready()`, delete the run's master pod as a drain does (graceful: SIGTERM, then the
    grace period); its name and uid."""
    pod = f"{spec.name}-pretrain-master-0"
    wait_for(f"{spec.name} ready to stop", ready, 600, show=lambda: runs.describe(spec))
    uid = runs.pod_uid(pod)
    assert uid is not None
    runs.kube.kubectl("delete", "pod", pod, "-n", NAMESPACE, "--wait=false")
    wait_for(f"{pod} reported and removed", lambda: uid in history.deleted, GRACE_SECONDS + 30,
             show=lambda: runs.describe(spec))  # fmt: skip
    return pod, uid


@pytest.mark.timeout(1700)  # waits: ready 600 s, the pod's end 150 s, the job's 900 s
def test_preempted_pod_exits_143_with_a_checkpoint_and_resumes_identically(runs):
    spec = runs.spec("preempt", nodes=1, procs_per_node=2)
    storage = runs.storage(spec)
    checkpoints = storage.child(paths.checkpoints_prefix(spec.name))
    with runs.kube.pod_history(NAMESPACE) as history:
        runs.create(spec)
        pod, uid = _delete_when(runs, spec, history, lambda: any(step >= 5 for step in runs.steps(spec)))
        # The kubelet reported the container's exit before the pod went: the SIGTERM checkpoint's 143.
        assert history.exit_codes(uid) == {PYTORCHJOB_CONTAINER: 143}, history.pods[uid].get("status")
        stopped_log = runs.kube.pod_logs(NAMESPACE, pod, uid, PYTORCHJOB_CONTAINER)
    match = re.search(r"SIGTERM received; checkpointed step (\d+)", stopped_log)
    assert match, stopped_log[-3000:]
    stopped_at = int(match.group(1))
    assert 5 <= stopped_at < spec.train_iters
    # The newest checkpoint is the stop's (the recreated pod needs far longer to reach a save of its own).
    assert complete_checkpoints(checkpoints)[-1] == stopped_at
    manifest = checkpoints.read_manifest(checkpoint_name(stopped_at))
    assert manifest["step"] == stopped_at and manifest["files"]

    # A save of the final step cut short: files, a part list, no manifest. Never to be loaded.
    partial = checkpoint_name(spec.train_iters)
    checkpoints.write_bytes(f"{partial}/__0_0.distcp", b"half a shard")
    checkpoints.write_json(f"{partial}/.parts/node-7.json", {"__0_0.distcp": {"bytes": 12, "sha256": "0" * 64}})
    assert complete_checkpoints(checkpoints)[-1] == stopped_at

    # The Training Operator recreated the pod (a new uid, an empty scratch); the run ends.
    wait_for("the preempted job finished", lambda: runs.job_status(spec).get("Succeeded") == "True", 900,
             show=lambda: runs.describe(spec))  # fmt: skip
    restarted = runs.kube.kubectl("logs", pod, "-n", NAMESPACE).stdout
    assert runs.pod_uid(pod) not in (None, uid)
    assert f"resumed from step {stopped_at}" in restarted, restarted[-3000:]
    curve = runs.curve(spec)
    assert sorted(curve) == list(range(1, spec.train_iters + 1))
    assert runs.reference is not None
    assert_same_curve(curve, runs.curve(runs.reference), "preempted and resumed vs uninterrupted")
    final = checkpoints.read_manifest(partial)
    assert final is not None and "node-7" not in json.dumps(final)
    assert set(final["files"]) == set(manifest["files"])  # the same layout's files, nothing left over


@pytest.mark.timeout(1700)  # waits as the preemption test's
def test_sigterm_during_a_save_still_ends_with_a_complete_checkpoint(runs):
    """A checkpoint every step, so the SIGTERM lands while one is being written: megatron's
    checkpoint writer helper processes share the worker's process group, which torchrun signals
    whole. The save must complete, then the stop's own checkpoint, then exit 143."""
    spec = runs.spec("midsave", nodes=1, procs_per_node=2)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_interval": 1})})
    checkpoints = runs.storage(spec).child(paths.checkpoints_prefix(spec.name))
    with runs.kube.pod_history(NAMESPACE) as history:
        runs.create(spec)
        pod, uid = _delete_when(runs, spec, history, lambda: len(complete_checkpoints(checkpoints)) >= 2)
        assert history.exit_codes(uid) == {PYTORCHJOB_CONTAINER: 143}, history.pods[uid].get("status")
        stopped_log = runs.kube.pod_logs(NAMESPACE, pod, uid, PYTORCHJOB_CONTAINER)
    match = re.search(r"SIGTERM received; checkpointed step (\d+)", stopped_log)
    assert match, stopped_log[-3000:]
    stopped_at = int(match.group(1))
    assert complete_checkpoints(checkpoints)[-1] == stopped_at, stopped_log[-3000:]
    runs.kube.kubectl("delete", "pytorchjob", f"{spec.name}-pretrain", "-n", NAMESPACE, "--wait=false")


def _container_id(runs: Runs, pod: str) -> str | None:
    """The runtime's id of the pod's first container, from its status (`runc://<id>`)."""
    out = runs.kube.kubectl("get", "pod", pod, "-n", NAMESPACE, "-o", "json", check=False).stdout
    statuses = (json.loads(out).get("status") or {}).get("containerStatuses") if out else None
    found = (statuses or [{}])[0].get("containerID") or ""
    return found.removeprefix("runc://") or None


def _container_pids(container: str) -> list[int]:
    """The host pids of a running container's processes (`runc ps`)."""
    listed = subprocess.run(["runc", "ps", "--format", "json", container], capture_output=True, text=True)
    return json.loads(listed.stdout or "[]")


def _kill_every_process(container: str) -> None:
    """SIGKILL to every process of a running container at once, until none is left (a rank may
    fork meanwhile): what a crashed node does to them, with no signal to trap."""
    for _ in range(20):
        pids = _container_pids(container)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    raise AssertionError(f"{container}: processes left after 20 rounds of SIGKILL: {_container_pids(container)}")


def _ended(pid: int) -> bool:
    """Whether a process has died: gone, or a zombie its (stopped) parent has not reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


@pytest.mark.timeout(2000)  # waits: 600 + 300 + 120 + 900 s
def _early_checkpoints(runs: Runs, name: str, nodes: int, procs_per_node: int) -> tuple[RunSpec, Storage]:
    """A run that checkpoints every 5 steps, so that a fault lands with most of it ahead (a tiny
    run's steps take a fraction of a second here), and where its checkpoints are. Saves do not
    change the numerics."""
    spec = runs.spec(name, nodes=nodes, procs_per_node=procs_per_node)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_interval": 5})})
    return spec, runs.storage(spec).child(paths.checkpoints_prefix(spec.name))


def _past_a_checkpoint(runs: Runs, spec: RunSpec, checkpoints: Storage, fault: str) -> Callable[[], bool]:
    """A probe: the run has stepped past a complete checkpoint, and is far enough from its end for
    the test to `fault` it."""

    def probe() -> bool:
        saved, step = complete_checkpoints(checkpoints), max(runs.steps(spec), default=0)
        assert step < spec.train_iters - 10, f"the run got to step {step} before the test could {fault}"
        return bool(saved) and step > saved[-1]

    return probe


def test_a_pretraining_container_over_its_memory_limit_is_oom_killed_retried_and_resumes(runs):
    """A container past its memory limit, for real: its `/dev/shm` (a Memory emptyDir, whose pages
    are charged to the memory cgroup of the container that writes them, as on a node) is filled
    from inside the container (`runc exec`, what `kubectl exec ... dd` would do) until the kernel's
    OOM killer kills a rank. The container exits 137 and the kubelet
    reports it `OOMKilled`; under `restartPolicy: ExitCode` the Training Operator recreates the pod
    (137 is retryable), and the run resumes from its last complete checkpoint to the uninterrupted
    run's loss curve."""
    spec, checkpoints = _early_checkpoints(runs, "oom", nodes=1, procs_per_node=2)
    pool = CLUSTER.node_pools["cpu"]
    # /dev/shm as large as the memory limit, so that filling it reaches the limit, not ENOSPC.
    roomy = CLUSTER.model_copy(update={"node_pools": {"cpu": pool.model_copy(update={"shm_size": pool.memory})}})
    pod = f"{spec.name}-pretrain-master-0"

    past_a_checkpoint = _past_a_checkpoint(runs, spec, checkpoints, "fill its memory")
    with runs.kube.pod_history(NAMESPACE) as history:
        runs.create(spec, roomy)
        wait_for("a step past a checkpoint", past_a_checkpoint, 600, show=lambda: runs.describe(spec))
        saved = complete_checkpoints(checkpoints)[-1]
        uid, container = runs.pod_uid(pod), _container_id(runs, pod)
        assert uid is not None and container is not None, runs.describe(spec)
        # The kernel kills the process it scores worst, by resident memory: a rank, unless the
        # filler happens to score worse. The container's processes (torchrun, the ranks, their
        # loader workers) are made the likelier victims first (raising a score needs no privilege;
        # lowering the filler's would need CAP_SYS_RESOURCE, which this machine's root lacks). They
        # are stopped while the memory fills, so that the run cannot reach its end first on a busy
        # machine, and continued once the OOM killer has killed one of them.
        processes = _container_pids(container)
        for pid in processes:
            Path(f"/proc/{pid}/oom_score_adj").write_text("500")
            os.kill(pid, signal.SIGSTOP)
        fill = ["runc", "exec", container, "dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", f"count={8 * 1024}"]
        filler = subprocess.Popen(fill, stderr=subprocess.PIPE, text=True)
        try:
            wait_for("the OOM killer killed a process of the container",
                     lambda: filler.poll() is not None or any(map(_ended, processes)), 300)  # fmt: skip
        finally:
            for pid in set(_container_pids(container)) - set(processes):  # the filler: stopped, its pages freed
                os.kill(pid, signal.SIGKILL)
            filled = filler.communicate(timeout=60)[1]
            subprocess.run(["runc", "exec", container, "rm", "-f", "/dev/shm/fill"], capture_output=True)
            for pid in processes:
                if not _ended(pid):
                    os.kill(pid, signal.SIGCONT)
        wait_for(f"{pod}'s container reported ended", lambda: history.exit_codes(uid), 120,
                 show=lambda: f"dd: {filler.returncode} {filled}\n{runs.describe(spec)}")  # fmt: skip
        statuses = history.pods[uid]["status"]["containerStatuses"]
        terminated = statuses[0]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled"), (terminated, filled)
        assert "No space left" not in filled, filled  # the limit was reached, not the tmpfs's size
        killed_log = runs.kube.pod_logs(NAMESPACE, pod, uid, PYTORCHJOB_CONTAINER)

    wait_for("the OOM-killed job finished", lambda: runs.job_status(spec).get("Succeeded") == "True", 900,
             show=lambda: runs.describe(spec))  # fmt: skip
    assert runs.pod_uid(pod) not in (None, uid)
    restarted = runs.kube.kubectl("logs", pod, "-n", NAMESPACE).stdout
    match = re.search(r"resumed from step (\d+)", restarted)
    assert match, restarted[-3000:]
    # From a periodic checkpoint, at or after the one seen before the kill, before the killed step.
    resumed, reached = int(match.group(1)), max(int(n) for n in re.findall(r"pretrain step (\d+)/", killed_log))
    assert resumed % 5 == 0 and saved <= resumed <= reached, (saved, resumed, reached, killed_log[-3000:])
    curve = runs.curve(spec)
    assert sorted(curve) == list(range(1, spec.train_iters + 1))
    assert runs.reference is not None
    assert_same_curve(curve, runs.curve(runs.reference), "OOM-killed and resumed vs uninterrupted")


@pytest.mark.timeout(1700)  # waits: past a checkpoint 600 s, both containers ended 120 s, the job 900 s
def test_a_pod_killed_outright_as_in_a_node_crash_restarts_every_replica_and_resumes(runs):
    """The worker's processes die at once with no chance to save (`runc kill` of its container:
    what a crashed node does to them). Its container exits 137; the master's rank loses its peer
    mid-collective and exits 129 (`EXIT_PEER_LOST`, retryable) instead of 1, which the Training
    Operator's `restartPolicy: ExitCode` would take as permanent and fail the job on. Both replicas
    are recreated, and the run resumes from its last complete checkpoint to the uninterrupted
    run's loss curve."""
    spec, checkpoints = _early_checkpoints(runs, "crash", nodes=2, procs_per_node=1)
    master, worker = f"{spec.name}-pretrain-master-0", f"{spec.name}-pretrain-worker-0"

    past_a_checkpoint = _past_a_checkpoint(runs, spec, checkpoints, "crash it")
    with runs.kube.pod_history(NAMESPACE) as history:
        runs.create(spec)
        wait_for("a step past a checkpoint", past_a_checkpoint, 600, show=lambda: runs.describe(spec))
        uids = {name: runs.pod_uid(name) for name in (master, worker)}
        container = _container_id(runs, worker)
        assert container is not None and None not in uids.values(), runs.describe(spec)
        _kill_every_process(container)

        def show() -> str:
            logs = [
                runs.kube.pod_logs(NAMESPACE, name, uid, PYTORCHJOB_CONTAINER)[-2000:] for name, uid in uids.items()
            ]
            return "\n".join([runs.describe(spec), *logs])

        wait_for("both containers reported ended", lambda: all(history.exit_codes(u) for u in uids.values()), 120,
                 show=show)  # fmt: skip
        codes = {name: history.exit_codes(uid) for name, uid in uids.items()}
        master_log = runs.kube.pod_logs(NAMESPACE, master, uids[master], PYTORCHJOB_CONTAINER)

        def recreated() -> bool:
            return all({p["metadata"]["uid"] for p in history.named(name)} - {uid} for name, uid in uids.items())

        # The Training Operator recreates both replicas (a worker still finishing when the master
        # succeeds is deleted by `cleanPodPolicy: Running`: its new pod is seen here, not at the end).
        wait_for("both replicas recreated", recreated, 300, show=lambda: runs.describe(spec))
    expected = {master: {PYTORCHJOB_CONTAINER: EXIT_PEER_LOST}, worker: {PYTORCHJOB_CONTAINER: 137}}
    assert codes == expected, (codes, master_log[-3000:])
    assert "error: pretrain: a peer was lost" in master_log, master_log[-3000:]

    wait_for("the crashed job finished", lambda: runs.job_status(spec).get("Succeeded") == "True", 900,
             show=lambda: runs.describe(spec))  # fmt: skip
    restarted = runs.kube.kubectl("logs", master, "-n", NAMESPACE).stdout
    match = re.search(r"resumed from step (\d+)", restarted)
    assert match and int(match.group(1)) % 5 == 0, restarted[-3000:]
    curve = runs.curve(spec)
    assert sorted(curve) == list(range(1, spec.train_iters + 1))
    assert runs.reference is not None
    assert_same_curve(curve, runs.curve(runs.reference), "crashed and resumed vs uninterrupted")


def test_a_pod_whose_image_is_not_on_the_node_waits_in_image_pull_back_off(runs):
    """Nothing is pulled here: a container whose image is not in the node's store is a failed pull,
    `ErrImagePull` then `ImagePullBackOff`, tried again after the back-off, and the pod stays
    Pending, as on a cluster whose registry lacks the image (nothing fails the pod)."""
    security = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "name": "main",
        "image": "registry.invalid/sobert/absent:0",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    spec = {
        "restartPolicy": "Never",
        "securityContext": security,
        "containers": [container],
        "nodeSelector": POOL_LABEL,
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "absent-image"}, "spec": spec}
    from kubernetes import client, config, watch

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(runs.kube.kubeconfig)))
    selector = "metadata.name=absent-image"
    # Watched from before its creation, so that no status written is missed.
    since = api.list_namespaced_pod(NAMESPACE, field_selector=selector).metadata.resource_version
    runs.kube.kubectl("create", "-n", NAMESPACE, "-f", "-", input=json.dumps(pod))
    seen: list[tuple[str, str]] = []  # (phase, the container's waiting reason), each status written
    try:
        for event in watch.Watch().stream(
            api.list_namespaced_pod, NAMESPACE, field_selector=selector, resource_version=since, timeout_seconds=60
        ):
            status = event["object"].status
            waiting = status.container_statuses[0].state.waiting if status.container_statuses else None
            seen.append((status.phase, waiting.reason if waiting else ""))
            if [reason for _, reason in seen].count("ErrImagePull") >= 2:
                break
    finally:
        runs.kube.kubectl("delete", "pod", "absent-image", "-n", NAMESPACE, "--wait=false")
    reasons = [r for i, (_, r) in enumerate(seen) if r and (i == 0 or seen[i - 1][1] != r)]  # as they change
    # Pulled, backed off, pulled again (after 10 s), and never anything but Pending.
    assert reasons[reasons.index("ErrImagePull") :][:3] == ["ErrImagePull", "ImagePullBackOff", "ErrImagePull"], seen
    assert {phase for phase, _ in seen} == {"Pending"}, seen


@pytest.mark.timeout(1800)  # waits: 600 + 120 + 120 + 120 + 900 s
def test_a_lost_node_is_tainted_its_pod_evicted_and_the_job_resumes_on_a_replacement(runs):
    """A node is lost (its kubelet and its pods' processes die at once). The other node's rank loses
    its peer and exits 129 (retryable); the node lifecycle controller finds the node's Lease stale,
    marks it `Unknown` and taints it unreachable; taint eviction marks its pod for deletion (the
    timings shortened in the testbed's control plane: `cluster.NODE_MONITOR_GRACE_PERIOD`,
    `DEFAULT_TOLERATION_SECONDS`). The node is then gone for good (its Node deleted, as a cloud's
    node controller does for a vanished VM), the pod garbage collector removes its pod, a
    replacement node joins, and the Training Operator's new replicas resume the job from its last
    checkpoint to the final step. Last in the module: it replaces node-1 with node-2."""
    spec, checkpoints = _early_checkpoints(
        runs, "lost", nodes=2, procs_per_node=2
    )  # a pod per node: each takes a node's 2 GPUs
    names = (f"{spec.name}-pretrain-master-0", f"{spec.name}-pretrain-worker-0")

    past_a_checkpoint = _past_a_checkpoint(runs, spec, checkpoints, "lose a node")

    def node(name: str) -> dict[str, Any]:
        return json.loads(runs.kube.kubectl("get", "node", name, "-o", "json").stdout)

    with runs.kube.pod_history(NAMESPACE) as history:
        runs.create(spec)
        wait_for("a step past a checkpoint", past_a_checkpoint, 600, show=lambda: runs.describe(spec))
        pods = {name: history.named(name)[-1] for name in names}
        lost = next(n for n, pod in pods.items() if pod["spec"].get("nodeName") == "node-1")
        survivor = next(n for n in names if n != lost)
        lost_uid, survivor_uid = pods[lost]["metadata"]["uid"], pods[survivor]["metadata"]["uid"]
        kubecluster.lose_node(runs.kube, 1)
        wait_for(f"{survivor} ended", lambda: history.exit_codes(survivor_uid), 120, show=lambda: runs.describe(spec))
        assert history.exit_codes(survivor_uid) == {PYTORCHJOB_CONTAINER: EXIT_PEER_LOST}

        def unreachable() -> bool:
            found = node("node-1")
            ready = {c["type"]: c["status"] for c in found["status"]["conditions"]}.get("Ready")
            taints = {(t["key"], t["effect"]) for t in found["spec"].get("taints") or []}
            return ready == "Unknown" and ("node.kubernetes.io/unreachable", "NoExecute") in taints

        wait_for("node-1 unreachable and tainted", unreachable, 120, show=lambda: json.dumps(node("node-1")["status"]))

        def evicted_by_the_taint() -> bool:
            pod = history.pods.get(lost_uid) or {}
            conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
            target = conditions.get("DisruptionTarget") or {}
            return bool(pod["metadata"].get("deletionTimestamp")) and target.get("reason") == "DeletionByTaintManager"

        wait_for(
            f"{lost} evicted by the taint", evicted_by_the_taint, 120, show=lambda: json.dumps(history.pods[lost_uid])
        )
        runs.kube.kubectl("delete", "node", "node-1", "--wait=false")
        kubecluster.add_node(runs.kube, 2)
        wait_for("the job finished on the replacement", lambda: runs.job_status(spec).get("Succeeded") == "True", 900,
                 show=lambda: runs.describe(spec))  # fmt: skip
        replaced = history.named(lost)[-1]
    assert lost_uid in history.deleted and replaced["metadata"]["uid"] != lost_uid
    assert replaced["spec"]["nodeName"] == "node-2"
    assert max(runs.steps(spec)) == spec.train_iters
    restarted = runs.kube.kubectl("logs", names[0], "-n", NAMESPACE).stdout
    match = re.search(r"resumed from step (\d+)", restarted)
    assert match and int(match.group(1)) % 5 == 0 and int(match.group(1)) >= 5, restarted[-3000:]
