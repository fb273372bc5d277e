"""Pretraining as a Kubeflow PyTorchJob (kubeflow.org/v1) or Trainer v2 TrainJob (v1alpha1).

The torchrun command comes from `launch.pretrain_command`, the same function the local executor
uses, for the cluster target: no rendezvous flags, so torchrun's static rendezvous reads what the
training operator injects (PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT). The workers' time to
checkpoint after SIGTERM is the pod's terminationGracePeriodSeconds, rendered into both.
"""

from __future__ import annotations

from typing import Any

from sobert_api.spec import RunSpec
from sobert_operator.cluster import ClusterConfig, NodePool, SchedulerKind
from sobert_operator.launch import LaunchTarget, pretrain_command
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

STAGE = "pretrain"
# The PyTorchJob as the Training Operator v1.9.3 (the version the tests run) defines it:
# kubeflow/training-operator v1.9.3 pkg/apis/kubeflow.org/v1/pytorch_types.go (PyTorchJobSpec,
# PyTorchJobDefaultContainerName, PyTorchJobReplicaTypeMaster/Worker) and common_types.go
# (ReplicaSpec, RunPolicy, SchedulingPolicy). The API server checks every field against the
# upstream CRD: objects are created under strict field validation (`KubeClient.create`).
PYTORCHJOB_API_VERSION = "kubeflow.org/v1"
PYTORCHJOB_KIND = "PyTorchJob"
PYTORCHJOB_CONTAINER = "pytorch"  # the container the operator configures (PET_* env, the master port)
REPLICA_MASTER, REPLICA_WORKER = "Master", "Worker"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MULTUS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"


def _command(spec: RunSpec, cluster: ClusterConfig, dataset_id: str, peak_tflops: float | None) -> list[str]:
    return pretrain_command(
        spec,
        SPEC_PATH,
        dataset_id,
        SCRATCH,
        target=LaunchTarget.cluster,
        grace_seconds=cluster.termination_grace_seconds,
        peak_tflops=peak_tflops,
    )


PRETRAIN_PROCESS_ENV = {
    # One hardware queue keeps TP communication ordered with compute (Megatron requirement).
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    "OMP_NUM_THREADS": "1",
}
"""What a pretraining process is given beside the cluster's NCCL settings and storage
(`scripts/bench_gpu.py` runs the launch command with the same)."""


def _env(spec: RunSpec, cluster: ClusterConfig) -> list[dict[str, Any]]:
    env = [{"name": name, "value": value} for name, value in PRETRAIN_PROCESS_ENV.items()]
    env += [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "TMPDIR", "value": SCRATCH},
    ]
    env += [{"name": k, "value": v} for k, v in sorted(cluster.nccl_env.items())]
    return env + storage_env(spec, cluster)


def _resources(spec: RunSpec, pool: NodePool) -> dict[str, Any]:
    gpus = str(spec.parallel.procs_per_node)
    limits: dict[str, str] = {"nvidia.com/gpu": gpus}
    if pool.rdma:
        limits[pool.rdma.resource] = str(pool.rdma.count)
    return {"requests": {"cpu": pool.cpu, "memory": pool.memory, **limits}, "limits": {"memory": pool.memory, **limits}}


def pod_template(
    spec: RunSpec, cluster: ClusterConfig, dataset_id: str, container_name: str, peak_tflops: float | None = None
) -> dict[str, Any]:
    """A pretraining pod. `peak_tflops`: the pool's GPU peak from the price catalog, for the MFU the
    trainer reports (None: not reported)."""
    _, pool = cluster.pool(spec.placement.node_pool)
    spec_vol, spec_mount = spec_volume(spec)
    scratch_vol, scratch_mount = scratch_volume()
    annotations = {"sidecar.istio.io/inject": "false"}
    if pool.rdma and pool.rdma.network:
        annotations[MULTUS_ANNOTATION] = pool.rdma.network
    pod_spec: dict[str, Any] = {
        # Long enough to finish the step and write a checkpoint after SIGTERM.
        "terminationGracePeriodSeconds": cluster.termination_grace_seconds,
        "securityContext": pod_security(),
        "containers": [
            {
                "name": container_name,
                "image": cluster.trainer_image,
                "command": _command(spec, cluster, dataset_id, peak_tflops),
                "env": _env(spec, cluster),
                "resources": _resources(spec, pool),
                "volumeMounts": [spec_mount, scratch_mount, {"name": "dshm", "mountPath": "/dev/shm"}],
                "securityContext": container_security(),
            }
        ],
        "volumes": [
            spec_vol,
            scratch_vol,
            # NCCL and dataloaders need more shared memory than the container default 64 MiB.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pool.shm_size}},
        ],
    }
    place_on_pool(pod_spec, pool, cluster)
    return {"metadata": {"labels": labels(spec, STAGE), "annotations": annotations}, "spec": pod_spec}


def _job_labels(spec: RunSpec, cluster: ClusterConfig) -> dict[str, str]:
    out = labels(spec, STAGE)
    if cluster.scheduler is SchedulerKind.kueue and spec.placement.queue:
        out[KUEUE_QUEUE_LABEL] = spec.placement.queue
    return out


