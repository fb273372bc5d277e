"""Training progress for a run's status, read from the trainer's progress.jsonl in storage."""

from __future__ import annotations

import base64
from typing import Any

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_trainer.storage import Storage


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
    """The newest progress record, or None if there is none yet. Reads only the object's tail."""
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url, credentials)
    key = paths.progress_key(spec.name)
    if not storage.exists(key):
        return None
    lines = [line for line in storage.read_bytes(key).decode().splitlines() if line.strip()]
    if not lines:
        return None
    import json

    return status_from_record(json.loads(lines[-1]))
