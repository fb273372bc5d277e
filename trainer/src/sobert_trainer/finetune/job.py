"""The driver of one finetune task: load and split its data, run Ray Train, publish results.

Runs where `ray.init()` finds a cluster: a local Ray instance (embedded backend), or the head
of a KubeRay RayJob (RAY_ADDRESS is set there). Results land in the run's storage:
`finetune/<task>/ray/` (Ray Train's own run directory: per-epoch checkpoints, results),
`finetune/<task>/checkpoint/` (the best model, published with a manifest) and, written last,
`finetune/<task>/metrics.json`, whose presence marks the task done for both executors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sobert_api import paths
from sobert_api.spec import FinetuneTaskSpec, RunSpec, TaskName
from sobert_api.storage import Storage, is_s3, split_s3
from sobert_trainer.finetune import tasks
from sobert_trainer.finetune.examples import LoadResult

log = logging.getLogger(__name__)
MIN_EXAMPLES_PER_CLASS = 2


class TaskDataMissingError(ValueError):
    """The task has too little data to train and validate on; the message says what was found."""


def fetch_input(uri: str, endpoint_url: str | None, scratch: Path) -> str:
    """A local path for a task file: as is when local, downloaded when on S3."""
    if not is_s3(uri):
        return uri
    bucket, key = split_s3(uri)
    local = scratch / Path(key).name
    Storage.open(f"s3://{bucket}", endpoint_url).download_file(key, local)
    return str(local)


def load_task_data(spec: RunSpec, name: TaskName, scratch: Path) -> tuple[list, list, dict[str, int]]:
    """Train and validation examples of a task, capped as the recipe says; plus skipped-row counts."""
    task = spec.finetune.tasks[name]
    endpoint = spec.storage.endpoint_url

    def load(uri: str) -> LoadResult:
        return tasks.load_split(name, task, uri, local_path=fetch_input(uri, endpoint, scratch))

    train_result = tasks.weak_obsoletion_labels(spec.data, endpoint) if task.train is None else load(task.train)
    skipped = dict(train_result.skipped)
    if task.validation:
        train, validation = train_result.examples, load(task.validation).examples
    else:
        train, validation = tasks.split_validation(train_result.examples, task.validation_fraction, spec.finetune.seed)
    return (
        tasks.cap(train, task.max_train_examples, spec.finetune.seed),
        tasks.cap(validation, task.max_eval_examples, spec.finetune.seed),
        skipped,
    )


def _check_enough(name: TaskName, info: tasks.TaskInfo, train: list, validation: list) -> None:
    if info.kind == "sequence":
        counts = {label: sum(e.label == label for e in train) for label in info.labels}
        present = [label for label, n in counts.items() if n >= MIN_EXAMPLES_PER_CLASS]
        if len(present) < 2:
            raise TaskDataMissingError(
                f"finetune {name.value}: need at least {MIN_EXAMPLES_PER_CLASS} training examples of two classes, "
                f"found {counts}"
            )
    if not train or not validation:
        raise TaskDataMissingError(
            f"finetune {name.value}: {len(train)} training and {len(validation)} validation examples"
        )


def _ray_storage(spec: RunSpec, name: TaskName) -> tuple[str, Any]:
    """RunConfig storage_path (+ filesystem for S3) for the task's Ray Train run directory."""
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    target = storage.uri(paths.finetune_ray_prefix(spec.name, name.value))
    if not is_s3(target):
        return str(Path(target).resolve()), None
    import boto3
    import pyarrow.fs

    credentials = boto3.Session().get_credentials()
    endpoint = spec.storage.endpoint_url
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=credentials.access_key if credentials else None,
        secret_key=credentials.secret_key if credentials else None,
        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
        scheme=endpoint.split("://", 1)[0] if endpoint else "https",
        region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    return target[len("s3://") :], filesystem


def recipe(spec: RunSpec, task: FinetuneTaskSpec) -> dict[str, Any]:
    fields = ("epochs", "learning_rate", "batch_size", "weight_decay", "warmup_fraction")
    return {f: getattr(task, f) for f in fields} | {"max_length": task.max_length or spec.model.max_position_embeddings}


