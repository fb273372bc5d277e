"""A run's finetune results, read from each task's metrics.json: which tasks are done, and their scores."""

from __future__ import annotations

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_trainer.storage import Storage


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
