"""The control plane against a real kube-apiserver + etcd (built and started by the test harness).

Nothing runs pods here: the tests play the Kubeflow / batch controllers by writing job status,
and check that the sobert controller walks the run through its phases.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from sobert_api import build_spec
from sobert_api.crd import API_VERSION, KIND, crd_yaml
from sobert_api.spec import TaskName
from sobert_operator.cluster import ClusterConfig
from sobert_operator.kube.plan import render_all
from sobert_operator.render.finetune import render_rayjob
from sobert_operator.render.pretrain import render_pytorchjob, render_trainjob

pytestmark = pytest.mark.integration
METRICS_PORT = 19000 + os.getpid() % 1000  # one /metrics server per test process (kopf restarts share it)

CLUSTER = {
    "trainer_image": "ghcr.io/sobert/trainer:0.1.0",
    "default_node_pool": "h100",
    "node_pools": {
        "h100": {
            "gpu_type": "h100",
            "gpus_per_node": 8,
            "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "rdma": {"resource": "rdma/hca_shared_devices_a", "count": 1, "network": "default/rdma-net"},
        },
        "l4": {"gpu_type": "l4", "gpus_per_node": 4},
    },
    # This tier plays the operators on runs whose inputs are names only; the input check is on in
    # `test_a_run_with_a_missing_or_bad_input_is_invalid_before_anything_is_created`.
    "check_inputs": False,
}


def run_doc(name="large-1", **spec):
    body = {
        "preset": "large",
        "data": {"posts": ["s3://dumps/stackoverflow.com-Posts.7z"]},
        "storage": {"uri": "s3://bucket/sobert", "credentials_secret": "s3-creds"},
        "parallel": {"nodes": 4, "procs_per_node": 8, "tensor_parallel": 2},
        "finetune": {
            "tasks": {
                "quality": {"train": "s3://bucket/tasks/quality.jsonl"},
                "ner": {"train": "s3://bucket/tasks/ner/train.txt", "validation": "s3://bucket/tasks/ner/dev.txt"},
            }
        },
    }
    body.update(spec)
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": body}


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    from sobert_testbed import apiserver

    with apiserver.with_upstream_crds(tmp_path_factory.mktemp("kube")) as testbed:
        sobert_crd = testbed.workdir / "sobert-crd.yaml"
        sobert_crd.write_text(crd_yaml())
        testbed.kubectl("create", "-f", str(sobert_crd))
        testbed.kubectl("wait", "--for=condition=Established", "crd/sobertruns.sobert.dev", "--timeout=60s")
        yield testbed


@pytest.fixture
def api(kube, monkeypatch):
    from kubernetes import config

    from sobert_operator.kube.client import KubeClient

    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    config.load_kube_config(str(kube.kubeconfig))
    return KubeClient()


@pytest.fixture
def namespace(kube):
    name = "t-" + secrets.token_hex(3)
    kube.kubectl("create", "namespace", name)
    return name


def _objects_of_every_kind() -> list[dict]:
    """A run's objects of every kind sobert creates: a multi-node run's stages (volcano-scheduled),
    a one-node PyTorchJob, a TrainJob, and a RayJob finetuning on GPUs."""
    cluster = ClusterConfig.model_validate({**CLUSTER, "scheduler": "volcano"})
    spec = build_spec({**run_doc()["spec"], "name": "large-1", "backend": "kubernetes", "placement": {"queue": "gpu"}})
    single = build_spec(
        {**run_doc()["spec"], "name": "one-node", "backend": "kubernetes", "parallel": {"procs_per_node": 8}}
    )
    objects = render_all(spec, cluster, "so-abc")
    objects.append(
        render_pytorchjob(single, ClusterConfig.model_validate(CLUSTER), "so-abc", active_deadline_seconds=3600)
    )
    trainjob = render_trainjob(spec, cluster, "so-abc", active_deadline_seconds=7200)
    trainjob["metadata"]["name"] += "-v2"
    objects.append(trainjob)
    gpu_finetune = build_spec(
        {
            **run_doc()["spec"],
            "name": "gpu-ft",
            "backend": "kubernetes",
            "finetune": {**run_doc()["spec"]["finetune"], "use_gpu": True},
        }
    )
    objects.append(render_rayjob(gpu_finetune, cluster, TaskName.ner, active_deadline_seconds=600, suspend=True))
    return objects


def test_every_rendered_object_is_stored_as_sent(api, namespace):
    from manifest_compare import missing_fields

    objects = _objects_of_every_kind()
    kinds = set()
    for obj in objects:
        assert api.create(obj, namespace)
        assert not api.create(obj, namespace)  # second create: already exists, no duplicate
        stored = api.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], namespace)
        assert missing_fields(obj, stored) == [], obj["kind"]
        kinds.add(obj["kind"])
    assert kinds == {"ConfigMap", "Job", "PyTorchJob", "TrainJob", "RayJob"}
    # A field the upstream schema lacks is refused, as kubectl refuses it, not pruned in silence.
    misspelled = json.loads(json.dumps(next(o for o in objects if o["kind"] == "PyTorchJob")))
    misspelled["metadata"]["name"] = "misspelled"
    misspelled["spec"]["runPolicy"]["cleanupPolicy"] = "All"
    with pytest.raises(ApiException) as refused:
        api.create(misspelled, namespace)
    message = json.loads(refused.value.body)["message"]
    assert refused.value.status == 400 and 'unknown field "spec.runPolicy.cleanupPolicy"' in message, message
    rayjob = api.get("ray.io/v1", "RayJob", "large-1-finetune-ner", namespace)
    assert rayjob["spec"]["entrypoint"].endswith("--task=ner")
    assert rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2
    gpu_worker = api.get("ray.io/v1", "RayJob", "gpu-ft-finetune-ner", namespace)["spec"]["rayClusterSpec"]
    worker_pod = gpu_worker["workerGroupSpecs"][0]["template"]["spec"]
    assert worker_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    pytorchjob = api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace)
    assert set(pytorchjob["spec"]["pytorchReplicaSpecs"]) == {"Master", "Worker"}
    assert pytorchjob["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    container = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert all("value" not in e for e in container["env"] if e["name"].startswith("AWS_SECRET"))


def test_the_client_keeps_its_connections_open_through_creates_and_patches(kube, api, namespace, monkeypatch):
    """Every call hands its connection back to the pool: a create or a patch whose response was left
    unread kept it, so each one opened a new TLS connection (a handshake on both sides; with 200 runs
    at once, most of the controller's and the API server's CPU)."""
    import urllib3.connection

    opened = []
    connect = urllib3.connection.HTTPSConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPSConnection, "connect", lambda self: opened.append(1) or connect(self))

    def calls(index: int) -> None:
        name = f"cm-{index}"
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}}
        assert api.create(configmap, namespace) and not api.create(configmap, namespace)
        api.patch("v1", "ConfigMap", name, namespace, {"data": {"a": "2"}})
        assert api.get("v1", "ConfigMap", name, namespace)["data"] == {"a": "2"}
        run = run_doc(f"run-{index}")
        assert api.create(run, namespace)
        api.patch_status(API_VERSION, KIND, run["metadata"]["name"], namespace, {"phase": "Pending"})

    threads = 4
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(calls, range(40)))
    assert len(opened) <= threads, f"{len(opened)} connections opened for 240 calls on {threads} threads"


def _pod_templates(obj: dict) -> dict[str, dict]:
    """The pod templates in one of sobert's objects, by where they sit in it."""
    spec, name = obj.get("spec", {}), f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["kind"] == "Job":
        return {name: spec["template"]}
    if obj["kind"] == "PyTorchJob":
        return {f"{name} {role}": replica["template"] for role, replica in spec["pytorchReplicaSpecs"].items()}
    if obj["kind"] == "RayJob":
        ray = spec["rayClusterSpec"]
        found = {f"{name} head": ray["headGroupSpec"]["template"], f"{name} submitter": spec["submitterPodTemplate"]}
        return found | {f"{name} {group['groupName']}": group["template"] for group in ray["workerGroupSpecs"]}
    return {}  # ConfigMap; a TrainJob's pods come from its runtime (the e2e runs them)


