"""Finetuning for real: 2-worker Ray Train jobs on CPU from a tiny converted model, on a real S3 server.

One classification task (question quality) and NER, each through the RayJob entrypoint
(`python -m sobert_trainer.finetune`), with Ray Train's run directory, the best checkpoint and
metrics.json in S3; then `sobertctl eval` on a split the model never trained on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_path
from sobert_api import build_spec, paths
from sobert_api.storage import Storage
from sobert_operator.local_executor import LocalExecutor
from sobert_operator.pipeline import Stage
from sobert_operator.published import observe
from sobert_operator.run_record import record_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def converted(tmp_path_factory, so_dump) -> Path:
    """A tiny pretrained + converted model (local storage), fetched to a directory."""
    root = tmp_path_factory.mktemp("tiny")
    spec = build_spec(
        {
            "preset": "tiny",
            "name": "base-model",
            "data": {"posts": so_dump["posts"], "comments": so_dump["comments"]},
            "storage": {"uri": str(root / "store")},
            "parallel": {"procs_per_node": 2},
        }
    )
    LocalExecutor(spec, root / "work", emit=lambda _line: None).run()
    model = root / "hf"
    Storage.open(spec.storage.uri).fetch_tree(paths.hf_prefix(spec.name), model)
    return model


def s3_run(bucket: str, endpoint: str, converted: Path, so_dump, tmp_path: Path, tasks: dict):
    """A run on S3 whose converted model is already published (as if convert had run there)."""
    spec = build_spec(
        {
            "preset": "tiny",
            "name": "ft",
            "data": {"posts": so_dump["posts"], "comments": so_dump["comments"]},
            "storage": {"uri": f"s3://{bucket}/sobert", "endpoint_url": endpoint},
            "finetune": {"workers": 2, "tasks": tasks},
        }
    )
    storage = Storage.open(spec.storage.uri, endpoint)
    storage.publish_tree(converted, paths.hf_prefix(spec.name), extra={"step": 40})
    record_spec(spec, storage)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    return spec, storage, spec_file


def finetune(spec_file: Path, task: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    command = [sys.executable, "-m", "sobert_trainer.finetune", f"--spec={spec_file}", f"--task={task}"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


RECIPE = {"epochs": 2, "batch_size": 8, "learning_rate": 5e-4, "max_length": 128}


def test_quality_two_workers_checkpoints_to_s3(s3_server, s3_bucket, converted, so_dump, tmp_path):
    from transformers import MegatronBertForSequenceClassification

    train = shared_path("question_quality", "processed_valid_sample.jsonl")
    task = {"train": str(train), "max_train_examples": 96, "max_eval_examples": 48, **RECIPE}
    _, storage, spec_file = s3_run(s3_bucket, s3_server.endpoint_url, converted, so_dump, tmp_path, {"quality": task})
    result = finetune(spec_file, "quality")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "finetune quality: macro_f1=" in result.stdout

    metrics = storage.read_json(paths.finetune_metrics_key("ft", "quality"))
    assert metrics["hf_step"] == 40 and metrics["workers"] == 2
    assert (metrics["train_examples"], metrics["validation_examples"]) == (96, 48)
    assert [h["epoch"] for h in metrics["history"]] == [0, 1]
    assert metrics["score"] == max(h["score"] for h in metrics["history"])
    validation = metrics["validation"]
    assert validation["examples"] == 48 and 0 <= validation["accuracy"] <= 1
    assert sum(map(sum, validation["confusion_matrix"])) == 48
    assert metrics["history"][0]["train_examples_per_second"] > 0
    # Ray Train's run directory (per-epoch checkpoint, results) lives in the run's S3 prefix.
    ray_keys = storage.list(paths.finetune_ray_prefix("ft", "quality"))
    assert any("checkpoint_" in key for key in ray_keys), ray_keys[:10]
    # The best checkpoint is published with a manifest and loads as a classifier with the labels.
    best = tmp_path / "best"
    storage.fetch_tree(paths.finetune_checkpoint_prefix("ft", "quality"), best)
    model = MegatronBertForSequenceClassification.from_pretrained(best)
    assert model.config.id2label == {0: "HQ", 1: "LQ_EDIT", 2: "LQ_CLOSE"}


def test_ner_two_workers_then_eval_on_a_split_it_never_saw(s3_server, s3_bucket, converted, so_dump, tmp_path):
    train, dev = shared_path("ner", "train.txt"), shared_path("ner", "dev.txt")
    task = {"train": str(train), "max_train_examples": 160, "max_eval_examples": 64, **RECIPE}
    spec, storage, spec_file = s3_run(s3_bucket, s3_server.endpoint_url, converted, so_dump, tmp_path, {"ner": task})
    result = finetune(spec_file, "ner")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = storage.read_json(paths.finetune_metrics_key("ft", "ner"))
    assert metrics["kind"] == "token" and metrics["primary_metric"] == "f1"
    assert metrics["labels"][0] == "O" and len(metrics["labels"]) == 1 + 2 * 20
    validation = metrics["validation"]
    assert validation["sentences"] == 64
    assert 0 <= validation["precision"] <= 1 and 0 <= validation["token_accuracy"] <= 1

    env = {**os.environ}
    cli = [sys.executable, "-m", "sobertctl.main", "eval", "ft", "--storage", spec.storage.uri]
    cli += ["--endpoint-url", s3_server.endpoint_url, "--split", f"ner={dev}"]
    result = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "| ner | dev |" in result.stdout
    report = storage.read_json(paths.finetune_eval_key("ft", "ner", "dev"))
    assert report["metrics"]["sentences"] > 1000  # the whole dev file, minus metadata sentences
    assert json.dumps(report).count("AWS_SECRET") == 0


def test_task_data_errors_exit_2_with_the_file(s3_server, s3_bucket, converted, so_dump, tmp_path):
    bad = tmp_path / "quality.jsonl"
    bad.write_text('{"text": "how do I sort a list", "rating": "MAYBE"}\n')
    task = {"train": str(bad), **RECIPE}
    _, storage, spec_file = s3_run(s3_bucket, s3_server.endpoint_url, converted, so_dump, tmp_path, {"quality": task})
    result = finetune(spec_file, "quality")
    assert result.returncode == 2
    assert str(bad) in result.stderr and "MAYBE" in result.stderr
    assert not storage.exists(paths.finetune_metrics_key("ft", "quality"))
    # The driver's output outlives its Ray cluster: a copy is in storage, failure or not.
    driver_log = storage.read_bytes(paths.finetune_driver_log_key("ft", "quality")).decode()
    assert "MAYBE" in driver_log and str(bad) in driver_log


def test_local_executor_finetunes_from_a_relative_prefix_and_skips_done_tasks(
    converted, so_dump, tmp_path, monkeypatch
):
    """The embedded backend's finetune stage (as `make run` runs it), storage given as a relative path."""
    monkeypatch.chdir(tmp_path)
    labelled = Path(__file__).resolve().parents[1] / "fixtures" / "finetune" / "obsoletion-labelled.csv"
    spec = build_spec(
        {
            "preset": "tiny",
            "name": "rel",
            "data": {"posts": so_dump["posts"], "comments": so_dump["comments"]},
            "storage": {"uri": "store"},
            "finetune": {"workers": 2, "tasks": {"obsoletion": {"train": str(labelled), **RECIPE}}},
        }
    )
    storage = Storage.open("store")
    storage.publish_tree(converted, paths.hf_prefix("rel"), extra={"step": 40})
    record_spec(spec, storage)
    executor = LocalExecutor(spec, tmp_path / "work", emit=lambda _line: None)
    assert executor.observe().missing_tasks(spec) == ["obsoletion"]
    executor.run_stage(Stage.finetune)
    metrics = storage.read_json(paths.finetune_metrics_key("rel", "obsoletion"))
    assert (
        metrics["labels"] == ["current", "obsolete"]
        and metrics["train_examples"] + metrics["validation_examples"] == 48
    )
    assert observe(spec, storage, executor.dataset_id).finetuned == frozenset({"obsoletion"})


