"""A run's finetune results, read from each task's metrics.json: which tasks are done, and their
scores; and each task's outcome, a failed one's error from its driver's log."""

from __future__ import annotations

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.kube.failure import last_error_line


def finetune_metrics(spec: RunSpec, storage: Storage) -> dict[str, dict]:
    """Each finished task's metrics.json, whole."""
    found = {task.value: storage.read_json_if_exists(paths.finetune_metrics_key(spec.name, task.value))
             for task in spec.finetune.tasks}  # fmt: skip
    return {task: metrics for task, metrics in found.items() if metrics is not None}


def finetune_results(spec: RunSpec, storage: Storage, metrics: dict[str, dict] | None = None) -> dict[str, dict]:
    """Headline figures of each finished task (from its metrics.json), for summaries and status."""
    return {
        task: {
            "metric": m["primary_metric"],
            "score": round(m["score"], 4),
            "accuracy": round(m["validation"]["accuracy"], 4) if "accuracy" in m["validation"] else None,
            "train_examples": m["train_examples"],
            "validation_examples": m["validation_examples"],
            "best_epoch": m["best_epoch"],
            "hf_step": m["hf_step"],
        }
        for task, m in (finetune_metrics(spec, storage) if metrics is None else metrics).items()
    }


def finetuned_tasks(spec: RunSpec, storage: Storage, hf_step: int | None) -> frozenset[str]:
    """Tasks whose metrics.json was produced from the current converted model."""
    if hf_step is None:
        return frozenset()
    return frozenset(task for task, metrics in finetune_metrics(spec, storage).items()
                     if metrics.get("hf_step") == hf_step)  # fmt: skip


def finetune_failures(spec: RunSpec, storage: Storage, metrics: dict[str, dict] | None = None) -> dict[str, str]:
    """Tasks whose driver ran and left no metrics.json (failed, once the run has ended), each with
    the last error line of its driver's log (`runs/<run>/finetune/<task>/driver.log`)."""
    done = finetune_metrics(spec, storage) if metrics is None else metrics
    failures = {}
    for task in spec.finetune.tasks:
        key = paths.finetune_driver_log_key(spec.name, task.value)
        if task.value in done or not storage.exists(key):
            continue
        log = storage.read_bytes(key).decode(errors="replace")
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        failures[task.value] = last_error_line(log) or (lines or ["no output"])[-1]
    return failures
