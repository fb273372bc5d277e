"""The rendered PyTorchJob's pods executed as a cluster would execute them.

Each pod is its container's command from `render_pytorchjob`, run as local processes in its own
mount namespace: the spec ConfigMap at /etc/sobert, its own empty /scratch (node-local: nothing is
shared between "nodes" but the S3 server), the environment Kubeflow Training Operator v1.9 injects
(`podproc.operator_env`) and the master's DNS name resolving through the pod's /etc/hosts.

- two nodes x one process reach the final step with the loss curve of one node x two processes;
- SIGTERM to a pod's main process (preemption): exit 143 with a complete checkpoint of the step it
  stopped at; a restarted pod (fresh scratch) resumes and matches the uninterrupted run step for
  step, ignoring a checkpoint whose save was cut short.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import time
from pathlib import Path

import pytest

from podproc import container_env, operator_env, start_container
from pretrain_runs import assert_same_curve, assert_same_grad_norm, first_grad_norm, loss_curve, numerics_spec
from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig
from sobert_operator.render.common import spec_configmap
from sobert_operator.render.pretrain import render_pytorchjob
from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
from sobert_trainer.pretrain.checkpoint_index import checkpoint_name, complete_checkpoints
from sobert_trainer.pretrain.progress import read_progress
from sobert_trainer.storage import Storage

pytestmark = pytest.mark.integration
SECRET = "sobert-s3"
CLUSTER = ClusterConfig.model_validate(
    {
        "trainer_image": "sobert-trainer:test",
        "node_pools": {"cpu": {"gpu_type": "cpu", "gpus_per_node": 0}},
        "default_node_pool": "cpu",
        "storage_secret": SECRET,
        "termination_grace_seconds": 120,
    }
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """Pods of rendered jobs as processes, all against one S3 bucket."""

    def __init__(self, root: Path, s3_server, bucket: str, dump: dict[str, list[str]]):
        self.root, self.s3, self.bucket, self.dump = root, s3_server, bucket, dump

    def spec(self, name: str, **parallel) -> RunSpec:
        return numerics_spec(
            name,
            f"s3://{self.bucket}/sobert",
            self.dump,
            backend="kubernetes",
            parallel=parallel,
            storage={"endpoint_url": self.s3.endpoint_url},
        )

    def curve(self, spec: RunSpec) -> dict[int, float]:
        return loss_curve(spec, self.storage(spec))

    def grad_norm(self, spec: RunSpec) -> float:
        return first_grad_norm(spec, self.storage(spec))

    def storage(self, spec: RunSpec) -> Storage:
        return Storage.open(spec.storage.uri, spec.storage.endpoint_url, (self.s3.access_key, self.s3.secret_key))

    def start(self, spec: RunSpec, dataset_id: str, attempt: int = 0) -> dict[str, object]:
        """Every pod of the run's PyTorchJob, started; pod name -> process."""
        job = render_pytorchjob(spec, CLUSTER, dataset_id)
        job_name = job["metadata"]["name"]
        configmap = self.root / job_name / "spec"
        configmap.mkdir(parents=True, exist_ok=True)
        for key, value in spec_configmap(spec)["data"].items():
            (configmap / key).write_text(value)
        port = _free_port()
        pods = {}
        names = [
            (rtype, index, f"{job_name}-{rtype.lower()}-{index}")
            for rtype, replica in job["spec"]["pytorchReplicaSpecs"].items()
            for index in range(replica["replicas"])
        ]
        hosts = {name: "127.0.0.1" for _, _, name in names}
        secret_data = {SECRET: {"AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key}}
        for rtype, index, name in names:
            template = job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"]
            container = template["containers"][0]
            pod_root = self.root / job_name / f"{name}-{attempt}"
            volumes = {"spec": configmap}
            for volume in template["volumes"]:
                if "emptyDir" in volume:  # a new pod gets new emptyDirs
                    volumes[volume["name"]] = pod_root / "volumes" / volume["name"]
                    volumes[volume["name"]].mkdir(parents=True)
            binds = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
            env = {**container_env(container, secret_data), **operator_env(job, rtype, index, port)}
            pods[name] = start_container(
                container, env=env, binds=binds, hosts=hosts, root=pod_root, log=pod_root.with_suffix(".log")
            )
        return pods

    def logs(self, spec: RunSpec) -> str:
        return "\n".join(p.read_text() for p in sorted((self.root / f"{spec.name}-pretrain").glob("*.log")))

    def run(self, spec: RunSpec, dataset_id: str, timeout: float = 600) -> None:
        pods = self.start(spec, dataset_id)
        codes = {name: pod.wait(timeout=timeout) for name, pod in pods.items()}
        assert set(codes.values()) == {0}, f"pod exit codes {codes}\n{self.logs(spec)[-4000:]}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server, so_dump):
    """A bucket with the dump uploaded and the dataset prepared, and one node x two processes
    pretrained to the end as the reference."""
    client = s3_server.client()
    bucket = "pods-" + secrets.token_hex(4)
    client.create_bucket(Bucket=bucket)
    dump = {}
    for kind, files in so_dump.items():
        dump[kind] = []
        for path in files:
            key = f"dumps/{Path(path).name}"
            client.upload_file(path, bucket, key)
            dump[kind].append(f"s3://{bucket}/{key}")
    pods = Cluster(tmp_path_factory.mktemp("pods"), s3_server, bucket, dump)
    reference = pods.spec("ref", nodes=1, procs_per_node=2)
    config = PrepareConfig.from_spec(reference)
    with pytest.MonkeyPatch.context() as env:  # prepare runs in this process, with the server's keys
        for key, value in s3_server.env().items():
            env.setenv(key, value)
        prepare_dataset(config, pods.storage(reference))
    pods.dataset_id = config.dataset_id()
    pods.run(reference, pods.dataset_id)
    pods.reference = reference
    return pods


def test_two_nodes_match_one_node_of_the_same_world_size(cluster):
    spec = cluster.spec("nodes2", nodes=2, procs_per_node=1)
    job = render_pytorchjob(spec, CLUSTER, cluster.dataset_id)
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    cluster.run(spec, cluster.dataset_id)
    logs = cluster.logs(spec)
    # Rank 0 built megatron's sample index and published it; the other node fetched it.
    assert cluster.storage(spec).read_manifest(paths.dataset_index_prefix(spec.name)) is not None
    assert_same_grad_norm(
        cluster.grad_norm(spec),
        cluster.grad_norm(cluster.reference),
        "2 nodes vs 1",
    )
    curve = cluster.curve(spec)
    assert max(curve) == spec.train_iters, logs[-2000:]
    assert_same_curve(curve, cluster.curve(cluster.reference), "2 nodes x 1 vs 1 node x 2")
    progress = read_progress(cluster.storage(spec), paths.progress_key(spec.name))
    assert progress[-1]["world_size"] == 2


def _wait_for(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_preempted_pod_exits_143_with_a_checkpoint_and_resumes_identically(cluster):
    spec = cluster.spec("preempt", nodes=1, procs_per_node=2)
    storage = cluster.storage(spec)
    checkpoints = storage.child(paths.checkpoints_prefix(spec.name))
    pods = cluster.start(spec, cluster.dataset_id)
    (main,) = pods.values()
    _wait_for(lambda: any(r["step"] >= 5 for r in read_progress(storage, paths.progress_key(spec.name))))
    main.send_signal(signal.SIGTERM)  # what the kubelet sends the container's main process
    assert main.wait(timeout=CLUSTER.termination_grace_seconds) == 143, cluster.logs(spec)[-3000:]
    stopped_at = max(r["step"] for r in read_progress(storage, paths.progress_key(spec.name)))
    assert 5 <= stopped_at < spec.train_iters
    assert complete_checkpoints(checkpoints)[-1] == stopped_at
    manifest = checkpoints.read_manifest(checkpoint_name(stopped_at))
    assert manifest["step"] == stopped_at and manifest["files"]

    # A save of the final step cut short: files, a part list, no manifest. Never to be loaded.
    partial = checkpoint_name(spec.train_iters)
    checkpoints.write_bytes(f"{partial}/__0_0.distcp", b"half a shard")
    checkpoints.write_json(f"{partial}/.parts/node-7.json", {"__0_0.distcp": {"bytes": 12, "sha256": "0" * 64}})
    assert complete_checkpoints(checkpoints)[-1] == stopped_at

    # The training operator recreates the pod (exit 143 is retryable): new pod, empty scratch.
    (restarted,) = cluster.start(spec, cluster.dataset_id, attempt=1).values()
    assert restarted.wait(timeout=600) == 0, cluster.logs(spec)[-3000:]
    assert f"resumed from step {stopped_at}" in cluster.logs(spec)
    curve = cluster.curve(spec)
    assert sorted(curve) == list(range(1, spec.train_iters + 1))
    assert_same_curve(
        curve,
        cluster.curve(cluster.reference),
        "preempted and resumed vs uninterrupted",
    )
    final = checkpoints.read_manifest(partial)
    assert final is not None and "node-7" not in json.dumps(final)
    assert set(final["files"]) == set(manifest["files"])  # the same layout's files, nothing left over


def test_sigterm_during_a_save_still_ends_with_a_complete_checkpoint(cluster):
    """A checkpoint every step, so the SIGTERM lands while one is being written: megatron's
    checkpoint writer helper processes share the worker's process group, which torchrun signals
    whole. The save must complete, then the stop's own checkpoint, then exit 143."""
    spec = cluster.spec("midsave", nodes=1, procs_per_node=2)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_interval": 1})})
    storage = cluster.storage(spec)
    checkpoints = storage.child(paths.checkpoints_prefix(spec.name))
    (main,) = cluster.start(spec, cluster.dataset_id).values()
    _wait_for(lambda: len(complete_checkpoints(checkpoints)) >= 2)
    main.send_signal(signal.SIGTERM)
    assert main.wait(timeout=CLUSTER.termination_grace_seconds) == 143, cluster.logs(spec)[-3000:]
    stopped_at = max(r["step"] for r in read_progress(storage, paths.progress_key(spec.name)))
    assert complete_checkpoints(checkpoints)[-1] == stopped_at, cluster.logs(spec)[-3000:]