def _with_training_operator_init_container(template: dict) -> dict:
    """A PyTorchJob worker as the Training Operator v1.9.3 makes it: the init container from the
    template sobert ships for its `--pytorch-init-container-template-file`, with the three fields
    the operator fills (pkg/controller.v1/pytorch/initcontainer.go, GetInitContainer)."""
    from conftest import PYTORCH_INIT_CONTAINER

    fields = {"InitContainerImage": "alpine:3.10", "MaxTries": "100", "MasterAddr": "large-1-pretrain-master-0"}
    text = PYTORCH_INIT_CONTAINER.read_text()
    for field, value in fields.items():
        text = text.replace("{{." + field + "}}", value)
    pod = json.loads(json.dumps(template))
    pod["spec"]["initContainers"] = yaml.safe_load(text) + pod["spec"].get("initContainers", [])
    return pod


def test_every_pod_sobert_renders_is_admitted_under_pod_security_restricted(kube):
    """Each pod template of each kind of object, created as a pod in a namespace that enforces
    Pod Security `restricted` (a server-side dry run), is admitted; without its seccomp profile
    the same pod is refused, so the namespace does enforce the level."""
    from sobert_testbed import apiserver

    namespace = "restricted-" + secrets.token_hex(3)
    apiserver.create_namespace(kube, namespace, pod_security="restricted")
    kube.kubectl("create", "serviceaccount", "default", "-n", namespace)  # no controller-manager makes it here
    templates = {k: v for obj in _objects_of_every_kind() for k, v in _pod_templates(obj).items()}
    for name in [k for k in templates if k.startswith("PyTorchJob/") and k.endswith(" Worker")]:
        templates[name] = _with_training_operator_init_container(templates[name])
    assert len(templates) >= 8 and any("initContainers" in t["spec"] for t in templates.values()), list(templates)

    def create(template: dict, name: str) -> subprocess.CompletedProcess:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **template.get("metadata", {})}}
        pod["spec"] = template["spec"]
        command = ("create", "--dry-run=server", "-n", namespace, "-f", "-")
        return kube.kubectl(*command, input=json.dumps(pod), check=False)

    refused = {name: r.stderr for name, t in templates.items() if (r := create(t, "p")).returncode != 0}
    assert refused == {}, refused
    bare = json.loads(json.dumps(templates[next(iter(templates))]))
    del bare["spec"]["securityContext"]["seccompProfile"]
    result = create(bare, "bare")
    assert result.returncode != 0 and "seccompProfile" in result.stderr, result.stderr


