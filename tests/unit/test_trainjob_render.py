"""The TrainJob carries what the PyTorchJob's pods have: the stock `torch-distributed` runtime has
none of it (no spec volume, scratch, /dev/shm, user or placement), so without the runtime patch
every rank exits 2 on its missing spec.json."""

from __future__ import annotations

from sobert_api import build_spec
from sobert_operator.cluster import ClusterConfig, TrainingRuntimeKind
from sobert_operator.render.pretrain import (
    RUNTIME_PATCH_MANAGER,
    TRAINER_CONTAINER,
    TRAINER_REPLICATED_JOB,
    render_pytorchjob,
    render_trainjob,
)

SPEC = build_spec(
    {
        "preset": "base",
        "name": "tj",
        "backend": "kubernetes",
        "data": {"posts": ["s3://dumps/Posts.xml"]},
        "storage": {"uri": "s3://bucket/sobert"},
        "parallel": {"nodes": 2, "procs_per_node": 8},
    }
)
CLUSTER = ClusterConfig.model_validate(
    {
        "trainer_image": "ghcr.io/sobert/trainer:0.1.0",
        "pretrain_target": "trainjob",
        "node_pools": {
            "h100": {
                "gpu_type": "h100",
                "gpus_per_node": 8,
                "node_selector": {"pool": "h100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        },
        "default_node_pool": "h100",
    }
)


def test_runtime_patch_gives_the_trainer_pod_what_the_pytorchjob_pod_has():
    trainjob = render_trainjob(SPEC, CLUSTER, "so-1")["spec"]
    reference = render_pytorchjob(SPEC, CLUSTER, "so-1")["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    (patch,) = trainjob["runtimePatches"]
    assert patch["manager"] == RUNTIME_PATCH_MANAGER
    (job,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == TRAINER_REPLICATED_JOB
    pod = job["template"]["spec"]["template"]
    assert pod["metadata"] == reference["metadata"]
    for key in ("volumes", "securityContext", "nodeSelector", "tolerations"):
        assert pod["spec"][key] == reference["spec"][key], key
    (container,) = pod["spec"]["containers"]
    ref_container = reference["spec"]["containers"][0]
    assert container["name"] == TRAINER_CONTAINER
    assert container["volumeMounts"] == ref_container["volumeMounts"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/sobert", "/scratch", "/dev/shm"}
    # Command, env and resources go through the trainer (the runtime patch may not set the env of `node`).
    assert trainjob["trainer"]["command"] == ref_container["command"]
    assert trainjob["trainer"]["env"] == ref_container["env"]
    assert "env" not in container


def test_trainjob_refers_to_the_configured_runtime_by_kind():
    """By default the chart's namespaced TrainingRuntime (it carries the grace period a runtime
    patch cannot); a ClusterTrainingRuntime when the cluster config names one."""
    assert render_trainjob(SPEC, CLUSTER, "so-1")["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": "sobert-torch-distributed",
    }
    stock = CLUSTER.model_copy(
        update={"training_runtime": "torch-distributed", "training_runtime_kind": TrainingRuntimeKind.cluster}
    )
    ref = render_trainjob(SPEC, stock, "so-1")["spec"]["runtimeRef"]
    assert (ref["kind"], ref["name"]) == ("ClusterTrainingRuntime", "torch-distributed")


def test_pretraining_pods_get_the_pool_gpu_peak_for_their_mfu():
    from sobert_operator.cost.catalog import load_catalog
    from sobert_operator.cost.devices import peak_tflops

    peak = peak_tflops(SPEC, load_catalog(), CLUSTER)
    assert peak == 989.0  # the catalog's H100 dense BF16 peak
    for render in (render_pytorchjob, render_trainjob):
        command = " ".join(str(part) for part in _flatten(render(SPEC, CLUSTER, "so-1", peak_tflops=peak)))
        assert "--peak-tflops=989" in command
        assert "--peak-tflops" not in " ".join(str(p) for p in _flatten(render(SPEC, CLUSTER, "so-1")))


def _flatten(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _flatten(value)
    elif isinstance(node, list):
        for value in node:
            yield from _flatten(value)
    else:
        yield node
