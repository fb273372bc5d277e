"""Progress for a run's status: training progress read from the trainer's progress.jsonl in
storage, and the run's progress and ETA (`eta.py`) from its stages' jobs."""

from __future__ import annotations

import base64
from typing import Any

from sobert_api import paths, timestamps
from sobert_api.progress import loss_curves
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.eta import PhaseState, estimate


def storage_credentials(secret: dict[str, Any] | None) -> tuple[str, str] | None:
    data = (secret or {}).get("data") or {}
    try:
        return (
            base64.b64decode(data["AWS_ACCESS_KEY_ID"]).decode(),
            base64.b64decode(data["AWS_SECRET_ACCESS_KEY"]).decode(),
        )
    except (KeyError, ValueError):
        return None


def status_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """A progress.jsonl line as it appears in `.status.pretrain` (camelCase, no internals)."""
    return {
        "step": record.get("step"),
        "trainIters": record.get("train_iters"),
        "consumedTokens": record.get("consumed_tokens"),
        "loss": record.get("loss"),
        "tokensPerSecond": record.get("tokens_per_s"),
        "realTokensPerSecond": record.get("real_tokens_per_s"),
        "realTokenFraction": record.get("real_token_fraction"),
        "modelTflopsPerSecondPerDevice": record.get("model_tflops_per_s_per_device"),
        "mfu": record.get("mfu"),
        "updatedAt": record.get("time"),
    }


def last_progress(spec: RunSpec, credentials: tuple[str, str] | None) -> dict[str, Any] | None:
    """The newest progress record, with the newest validation loss and its step, or None if there
    is no record yet."""
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, credentials)
    records = storage.read_json_lines(paths.progress_key(spec.name))
    if not records:
        return None
    validation = loss_curves(records)["validation"]
    step, loss = validation[-1] if validation else (None, None)
    return {**status_from_record(records[-1]), "validationLoss": loss, "validationStep": step}


def _created(job: dict[str, Any] | None) -> float | None:
    return timestamps.parse(((job or {}).get("metadata") or {}).get("creationTimestamp"))


def cluster_phases(stages: dict[str, Any], jobs: dict[str, dict[str, Any] | None]) -> list[PhaseState]:
    """The run's phases from its status's stages (as `plan` sets them) and their jobs, each
    started when its job was created. Finetune tasks are phases of their own (`finetune/<task>`)."""
    # A failed task has nothing left to run: it is over, as a succeeded one is.
    state = {"succeeded": "done", "failed": "done", "partial": "done", "running": "running"}
    phases = []
    for stage, entry in stages.items():
        if stage == "finetune":
            for task, task_entry in (entry.get("tasks") or {}).items():
                job = jobs.get(task_entry.get("job") or "")
                phases.append(PhaseState(f"finetune/{task}", state.get(task_entry["state"], "pending"), _created(job)))
            continue
        job = jobs.get(entry.get("job") or "")
        phases.append(PhaseState(stage, state.get(entry["state"], "pending"), _created(job)))
    return phases


def run_progress(spec: RunSpec, status: dict[str, Any], jobs: dict[str, dict[str, Any] | None],
                 forecast: dict[str, Any] | None, run_created: float, now: float) -> dict[str, Any]:  # fmt: skip
    """`.status.progress`: the run's and its current stage's progress and ETA."""
    pretrain = status.get("pretrain") or {}
    record = None
    if pretrain.get("step") is not None:
        record = {"step": pretrain["step"], "train_iters": pretrain.get("trainIters"),
                  "tokens_per_s": pretrain.get("tokensPerSecond")}  # fmt: skip
    batch_tokens = spec.train.global_batch_size * spec.model.seq_length
    return estimate(cluster_phases(status["stages"], jobs), forecast, record, batch_tokens, run_created, now)