def test_the_upstream_crds_validation_rules_are_enforced(api, namespace):
    """The testbed is a current API server: the CEL rules (`x-kubernetes-validations`) of the
    upstream CRDs reject what a user's cluster rejects, so "stored as sent" above means accepted."""
    from kubernetes.dynamic.exceptions import UnprocessibleEntityError

    cluster = ClusterConfig.model_validate(CLUSTER)
    spec = build_spec({**run_doc()["spec"], "name": "cel", "backend": "kubernetes"})
    rayjob = render_rayjob(spec, cluster, TaskName.ner)
    rayjob["spec"]["managedBy"] = "someone-else"  # the RayJob CRD allows KubeRay or MultiKueue only
    with pytest.raises(UnprocessibleEntityError, match="managedBy"):
        api.create(rayjob, namespace)


# -- the controller -----------------------------------------------------------------------------


@pytest.fixture
def controller(kube, namespace, tmp_path, monkeypatch):
    """Start (and restart) the kopf controller for one namespace, in this process."""
    from kopf.testing import KopfRunner

    config_path = tmp_path / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(CLUSTER))
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.setenv("SOBERT_CLUSTER_CONFIG", str(config_path))
    monkeypatch.setenv("SOBERT_RESYNC_SECONDS", "2")
    monkeypatch.setenv("SOBERT_METRICS_PORT", str(METRICS_PORT))
    runners = []

    def start(config: dict | None = None):
        if config is not None:
            config_path.write_text(yaml.safe_dump(config))
        runner = KopfRunner(
            ["run", "--standalone", "--namespace", namespace, "-m", "sobert_operator.controller.main"],
            timeout=60,
        )
        runner.__enter__()
        runners.append(runner)
        return runner

    def stop(runner):
        runner.__exit__(None, None, None)
        runners.remove(runner)
        return runner

    yield start, stop
    for runner in list(runners):
        runner.__exit__(None, None, None)


def wait_for(fn, timeout=45.0, interval=0.3):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out; last value: {last!r}")


def run_status(api, namespace, name="large-1"):
    return (api.get(API_VERSION, KIND, name, namespace) or {}).get("status") or {}


def set_job_condition(kube, namespace, api_path: str, name: str, conditions: list[tuple[str, str]]):
    """Play the batch/Kubeflow controller: write conditions to the job's status subresource, as
    that controller writes them (`sobert_testbed.job_status`)."""
    from sobert_testbed.job_status import finished_status

    status = finished_status(conditions, batch=api_path == "jobs.batch")
    kube.kubectl(
        "patch", api_path, name, "-n", namespace, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": status}),
    )  # fmt: skip


def s3_secret(kube, namespace, s3_server) -> None:
    """The runs' storage Secret (`s3-creds`), holding the test S3 server's keys."""
    kube.kubectl(
        "create", "secret", "generic", "s3-creds", "-n", namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}",
    )  # fmt: skip


def walk_to_finetuning(kube, api, namespace) -> None:
    """Play the operators from the prepare Job to the RayJobs of run large-1: prepare complete,
    pretraining succeeded, conversion complete, both tasks' RayJobs created."""
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace), timeout=60)
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    set_job_condition(kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Succeeded", "")])
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-convert", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-convert", [("Complete", "")])
    for task in ("quality", "ner"):
        wait_for(lambda task=task: api.get("ray.io/v1", "RayJob", f"large-1-finetune-{task}", namespace))


def count(api, namespace, api_version, kind):
    from sobert_operator.render.common import LABEL_RUN

    resource = api.dynamic.resources.get(api_version=api_version, kind=kind)
    return len(resource.get(namespace=namespace, label_selector=LABEL_RUN).items)


def test_run_walks_every_phase_and_survives_a_controller_restart(kube, api, namespace, controller):
    start, stop = controller
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k",
        "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )
    runner = start()
    api.create(run_doc(), namespace)
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Preparing")
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Pretraining")

    stop(runner)  # controller restart mid-run
    set_job_condition(
        kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Created", ""), ("Running", "")]
    )
    runner = start()
    assert wait_for(
        lambda: run_status(api, namespace).get("stages", {}).get("pretrain", {}).get("jobPhase") == "Running"
    )
    set_job_condition(
        kube,
        namespace,
        "pytorchjobs.kubeflow.org",
        "large-1-pretrain",
        [("Created", ""), ("Restarting", "pod preempted")],
    )
    assert wait_for(lambda: run_status(api, namespace)["stages"]["pretrain"]["jobPhase"] == "Restarting")
    assert run_status(api, namespace)["phase"] == "Pretraining"
    set_job_condition(
        kube,
        namespace,
        "pytorchjobs.kubeflow.org",
        "large-1-pretrain",
        [("Created", ""), ("Running", ""), ("Succeeded", "")],
    )
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-convert", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-convert", [("Complete", "")])
    # Finetuning: one RayJob per task, created together.
    for task in ("quality", "ner"):
        wait_for(lambda task=task: api.get("ray.io/v1", "RayJob", f"large-1-finetune-{task}", namespace))
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Finetuning")
    set_rayjob_status(kube, namespace, "large-1-finetune-quality", "Complete", "SUCCEEDED")
    set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Running", "RUNNING")
    # RayJobs are watched: the first patch may be reconciled before the second lands.
    tasks = wait_for(
        lambda: (
            (t := run_status(api, namespace)["stages"]["finetune"]["tasks"])["quality"]["state"] == "succeeded"
            and t["ner"]["jobPhase"] == "Running"
            and t
        )
    )
    assert tasks["ner"] == {"state": "running", "job": "large-1-finetune-ner", "jobPhase": "Running"}
    assert run_status(api, namespace)["phase"] == "Finetuning"
    set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Complete", "SUCCEEDED")
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Succeeded" and s)
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["status"] == "True"
    # The run carries no finalizer: its deletion is never held up by the controller.
    assert not api.get(API_VERSION, KIND, "large-1", namespace)["metadata"].get("finalizers")
    # Restarts and repeated events never duplicated an owned object.
    assert count(api, namespace, "batch/v1", "Job") == 2
    assert count(api, namespace, "ray.io/v1", "RayJob") == 2
    assert count(api, namespace, "kubeflow.org/v1", "PyTorchJob") == 1
    assert count(api, namespace, "v1", "ConfigMap") == 1
    owner = api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace)["metadata"]["ownerReferences"][0]
    assert owner["kind"] == KIND and owner["name"] == "large-1" and owner["controller"] is True

    # Deleting the run deletes what it owns.
    api.dynamic.resources.get(api_version=API_VERSION, kind=KIND).delete(name="large-1", namespace=namespace)
    wait_for(lambda: api.get(API_VERSION, KIND, "large-1", namespace) is None)
    assert wait_for(
        lambda: (
            count(api, namespace, "kubeflow.org/v1", "PyTorchJob") == 0
            and count(api, namespace, "ray.io/v1", "RayJob") == 0
            and count(api, namespace, "batch/v1", "Job") == 0
            and count(api, namespace, "v1", "ConfigMap") == 0
        )
    )