def render_pytorchjob(
    spec: RunSpec,
    cluster: ClusterConfig,
    dataset_id: str,
    active_deadline_seconds: int | None = None,
    suspend: bool = False,
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    """Master (+ Workers for nodes > 1), one pod per node with `procs_per_node` GPUs."""
    template = pod_template(spec, cluster, dataset_id, container_name=PYTORCHJOB_CONTAINER, peak_tflops=peak_tflops)

    def replica(count: int) -> dict[str, Any]:
        # ExitCode: exit codes 128+ (SIGTERM after checkpoint = 143, OOM-kill = 137) are retried;
        # 1-127 are permanent errors and fail the job instead of looping.
        return {"replicas": count, "restartPolicy": "ExitCode", "template": template}

    replicas = {REPLICA_MASTER: replica(1)}
    if spec.parallel.nodes > 1:
        replicas[REPLICA_WORKER] = replica(spec.parallel.nodes - 1)
    run_policy: dict[str, Any] = {
        "backoffLimit": cluster.backoff_limit,
        "cleanPodPolicy": "Running",
        "suspend": suspend,
        "ttlSecondsAfterFinished": cluster.ttl_seconds_after_finished,
    }
    if active_deadline_seconds is not None:
        run_policy["activeDeadlineSeconds"] = active_deadline_seconds
    if cluster.scheduler is SchedulerKind.volcano:
        run_policy["schedulingPolicy"] = {"minAvailable": spec.parallel.nodes}
        if spec.placement.queue:
            run_policy["schedulingPolicy"]["queue"] = spec.placement.queue
    return {
        "apiVersion": PYTORCHJOB_API_VERSION,
        "kind": PYTORCHJOB_KIND,
        "metadata": {"name": object_name(spec.name, STAGE), "labels": _job_labels(spec, cluster)},
        "spec": {
            "nprocPerNode": str(spec.parallel.procs_per_node),
            "pytorchReplicaSpecs": replicas,
            "runPolicy": run_policy,
        },
    }


# The TrainJob is rendered for Kubeflow Trainer v2.2 (v2.2.1 is pinned in testbed/scripts/build-operators.sh).
# Its pod-level override field changed across releases: podSpecOverrides (v2.0), podTemplateOverrides
# (v2.1), runtimePatches (v2.2+, pkg/apis/trainer/v1alpha1/trainjob_types.go RuntimePatch).
# The replicated job and container of the stock torch runtime (manifests/base/runtimes/torch_distributed.yaml).
TRAINER_REPLICATED_JOB = "node"
TRAINER_CONTAINER = "node"
RUNTIME_PATCH_MANAGER = "sobert.dev/controller"


def _runtime_patch(pod: dict[str, Any]) -> dict[str, Any]:
    """What the runtime's pods need beyond the trainer's command, env and resources: the spec
    ConfigMap, node-local scratch, /dev/shm, the image's user, and the node pool's placement; the
    same pod as the PyTorchJob's (`pod`), as far as RuntimePatch (Trainer v2.2) can carry it."""
    pod_spec = pod["spec"]
    container = pod_spec["containers"][0]
    patch_spec: dict[str, Any] = {
        "volumes": pod_spec["volumes"],
        "containers": [
            {
                "name": TRAINER_CONTAINER,
                "volumeMounts": container["volumeMounts"],
                "securityContext": container["securityContext"],
            }
        ],
        "securityContext": pod_spec["securityContext"],
    }
    for key in ("nodeSelector", "tolerations", "affinity"):
        if key in pod_spec:
            patch_spec[key] = pod_spec[key]
    return {
        "manager": RUNTIME_PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": TRAINER_REPLICATED_JOB,
                            "template": {"spec": {"template": {"metadata": pod["metadata"], "spec": patch_spec}}},
                        }
                    ]
                }
            }
        },
    }


def render_trainjob(
    spec: RunSpec,
    cluster: ClusterConfig,
    dataset_id: str,
    active_deadline_seconds: int | None = None,
    suspend: bool = False,
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    """The same pretraining for Kubeflow Trainer v2.2: the trainer's command, env and
    resources, and a runtime patch with the volumes, user and placement the PyTorchJob's pods have.
    The grace period is not patchable (RuntimePatch has no terminationGracePeriodSeconds;
    kubeflow/trainer v2.2.1 pkg/apis/trainer/v1alpha1/trainjob_types.go, PodSpecPatch): it is the
    runtime's (`cluster.training_runtime`). The chart's TrainingRuntime (charts/sobert/templates/
    trainingruntime.yaml) sets it to `cluster.termination_grace_seconds`, which the launcher's
    SIGTERM checkpoint counts on."""
    _, pool = cluster.pool(spec.placement.node_pool)
    pod = pod_template(spec, cluster, dataset_id, container_name=TRAINER_CONTAINER, peak_tflops=peak_tflops)
    container = pod["spec"]["containers"][0]
    job_spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": "trainer.kubeflow.org",
            "kind": cluster.training_runtime_kind.value,
            "name": cluster.training_runtime,
        },
        "suspend": suspend,
        "trainer": {
            "image": cluster.trainer_image,
            "command": container["command"],
            "env": container["env"],
            "numNodes": spec.parallel.nodes,
            "numProcPerNode": spec.parallel.procs_per_node,
            "resourcesPerNode": _resources(spec, pool),
        },
        "runtimePatches": [_runtime_patch(pod)],
    }
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": object_name(spec.name, STAGE), "labels": _job_labels(spec, cluster)},
        "spec": job_spec,
    }