def run_task(spec: RunSpec, name: TaskName) -> dict[str, Any]:
    """Finetune one task end to end and publish its checkpoint and metrics.json; returns the metrics."""
    import ray

    from sobert_trainer.finetune.train_loop import STATE_FILE

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    hf = storage.read_manifest(paths.hf_prefix(spec.name))
    if hf is None:
        raise FileNotFoundError(f"no converted model at {storage.uri(paths.hf_prefix(spec.name))}; run convert first")
    info = tasks.task_info(name, spec.finetune.tasks[name])
    with tempfile.TemporaryDirectory(prefix="sobert-ft-data-") as scratch:
        train, validation, skipped = load_task_data(spec, name, Path(scratch))
    _check_enough(name, info, train, validation)
    log.info("finetune %s: %d train, %d validation examples", name.value, len(train), len(validation))
    run_name = f"{name.value}-step{hf['step']}"
    trainer = _torch_trainer(spec, name, info, train, validation, run_name)
    if not ray.is_initialized():
        ray.init(log_to_driver=False, include_dashboard=False, configure_logging=False)
    started, started_at = time.monotonic(), time.time()  # start-up (cluster, data) is before this
    result = trainer.fit()
    seconds = time.monotonic() - started
    best = result.get_best_checkpoint(metric="score", mode="max") or result.checkpoint
    if best is None:
        raise RuntimeError(f"finetune {name.value}: Ray Train finished without a checkpoint")
    with best.as_directory() as best_dir:
        state = json.loads((Path(best_dir) / STATE_FILE).read_text())
        storage.publish_tree(best_dir, paths.finetune_checkpoint_prefix(spec.name, name.value))
    task = spec.finetune.tasks[name]
    best_epoch = state["history"][-1]
    metrics = {
        "task": name.value,
        "kind": info.kind,
        "hf_step": hf["step"],
        "labels": list(info.labels),
        "primary_metric": info.primary_metric,
        "train_examples": len(train),
        "validation_examples": len(validation),
        "skipped_rows": skipped,
        "recipe": recipe(spec, task),
        "workers": task.workers or spec.finetune.workers,
        "best_epoch": best_epoch["epoch"],
        "score": best_epoch["score"],
        "validation": state["validation"],
        "history": (result.metrics or {}).get("history", state["history"]),
        "seconds": round(seconds, 2),
        "ray_run": f"{storage.uri(paths.finetune_ray_prefix(spec.name, name.value))}/{run_name}",
        # For goodput: the pods' time before is start-up, after is an idle cluster (cost/goodput.py).
        "started_at": round(started_at, 3),
        "finished_at": round(time.time(), 3),
    }
    storage.write_json(paths.finetune_metrics_key(spec.name, name.value), metrics)
    return metrics


def _torch_trainer(spec: RunSpec, name: TaskName, info, train: list, validation: list, run_name: str):
    """Ray Train's TorchTrainer for the task: the worker loop's plain-data config, the workers,
    and checkpoints and results in the run's storage (the best epoch kept, by the task's metric)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sobert_trainer.finetune.train_loop import train_func

    task = spec.finetune.tasks[name]
    storage_path, filesystem = _ray_storage(spec, name)
    return TorchTrainer(
        train_func,
        train_loop_config={
            "kind": info.kind,
            "labels": list(info.labels),
            "primary_metric": info.primary_metric,
            "recipe": recipe(spec, task),
            "seed": spec.finetune.seed,
            # Ray workers run in their own working directory: a relative local prefix would not resolve.
            "storage_uri": spec.storage.uri if is_s3(spec.storage.uri) else str(Path(spec.storage.uri).resolve()),
            "endpoint_url": spec.storage.endpoint_url,
            "hf_prefix": paths.hf_prefix(spec.name),
            "train": [dataclasses.asdict(e) for e in train],
            "validation": [dataclasses.asdict(e) for e in validation],
        },
        scaling_config=ScalingConfig(
            num_workers=task.workers or spec.finetune.workers,
            use_gpu=spec.finetune.use_gpu,
            resources_per_worker={"CPU": spec.finetune.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute="score", checkpoint_score_order="max"
            ),
            failure_config=FailureConfig(max_failures=2),
        ),
    )