def test_a_failed_task_does_not_stop_the_others_on_the_local_backend(converted, so_dump, tmp_path):
    """As on a cluster: the task with a bad file fails, the other still finetunes, then the stage
    reports which failed (exit 2, its driver log) and the report shows both outcomes."""
    from sobert_operator.local_executor import TasksFailedError
    from sobert_operator.report import write_report

    bad = tmp_path / "quality.jsonl"
    bad.write_text('{"text": "how do I sort a list", "rating": "MAYBE"}\n')
    labelled = Path(__file__).resolve().parents[1] / "fixtures" / "finetune" / "obsoletion-labelled.csv"
    tasks = {"quality": {"train": str(bad), **RECIPE}, "obsoletion": {"train": str(labelled), **RECIPE}}
    spec = build_spec(
        {
            "preset": "tiny",
            "name": "partly",
            "data": {"posts": so_dump["posts"], "comments": so_dump["comments"]},
            "storage": {"uri": str(tmp_path / "store")},
            "finetune": {"workers": 2, "tasks": tasks},
        }
    )
    storage = Storage.open(spec.storage.uri)
    storage.publish_tree(converted, paths.hf_prefix(spec.name), extra={"step": 40})
    record_spec(spec, storage)
    executor = LocalExecutor(spec, tmp_path / "work", emit=lambda _line: None)
    with pytest.raises(TasksFailedError, match=r"stage finetune: 1 of 2 tasks failed: quality \(exit 2; driver log "):
        executor.run_stage(Stage.finetune)
    assert observe(spec, storage, executor.dataset_id).finetuned == frozenset({"obsoletion"})
    report, _ = write_report(spec, storage)
    assert set(report["finetune"]) == {"obsoletion"}
    assert "quality.jsonl:1: rating 'MAYBE' is not one of" in report["finetune_failed"]["quality"]
