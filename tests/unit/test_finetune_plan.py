"""The finetune stage in the pure layers: spec, pipeline, RayJob renderer, controller plan."""

import pytest

from sobert_api import build_spec
from sobert_api.loading import SpecError
from sobert_api.spec import TaskName
from sobert_operator.cluster import RAY_VERSION, default_cluster_config
from sobert_operator.kube.observe import failure_message, job_phase, job_state
from sobert_operator.kube.plan import is_terminal, plan, render_all, stage_objects
from sobert_operator.pipeline import Observed, Stage, StageState, next_stage
from sobert_operator.render.finetune import render_rayjob

TASKS = {
    "quality": {"train": "s3://bkt/quality.jsonl"},
    "ner": {"train": "s3://bkt/ner/train.txt", "validation": "s3://bkt/ner/dev.txt", "workers": 4},
}


def spec(**finetune):
    return build_spec(
        {
            "preset": "base",
            "name": "r1",
            "backend": "kubernetes",
            "data": {"posts": ["s3://bkt/Posts.xml"]},
            "storage": {"uri": "s3://bkt/sobert"},
            "parallel": {"procs_per_node": 8},
            "finetune": {"tasks": TASKS, **finetune},
        }
    )


def rayjob(deployment, job=None, **extra):
    return {"kind": "RayJob", "status": {"jobDeploymentStatus": deployment, "jobStatus": job, **extra}}


def test_finetune_tasks_need_training_files_except_obsoletion():
    with pytest.raises(SpecError, match=r"finetune\.tasks\.quality\.train: a training file is required"):
        build_spec({"preset": "tiny", "name": "x", "data": {"posts": ["p"]}, "storage": {"uri": "/s"},
                    "finetune": {"tasks": {"quality": {}}}})  # fmt: skip
    with pytest.raises(SpecError, match="must be s3:// URIs"):
        spec(tasks={"quality": {"train": "/local/q.jsonl"}})
    with pytest.raises(SpecError, match=r"max_length \(4096\) exceeds model\.max_position_embeddings"):
        spec(tasks={"quality": {"train": "s3://bkt/q", "max_length": 4096}})
    # Weak labels come from the run's own comments: without any, a labelled CSV is required.
    with pytest.raises(SpecError, match=r"obsoletion\.train: a labelled CSV is required when data\.comments is empty"):
        spec(tasks={"obsoletion": {}})
    weak = build_spec({**spec().model_dump(mode="json"), "data": {"posts": ["s3://b/P.xml"], "comments": ["s3://b/C.xml"]},
                       "finetune": {"tasks": {"obsoletion": {}}}})  # fmt: skip
    assert weak.finetune.tasks


def test_pipeline_finetunes_after_conversion_until_every_task_has_results():
    s = spec()
    converted = Observed(dataset_published=True, checkpoint_step=s.train_iters, hf_step=s.train_iters)
    assert next_stage(s, converted) is Stage.finetune
    assert converted.missing_tasks(s) == ["quality", "ner"]
    partial = Observed(**{**converted.__dict__, "finetuned": frozenset({"ner"})})
    assert next_stage(s, partial) is Stage.finetune and partial.missing_tasks(s) == ["quality"]
    done = Observed(**{**converted.__dict__, "finetuned": frozenset({"ner", "quality"})})
    assert next_stage(s, done) is None
    no_tasks = spec(tasks={})
    assert next_stage(no_tasks, converted) is None


def test_rayjob_state_from_kuberay_status():
    assert job_state(rayjob("Initializing")) is StageState.running
    assert job_state(rayjob("Running", "RUNNING")) is StageState.running
    assert job_state(rayjob("Retrying")) is StageState.running
    assert job_state(rayjob("Complete", "SUCCEEDED")) is StageState.succeeded
    assert job_state(rayjob("Complete", "FAILED")) is StageState.failed
    assert job_state(rayjob("Failed", "FAILED", reason="AppFailed", message="exit 1")) is StageState.failed
    assert failure_message(rayjob("Failed", "FAILED", reason="AppFailed", message="exit 1")) == "AppFailed: exit 1"
    assert job_phase({"kind": "RayJob"}) == "Pending"