def set_rayjob_status(kube, namespace, name: str, deployment: str, job: str, message: str = ""):
    """Play KubeRay: write jobDeploymentStatus/jobStatus (RayJobs carry no conditions)."""
    body = {"status": {"jobDeploymentStatus": deployment, "jobStatus": job} | ({"message": message} if message else {})}
    kube.kubectl(
        "patch", "rayjobs.ray.io", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(body)
    )


def test_failed_pretraining_fails_the_run_with_the_reason(kube, api, namespace, controller):
    start, _ = controller
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k",
        "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )
    start()
    api.create(run_doc(), namespace)
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    set_job_condition(
        kube,
        namespace,
        "pytorchjobs.kubeflow.org",
        "large-1-pretrain",
        [("Created", ""), ("Failed", "pod large-1-pretrain-master-0 exited with code 1")],
    )
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Failed" and s)
    assert "exited with code 1" in status["message"]
    assert api.get("batch/v1", "Job", "large-1-convert", namespace) is None


def test_a_failed_finetune_task_waits_for_the_others_and_all_failed_fails_the_run(kube, api, namespace, controller):
    """A failed task does not end the stage while another runs (its reason is in its task's
    status); when every task has failed the run fails at the first, with KubeRay's reason."""
    start, _ = controller
    kube.kubectl(
        "create", "secret", "generic", "s3-creds", "-n", namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k", "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )  # fmt: skip
    start()
    api.create(run_doc(), namespace)
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    set_job_condition(kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Succeeded", "")])
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-convert", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-convert", [("Complete", "")])
    wait_for(lambda: api.get("ray.io/v1", "RayJob", "large-1-finetune-ner", namespace))
    set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Failed", "FAILED", "entrypoint exited with code 2")

    def ner_failed():
        status = run_status(api, namespace)
        task = ((status.get("stages") or {}).get("finetune") or {}).get("tasks", {}).get("ner") or {}
        return task.get("state") == "failed" and status

    status = wait_for(ner_failed)
    assert status["phase"] == "Finetuning", status  # quality still runs
    assert "exited with code 2" in status["stages"]["finetune"]["tasks"]["ner"]["message"]
    set_rayjob_status(kube, namespace, "large-1-finetune-quality", "Failed", "FAILED", "entrypoint exited with code 1")
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Failed" and s)
    # Each task's reason (the tasks in the order the API server returns the run's spec: by name).
    assert status["message"] == (
        "stage finetune failed: every task failed (ner: FAILED: entrypoint exited with code 2; "
        "quality: FAILED: entrypoint exited with code 1)"
    ), status["message"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"parallel": {"nodes": 1, "procs_per_node": 8, "tensor_parallel": 3}}, "must divide the world size"),
        ({"placement": {"node_pool": "tpu"}}, "unknown node pool 'tpu'"),
        ({"placement": {"node_pool": "l4"}}, "exceeds the 4 GPUs per node of node pool 'l4'"),
        ({"storage": {"uri": "/local/dir"}}, "must be s3:// URIs"),
        ({"train": {"micro_batch_size": 32}, "parallel": {"procs_per_node": 8}}, "exceeds 90% of the 80 GiB"),
    ],
)
def test_invalid_runs_get_a_condition_and_create_nothing(kube, api, namespace, controller, spec, message):
    start, _ = controller
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k",
        "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )
    start()
    api.create(run_doc(**spec), namespace)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Invalid" and s)
    assert message in status["message"]
    assert status["conditions"][0]["reason"] == "InvalidSpec"
    assert count(api, namespace, "batch/v1", "Job") == 0 and count(api, namespace, "v1", "ConfigMap") == 0


