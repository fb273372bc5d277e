"""What the controller knows about its cluster: images, node pools, NCCL, scheduling.

Loaded from the Helm chart's values (mounted as a ConfigMap into the controller) or a YAML file;
validated like a RunSpec. Renderers take it as an argument: nothing reads the cluster config
from globals.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from sobert_api.loading import SpecError, format_validation_error


class _Config(BaseModel):
    # camelCase keys as in the Helm chart's values (`nodePools`, `gpuType`), snake_case in Python.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, alias_generator=to_camel)


class RdmaSpec(_Config):
    """A NIC device-plugin resource for GPUDirect RDMA / EFA, and the Multus network to attach."""

    resource: Annotated[str, Field(description="e.g. rdma/hca_shared_devices_a or vpc.amazonaws.com/efa.")]
    count: Annotated[int, Field(ge=1, description="Devices per pod.")] = 1
    network: Annotated[str | None, Field(description="Multus NetworkAttachmentDefinition (namespace/name).")] = None


class NodePool(_Config):
    """One GPU node pool: what a pod there can request and how to land on it."""

    gpu_type: Annotated[str, Field(description="GPU model, e.g. h100, a100-80gb (for cost and MFU tables).")]
    gpus_per_node: Annotated[int, Field(ge=0, description="Allocatable nvidia.com/gpu per node.")]
    cpu: Annotated[str, Field(description="CPU request per pod.")] = "16"
    memory: Annotated[str, Field(description="Memory request per pod.")] = "128Gi"
    shm_size: Annotated[str, Field(description="Size limit of the /dev/shm memory volume.")] = "32Gi"
    node_selector: dict[str, str] = {}
    tolerations: list[dict] = []
    affinity: dict | None = None
    rdma: RdmaSpec | None = None
    spot: Annotated[bool, Field(description="Preemptible capacity (checkpoint more often).")] = False


class SchedulerKind(StrEnum):
    none = "none"
    kueue = "kueue"
    volcano = "volcano"


class PretrainTarget(StrEnum):
    pytorchjob = "pytorchjob"  # Kubeflow Training Operator v1 (kubeflow.org/v1 PyTorchJob)
    trainjob = "trainjob"  # Kubeflow Trainer v2 (trainer.kubeflow.org/v1alpha1 TrainJob)


class TrainingRuntimeKind(StrEnum):
    namespaced = "TrainingRuntime"  # in the run's namespace: the one the chart installs
    cluster = "ClusterTrainingRuntime"  # cluster-wide, e.g. Trainer's stock `torch-distributed`


# The Ray release pinned in pyproject.toml's `finetune` extra (a test keeps them equal).
RAY_VERSION = "2.60.0"


class ClusterConfig(_Config):
    trainer_image: Annotated[str, Field(description="Image with the trainer (pinned tag or digest).")]
    node_pools: Annotated[dict[str, NodePool], Field(min_length=1)]
    default_node_pool: str
    cpu_node_selector: Annotated[dict[str, str], Field(description="Where prepare/convert jobs run.")] = {}
    storage_secret: Annotated[
        str, Field(description="Default Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")
    ] = "sobert-s3"
    nccl_env: Annotated[dict[str, str], Field(description="NCCL_* settings for pretraining pods.")] = {
        "NCCL_DEBUG": "WARN",
    }
    scheduler: SchedulerKind = SchedulerKind.none
    pretrain_target: PretrainTarget = PretrainTarget.pytorchjob
    training_runtime: Annotated[
        str,
        Field(
            description="Runtime a TrainJob refers to. The default is the TrainingRuntime the chart installs "
            "with pretrainTarget trainjob: its pods get terminationGraceSeconds to checkpoint after SIGTERM, "
            "which a runtime patch cannot set (the stock runtimes give 30 s)."
        ),
    ] = "sobert-torch-distributed"
    training_runtime_kind: Annotated[
        TrainingRuntimeKind, Field(description="TrainingRuntime (namespaced) or ClusterTrainingRuntime.")
    ] = TrainingRuntimeKind.namespaced
    termination_grace_seconds: Annotated[int, Field(ge=30, description="Time to checkpoint on SIGTERM.")] = 300
    backoff_limit: Annotated[int, Field(ge=0)] = 3
    check_inputs: Annotated[
        bool,
        Field(
            description="Before a run's first stage, read each of its inputs with its storage Secret (the dumps "
            "exist, each finetune file's first records parse): a bad input is `Invalid` before anything is spent."
        ),
    ] = True
    ttl_seconds_after_finished: Annotated[
        int, Field(ge=0, description="Seconds a finished prepare/pretrain/convert job is kept (for its logs).")
    ] = 86_400
    ray_cluster_ttl_seconds: Annotated[
        int,
        Field(
            ge=0,
            description="Seconds a finetune task's Ray cluster (GPU workers included) stays up after its job ends; "
            "KubeRay deletes it then and keeps the submitter pod with the driver's log.",
        ),
    ] = 60
    ray_version: Annotated[
        str, Field(description="Ray version in the trainer image (RayJob rayClusterSpec.rayVersion).")
    ] = RAY_VERSION

    @model_validator(mode="after")
    def _check_default_pool(self) -> ClusterConfig:
        if self.default_node_pool not in self.node_pools:
            raise ValueError(
                f"default_node_pool {self.default_node_pool!r} is not in node_pools ({', '.join(self.node_pools)})"
            )
        return self

    def pool(self, name: str | None) -> tuple[str, NodePool]:
        name = name or self.default_node_pool
        if name not in self.node_pools:
            raise SpecError(
                f"placement.node_pool: unknown node pool {name!r}; known: {', '.join(sorted(self.node_pools))}"
            )
        return name, self.node_pools[name]


# What `sobertctl submit --dry-run` renders with when no cluster config is given; the Helm
# chart's `cluster:` values are the same document (a test keeps them equal).
DEFAULT_CLUSTER_CONFIG = {
    "trainerImage": "ghcr.io/sobert-dev/sobert-trainer:0.1.0",
    "defaultNodePool": "h100",
    "nodePools": {
        "h100": {
            "gpuType": "h100",
            "gpusPerNode": 8,
            "cpu": "96",
            "memory": "1000Gi",
            "shmSize": "64Gi",
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }
    },
    "storageSecret": "sobert-s3",
    "ncclEnv": {"NCCL_DEBUG": "WARN"},
    "scheduler": "none",
    "pretrainTarget": "pytorchjob",
}


def default_cluster_config() -> ClusterConfig:
    return ClusterConfig.model_validate(DEFAULT_CLUSTER_CONFIG)


def load_cluster_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
        return ClusterConfig.model_validate(document)
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except ValidationError as exc:
        raise SpecError(
            format_validation_error(str(path), exc).replace("invalid run spec", "invalid cluster config")
        ) from None