def test_rayjob_render():
    cluster = default_cluster_config()
    job = render_rayjob(spec(use_gpu=False), cluster, TaskName.quality)  # base finetunes on GPUs by default
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"] == "r1-finetune-quality"
    assert job["metadata"]["labels"]["sobert.dev/task"] == "quality"
    body = job["spec"]
    assert body["entrypoint"] == "python -m sobert_trainer.finetune --spec=/etc/sobert/spec.json --task=quality"
    # The task's Ray cluster (GPU workers included) goes a minute after its job ends, not a day later:
    # KubeRay deletes it at EndTime + ttlSecondsAfterFinished and keeps the submitter (the driver's log).
    assert body["shutdownAfterJobFinishes"] is True and body["ttlSecondsAfterFinished"] == 60
    cluster_spec = body["rayClusterSpec"]
    assert cluster_spec["rayVersion"] == RAY_VERSION
    assert cluster_spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    workers = cluster_spec["workerGroupSpecs"][0]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    container = workers["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "sobert-s3"
    ner = render_rayjob(spec(use_gpu=True), cluster, TaskName.ner)
    gpu_workers = ner["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert gpu_workers["replicas"] == 4  # the task's own worker count
    assert gpu_workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_workers["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_ray_version_matches_the_pinned_ray():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "trainer" / "pyproject.toml").read_text())
    pins = [d for extra in project["project"]["optional-dependencies"].values() for d in extra if d.startswith("ray")]
    assert pins and all(RAY_VERSION in pin for pin in pins), pins


def test_plan_starts_every_task_together_then_waits_for_each_to_end():
    s, cluster = spec(), default_cluster_config()
    names = [o.name for o in stage_objects(s, cluster)]
    assert names == ["r1-prepare", "r1-pretrain", "r1-convert", "r1-finetune-quality", "r1-finetune-ner"]
    done = {"kind": "Job", "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    jobs = {"r1-prepare": done, "r1-pretrain": {**done, "kind": "PyTorchJob"}, "r1-convert": done}
    first = plan(s, cluster, "so-1", jobs, "now", configmap_exists=True)
    assert [o["metadata"]["name"] for o in first.create] == ["r1-finetune-quality", "r1-finetune-ner"]
    assert first.status["phase"] == "Finetuning"
    running = plan(s, cluster, "so-1", {**jobs, "r1-finetune-quality": rayjob("Complete", "SUCCEEDED"),
                                         "r1-finetune-ner": rayjob("Running")}, "now", True)  # fmt: skip
    assert running.create == [] and running.decision.action == "wait"
    assert running.status["stages"]["finetune"]["tasks"]["quality"]["state"] == "succeeded"
    # A failed task does not stop the other: the stage waits for it, the failure shown by task.
    broken = {**jobs, "r1-finetune-quality": rayjob("Running"), "r1-finetune-ner": rayjob("Failed", message="OOM")}
    waiting = plan(s, cluster, "so-1", broken, "now", True)
    assert waiting.decision.action == "wait" and waiting.status["phase"] == "Finetuning"
    ner = waiting.status["stages"]["finetune"]["tasks"]["ner"]
    assert ner["state"] == "failed" and "OOM" in ner["message"], ner
    # The other task succeeds: a partial success, each task's outcome in the message.
    partly = plan(s, cluster, "so-1", {**broken, "r1-finetune-quality": rayjob("Complete", "SUCCEEDED")}, "now", True)
    assert partly.status["phase"] == "PartiallySucceeded" and partly.status["stages"]["finetune"]["state"] == "partial"
    assert "1 of 2 finetune tasks failed (quality succeeded, ner failed)" in partly.status["message"]
    assert partly.event is not None and partly.event[0] == "PartiallySucceeded"
    assert is_terminal(partly.status)
    # Every task failed: the run failed, at the first failed task.
    all_failed = {**broken, "r1-finetune-quality": rayjob("Failed", message="bad input")}
    failed = plan(s, cluster, "so-1", all_failed, "now", True)
    assert failed.status["phase"] == "Failed", failed.status
    assert failed.status["message"] == (
        "stage finetune failed: every task failed (quality: Failed: bad input; ner: Failed: OOM)"
    ), failed.status["message"]
    assert [o["kind"] for o in render_all(s, cluster, "so-1")].count("RayJob") == 2


def test_status_table_shows_finetune_progress_and_scores():
    from sobertctl.kube import finetune_cell

    stages = {"finetune": {"tasks": {"quality": {"state": "succeeded"}, "ner": {"state": "running"}}}}
    status = {"stages": stages, "finetune": {"quality": {"score": 0.61234, "metric": "macro_f1"}}}
    assert finetune_cell(status) == "1/2 quality 0.612"
    stages["finetune"]["tasks"]["ner"]["state"] = "failed"
    assert finetune_cell(status) == "1/2 quality 0.612 ner failed"
    assert finetune_cell({"stages": {"finetune": {"state": "succeeded"}}}) == "-"


def test_status_table_shows_spend_against_budget():
    from sobertctl.kube import spent_cell

    assert spent_cell({"cost": {"spentUsd": 12.4, "budgetUsd": 800}}) == "$12.40/$800.00"
    assert spent_cell({"cost": {"spentUsd": 0.5}}) == "$0.500000"
    assert spent_cell({}) == "-"