def test_a_run_with_a_missing_or_bad_input_is_invalid_before_anything_is_created(
    kube, api, namespace, controller, s3_server, s3_bucket, capsys, monkeypatch
):
    """Inputs read with the run's Secret before its first stage: a missing task file and one whose
    records do not parse make the run `Invalid` (each named), and nothing is created; the CLI
    refuses the same run before creating it. The run with the files fixed goes on."""
    from sobert_api.storage import Storage
    from sobertctl.main import main

    start, _ = controller
    s3_secret(kube, namespace, s3_server)
    storage = Storage.open(f"s3://{s3_bucket}", s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key))
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    storage.upload_file(fixtures / "dump" / "example.stackexchange.com-Posts.xml", "dumps/Posts.xml")
    storage.upload_file(fixtures / "finetune" / "quality-bad-label.csv", "tasks/quality.csv")
    storage.upload_file(fixtures / "finetune" / "ner.txt", "tasks/ner/train.txt")
    bucket = f"s3://{s3_bucket}"
    endpoint = s3_server.endpoint_url
    spec = {
        "data": {"posts": [f"{bucket}/dumps/Posts.xml"]},
        "storage": {"uri": f"{bucket}/sobert", "endpoint_url": endpoint, "credentials_secret": "s3-creds"},
        "finetune": {
            "tasks": {
                "quality": {"train": f"{bucket}/tasks/quality.csv"},
                "ner": {"train": f"{bucket}/tasks/ner/train.txt", "validation": f"{bucket}/tasks/ner/dev.txt"},
            }
        },
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the CLI reads with the Secret's keys alone
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    spec_file = Path(kube.workdir) / f"{namespace}-inputs.yaml"
    spec_file.write_text(yaml.safe_dump({**run_doc()["spec"], **spec, "name": "large-1", "backend": "kubernetes"}))
    assert main(["submit", "-f", str(spec_file), "--backend", "kubernetes", "-n", namespace]) == 2
    refused = capsys.readouterr().err
    assert "finetune.tasks.ner.validation" in refused and "dev.txt: not found" in refused, refused
    assert "finetune.tasks.quality.train" in refused and ":7: Y 'MEDIUM' is not one of" in refused, refused
    assert api.get(API_VERSION, KIND, "large-1", namespace) is None

    start({**CLUSTER, "check_inputs": True})
    api.create(run_doc(**spec), namespace)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Invalid" and s)
    assert status["conditions"][0]["reason"] == "InvalidInput"
    message = status["message"]
    assert f"finetune.tasks.ner.validation: {bucket}/tasks/ner/dev.txt: not found" in message, message
    assert "finetune.tasks.quality.train" in message and "Y 'MEDIUM' is not one of HQ" in message, message
    assert s3_server.secret_key not in json.dumps(status)
    assert count(api, namespace, "batch/v1", "Job") == 0 and count(api, namespace, "v1", "ConfigMap") == 0

    # Fixed: the files uploaded and the spec edited (a new generation), the run goes on.
    storage.upload_file(fixtures / "finetune" / "quality.csv", "tasks/quality.csv")
    storage.upload_file(fixtures / "finetune" / "ner.txt", "tasks/ner/dev.txt")
    kube.kubectl("patch", "sobertrun", "large-1", "-n", namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"budget": {"usd": 100000}}}))  # fmt: skip
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace), timeout=60)


def test_missing_secret_waits_then_proceeds(kube, api, namespace, controller):
    start, _ = controller
    start()
    api.create(run_doc(), namespace)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Pending" and s)
    assert "s3-creds" in status["message"] and status["conditions"][0]["reason"] == "SecretMissing"
    assert count(api, namespace, "batch/v1", "Job") == 0
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k",
        "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))


def test_a_reconcile_that_must_wait_says_so_in_an_event_on_the_run(kube, api, namespace, controller):
    """kopf hands `on.event` handlers a logger that posts no Events: the controller logs a run's
    reconciles through the run's own, so a retry is an Event on the run, as `kubectl describe`
    shows it. Here its storage cannot be reached to check its inputs."""
    start, _ = controller
    kube.kubectl(
        "create", "secret", "generic", "s3-creds", "-n", namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k", "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )  # fmt: skip
    start({**CLUSTER, "check_inputs": True})
    unreachable = {"uri": "s3://bucket/sobert", "endpoint_url": "http://127.0.0.1:9", "credentials_secret": "s3-creds"}
    api.create(run_doc(storage=unreachable), namespace)

    def warning_on_the_run():
        listed = json.loads(kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
        return next(
            (
                event
                for event in listed
                if event["involvedObject"]["kind"] == KIND
                and event["involvedObject"]["name"] == "large-1"
                and event["type"] == "Warning"
                and "cannot check the run's inputs" in event["message"]
            ),
            None,
        )

    event = wait_for(warning_on_the_run, timeout=60)
    assert "retrying in 30 s" in event["message"], event["message"]
    assert count(api, namespace, "batch/v1", "Job") == 0


def test_a_run_left_with_an_older_controllers_finalizer_can_still_be_deleted(kube, api, namespace, controller):
    """Earlier controllers put a finalizer on every run (kopf's, for its timer and delete
    handler); this one adds none, so it must take that one off, or the run could never go."""
    from sobert_operator.controller.handlers import LEGACY_FINALIZER

    start, _ = controller
    doc = run_doc()
    doc["metadata"]["finalizers"] = [LEGACY_FINALIZER, "example.com/keep"]
    api.create(doc, namespace)
    start()
    assert wait_for(
        lambda: api.get(API_VERSION, KIND, "large-1", namespace)["metadata"].get("finalizers") == ["example.com/keep"]
    )
    kube.kubectl(
        "patch",
        "sobertruns.sobert.dev",
        "large-1",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    api.dynamic.resources.get(api_version=API_VERSION, kind=KIND).delete(name="large-1", namespace=namespace)
    assert wait_for(lambda: api.get(API_VERSION, KIND, "large-1", namespace) is None)


def test_status_shows_trainer_progress_from_s3_and_the_cli_reports_it(
    kube, api, namespace, controller, s3_server, s3_bucket, monkeypatch
):
    from sobert_api.storage import Storage

    start, _ = controller
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        f"--from-literal=AWS_ACCESS_KEY_ID={s3_server.access_key}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={s3_server.secret_key}",
    )
    storage_uri = f"s3://{s3_bucket}/sobert"
    record = {
        "step": 120,
        "train_iters": 51499,
        "consumed_tokens": 120 * 524288,
        "loss": 6.25,
        "tokens_per_s": 412345.0,
        "time": 1795395499.4,
    }
    Storage.open(storage_uri).write_bytes("runs/large-1/pretrain/progress.jsonl", (json.dumps(record) + "\n").encode())
    # The controller must use the Secret's keys, not this process's environment.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    start()
    api.create(
        run_doc(storage={"uri": storage_uri, "endpoint_url": s3_server.endpoint_url, "credentials_secret": "s3-creds"}),
        namespace,
    )
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    set_job_condition(
        kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Created", ""), ("Running", "")]
    )
    status = wait_for(lambda: (s := run_status(api, namespace)).get("pretrain") and s)
    assert status["pretrain"]["step"] == 120 and status["pretrain"]["loss"] == 6.25
    assert s3_server.secret_key not in json.dumps(status)  # the secret never lands in status

    # The CLI as users run it (a subprocess; kopf's in-process runner owns sys.stdout here).
    def cli(*args):
        env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig)}
        return subprocess.run(
            [sys.executable, "-m", "sobertctl.main", *args], capture_output=True, text=True, env=env, timeout=120
        )

    out = cli("status", "-n", namespace).stdout.splitlines()
    assert out[0].split()[:5] == ["NAME", "PRESET", "PHASE", "STAGE", "STEP"]
    assert out[1].split()[:5] == ["large-1", "large", "Pretraining", "pretrain", "120/51499"]
    shown = json.loads(cli("status", "large-1", "-n", namespace, "-o", "json").stdout)
    assert shown["status"]["pretrain"]["tokensPerSecond"] == 412345.0
    assert "No pods yet for run large-1, stage pretrain" in cli("logs", "large-1", "-n", namespace).stderr

    # On to finetuning: a finished task's metrics.json (as the RayJob's driver writes it) reaches status.
    set_job_condition(kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Succeeded", "")])
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-convert", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-convert", [("Complete", "")])
    wait_for(lambda: api.get("ray.io/v1", "RayJob", "large-1-finetune-ner", namespace))
    metrics = {
        "task": "ner", "primary_metric": "f1", "score": 0.5123, "hf_step": 51499, "best_epoch": 2,
        "train_examples": 11269, "validation_examples": 3535, "validation": {"f1": 0.5123, "precision": 0.5},
    }  # fmt: skip
    Storage.open(storage_uri, s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key)).write_json(
        "runs/large-1/finetune/ner/metrics.json", metrics
    )
    set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Complete", "SUCCEEDED")
    status = wait_for(lambda: (s := run_status(api, namespace)).get("finetune") and s)
    assert status["finetune"]["ner"]["score"] == 0.5123 and status["finetune"]["ner"]["metric"] == "f1"
    row = cli("status", "-n", namespace).stdout.splitlines()[1]
    assert "1/2 ner 0.512" in row
    assert "No pods yet for run large-1, stage finetune" in cli("logs", "large-1", "-n", namespace).stderr
    assert cli("cancel", "large-1", "-n", namespace).returncode == 0
    wait_for(lambda: api.get(API_VERSION, KIND, "large-1", namespace) is None)
    assert "No SobertRuns in namespace" in cli("status", "-n", namespace).stdout
    missing = cli("status", "nope", "-n", namespace)
    assert missing.returncode == 1 and "SobertRun" in missing.stderr and "not found" in missing.stderr


def test_cli_submit_creates_the_run_and_prints_next_steps(kube, api, namespace, monkeypatch, capsys):
    from sobertctl.main import main

    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    argv = [
        "submit",
        "large",
        "--backend",
        "kubernetes",
        "--name",
        "cli-run",
        "-n",
        namespace,
        "--posts",
        "s3://dumps/stackoverflow.com-Posts.7z",
        "--storage",
        "s3://bucket/sobert",
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--tp",
        "2",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"sobertctl status cli-run -n {namespace}" in out and "sobertctl cancel cli-run" in out
    stored = api.get(API_VERSION, KIND, "cli-run", namespace)
    assert stored["spec"]["parallel"] == {
        "nodes": 2,
        "procs_per_node": 8,
        "tensor_parallel": 2,
        "distributed_timeout_minutes": 60,
        "distributed_optimizer": True,
        "overlap_grad_reduce": True,
    }
    assert stored["spec"]["backend"] == "kubernetes"
    assert main(argv) == 1  # a second submit of the same name is refused
    assert "already exists" in capsys.readouterr().err


def test_missing_prerequisite_crd_is_reported_not_a_crash(kube, api, namespace, controller):
    """Last in the module: removes the TrainJob CRD."""
    start, _ = controller
    kube.kubectl(
        "create",
        "secret",
        "generic",
        "s3-creds",
        "-n",
        namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k",
        "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )
    kube.kubectl("delete", "crd", "trainjobs.trainer.kubeflow.org")
    wait_for(lambda: kube.kubectl("get", "crd", "trainjobs.trainer.kubeflow.org", check=False).returncode != 0)
    start({**CLUSTER, "pretrainTarget": "trainjob"})
    api.create(run_doc(), namespace)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "Pending" and s)
    assert status["conditions"][0]["reason"] == "PrerequisitesMissing"
    assert "TrainJob (trainer.kubeflow.org/v1alpha1) is not served" in status["message"]
    assert count(api, namespace, "batch/v1", "Job") == 0


def test_budget_warns_checkpoints_and_suspends_in_order_then_resumes_after_a_raise(
    kube, api, namespace, controller, s3_server, s3_bucket
):
    """Spend simulated by a pod's start time: 85% warns, 96% asks for a checkpoint, 101% suspends."""
    from sobert_api.storage import Storage
    from sobert_operator.cost.catalog import load_catalog

    start, _ = controller
    s3_secret(kube, namespace, s3_server)
    kube.kubectl("create", "serviceaccount", "default", "-n", namespace)  # no controller-manager makes it here
    storage_uri = f"s3://{s3_bucket}/sobert"
    start()
    storage = {"uri": storage_uri, "endpoint_url": s3_server.endpoint_url, "credentials_secret": "s3-creds"}
    api.create(run_doc(storage=storage, budget={"usd": 100}), namespace)
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    job = wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    burn = 32 * load_catalog().price("h100").usd_per_gpu_hour  # 4 nodes x 8 GPUs of the h100 pool
    # activeDeadlineSeconds: what $100 buys at the job's burn rate.
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == pytest.approx(100 / burn * 3600, abs=2)
    set_job_condition(kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Running", "")])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "large-1-pretrain-master-0",
                     "labels": {"sobert.dev/run": "large-1", "sobert.dev/stage": "pretrain"}},
        # No token controller on the testbed: a pod that mounts no token needs none.
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "pytorch", "image": "trainer:1",
                 "resources": {"requests": {"nvidia.com/gpu": "32"}, "limits": {"nvidia.com/gpu": "32"}}}]},
    }  # fmt: skip
    assert api.create(pod, namespace)

    def spend_to(share: float) -> None:
        started = time.time() - share * 100 / burn * 3600
        body = {"status": {"phase": "Running", "startTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}}
        kube.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                     "--type=merge", "-p", json.dumps(body))  # fmt: skip

    def cost():
        return run_status(api, namespace).get("cost") or {}

    spend_to(0.85)
    assert wait_for(lambda: cost().get("action") == "warn")
    conditions = {c["type"]: c for c in run_status(api, namespace)["conditions"]}
    assert conditions["BudgetWarning"]["status"] == "True" and "of $100.00" in conditions["BudgetWarning"]["message"]
    request_key = "runs/large-1/control/checkpoint-request.json"
    s3 = Storage.open(storage_uri, s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key))
    assert not s3.exists(request_key)

    spend_to(0.96)
    assert wait_for(lambda: cost().get("action") == "checkpoint")
    assert wait_for(lambda: s3.exists(request_key))
    first_request = s3.read_json(request_key)["id"]
    assert (
        api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace)["spec"]["runPolicy"]["suspend"] is False
    )

    spend_to(1.01)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("phase") == "BudgetStopped" and s)
    assert "budget spent" in status["message"] and status["cost"]["spentUsd"] >= 100
    suspended = api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace)
    assert suspended["spec"]["runPolicy"]["suspend"] is True
    assert s3.read_json(request_key)["id"] == first_request  # asked once, not on every resync
    events = kube.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    reasons = [
        e["reason"] for e in sorted(json.loads(events)["items"], key=lambda e: e["metadata"]["creationTimestamp"])
    ]
    budget_reasons = [r for r in reasons if r.startswith("Budget")]
    assert budget_reasons[:3] == ["BudgetWarning", "BudgetCheckpoint", "BudgetExceeded"]

    # Raise the budget: the job resumes and the run is back to pretraining.
    resource = api.dynamic.resources.get(api_version=API_VERSION, kind=KIND)
    resource.patch(name="large-1", namespace=namespace, body={"spec": {"budget": {"usd": 1000}}},
                   content_type="application/merge-patch+json")  # fmt: skip
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Pretraining")
    resumed = api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace)
    assert resumed["spec"]["runPolicy"]["suspend"] is False
    assert cost()["action"] == "ok" and cost()["budgetUsd"] == 1000
    # Prometheus metrics carry the same figures.
    import urllib.request

    scraped = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    assert 'sobert_run_budget_usd{run="large-1"} 1000.0' in scraped
    assert 'sobert_run_phase{phase="Pretraining",run="large-1"} 1.0' in scraped
    assert "sobert_run_spend_usd" in scraped and "sobert_run_forecast_usd" in scraped


def test_a_finished_stage_is_not_rerun_when_its_job_is_gone(kube, api, namespace, controller, s3_server, s3_bucket):
    """The prepare Job and the PyTorchJob removed by their ttlSecondsAfterFinished while the run goes
    on: their outputs are published, so neither stage starts again (no second multi-GPU job)."""
    from sobert_api.storage import Storage

    start, _ = controller
    s3_secret(kube, namespace, s3_server)
    storage_uri = f"s3://{s3_bucket}/sobert"
    s3 = Storage.open(storage_uri, s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key))
    start()
    storage = {"uri": storage_uri, "endpoint_url": s3_server.endpoint_url, "credentials_secret": "s3-creds"}
    api.create(run_doc(storage=storage), namespace)
    status = wait_for(lambda: (s := run_status(api, namespace)).get("datasetId") and s)
    # What the prepare Job publishes, then its completion.
    s3.write_json(f"data/{status['datasetId']}/manifest.json", {"dataset_id": status["datasetId"], "files": {}})
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-prepare", namespace))
    set_job_condition(kube, namespace, "jobs.batch", "large-1-prepare", [("Complete", "")])
    wait_for(lambda: api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace))
    # Pretraining publishes its final checkpoint and succeeds; conversion starts.
    from sobert_api import build_spec

    iters = build_spec({**run_doc()["spec"], "name": "large-1"}).train_iters
    s3.write_json(f"runs/large-1/pretrain/checkpoints/iter_{iters:07d}/manifest.json", {"step": iters, "files": {}})
    set_job_condition(kube, namespace, "pytorchjobs.kubeflow.org", "large-1-pretrain", [("Succeeded", "")])
    wait_for(lambda: api.get("batch/v1", "Job", "large-1-convert", namespace))
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Converting")

    # The TTL controller's part: both finished jobs are deleted.
    kube.kubectl("delete", "job", "large-1-prepare", "-n", namespace)
    kube.kubectl("delete", "pytorchjob", "large-1-pretrain", "-n", namespace)
    time.sleep(8)  # several resyncs (SOBERT_RESYNC_SECONDS=2)
    assert api.get("batch/v1", "Job", "large-1-prepare", namespace) is None
    assert api.get("kubeflow.org/v1", "PyTorchJob", "large-1-pretrain", namespace) is None
    status = run_status(api, namespace)
    assert status["phase"] == "Converting"
    assert status["stages"]["prepare"]["state"] == status["stages"]["pretrain"]["state"] == "succeeded"


def test_rayjob_changes_move_the_run_without_waiting_for_the_resync(kube, api, namespace, tmp_path):
    """The controller watches its RayJobs as it watches its other jobs: with the resync at 10
    minutes, a task finishing still moves the run on in seconds. (A controller process of its own:
    the resync interval is fixed when the controller module is imported.)"""
    kube.kubectl(
        "create", "secret", "generic", "s3-creds", "-n", namespace,
        "--from-literal=AWS_ACCESS_KEY_ID=k", "--from-literal=AWS_SECRET_ACCESS_KEY=s",
    )  # fmt: skip
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(CLUSTER))
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.kubeconfig),
        "SOBERT_CLUSTER_CONFIG": str(config),
        "SOBERT_RESYNC_SECONDS": "600",
        "SOBERT_METRICS_PORT": str(METRICS_PORT + 1),
    }
    command = [sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace]
    command += ["-m", "sobert_operator.controller.main"]
    with open(tmp_path / "controller.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        api.create(run_doc(), namespace)
        walk_to_finetuning(kube, api, namespace)
        set_rayjob_status(kube, namespace, "large-1-finetune-quality", "Complete", "SUCCEEDED")
        set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Complete", "SUCCEEDED")
        wait_for(lambda: run_status(api, namespace).get("phase") == "Succeeded", timeout=20)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_finished_runs_ray_cluster_is_priced_until_it_is_gone(kube, api, namespace, controller, s3_server, s3_bucket):
    """The run is Succeeded when its last task's job ends; the task's Ray cluster lives on for its
    TTL. Its GPU pods stay in the ledger until they are gone, even when they vanish unseen."""
    from sobert_api.storage import Storage
    from sobert_operator.cost.records import read_ledger

    start, _ = controller
    s3_secret(kube, namespace, s3_server)
    kube.kubectl("create", "serviceaccount", "default", "-n", namespace)  # no controller-manager makes it here
    storage_uri = f"s3://{s3_bucket}/sobert"
    s3 = Storage.open(storage_uri, s3_server.endpoint_url, (s3_server.access_key, s3_server.secret_key))
    start()
    storage = {"uri": storage_uri, "endpoint_url": s3_server.endpoint_url, "credentials_secret": "s3-creds"}
    api.create(run_doc(storage=storage), namespace)
    walk_to_finetuning(kube, api, namespace)
    worker = "large-1-finetune-ner-train-worker-0"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": worker, "labels": {"sobert.dev/run": "large-1", "sobert.dev/stage": "finetune",
                                                "sobert.dev/task": "ner"}},
        "spec": {"automountServiceAccountToken": False, "containers": [{"name": "ray-worker", "image": "trainer:1",
                 "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}]},
    }  # fmt: skip
    assert api.create(pod, namespace)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    kube.kubectl("patch", "pod", worker, "-n", namespace, "--subresource=status", "--type=merge",
                 "-p", json.dumps({"status": {"phase": "Running", "startTime": started}}))  # fmt: skip
    set_rayjob_status(kube, namespace, "large-1-finetune-quality", "Complete", "SUCCEEDED")
    set_rayjob_status(kube, namespace, "large-1-finetune-ner", "Complete", "SUCCEEDED")
    assert wait_for(lambda: run_status(api, namespace).get("phase") == "Succeeded")
    cost = wait_for(lambda: (c := run_status(api, namespace).get("cost") or {}).get("openPods") and c)
    assert worker in cost["openPods"]
    first = cost["spentUsd"]
    assert first > 0
    time.sleep(3)
    assert wait_for(lambda: run_status(api, namespace)["cost"]["spentUsd"] > first)  # still priced after Succeeded

    # KubeRay deletes the cluster at the end of its TTL: the pod is gone before anyone saw it end.
    kube.kubectl("delete", "pod", worker, "-n", namespace, "--wait=true")
    ended = wait_for(lambda: [a for a in read_ledger(s3, "large-1") if a.name == worker])
    assert ended[0].end is not None and ended[0].reason == "Deleted" and ended[0].phase == "finetune/ner"
    assert ended[0].end - ended[0].start >= 3600
    assert wait_for(lambda: not run_status(api, namespace)["cost"].get("openPods"))
