"""Helpers for tests that run real pretraining and compare runs with each other.

Numerics tests switch dropout off (the spec's `model.hidden_dropout` / `model.attention_dropout`)
and log every step, so two layouts of the same global batch can be compared step for step.
"""

from __future__ import annotations

from typing import Any

from sobert_api import build_spec
from sobert_api.progress import read_progress
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage

# Parity tolerances (issue: step-1 gradient norm within 1e-3 relative, loss curves within 0.01).
GRAD_NORM_RTOL = 1e-3
LOSS_ATOL = 0.01


def numerics_spec(name: str, storage_uri: str, dump: dict[str, list[str]], **overrides: Any) -> RunSpec:
    """The tiny preset with dropout off and a progress line every step."""
    document: dict[str, Any] = {
        "preset": "tiny",
        "name": name,
        "data": {"posts": dump["posts"], "comments": dump["comments"]},
        "storage": {"uri": storage_uri},
        "model": {"hidden_dropout": 0.0, "attention_dropout": 0.0},
        "train": {"log_interval": 1},
    }
    for key, value in overrides.items():  # sections merge, scalars (backend) replace
        document[key] = {**document.get(key, {}), **value} if isinstance(value, dict) else value
    return build_spec(document)


def progress(spec: RunSpec, storage: Storage | None = None) -> list[dict]:
    """The run's progress.jsonl records, from `storage` (default: the spec's, keys from the environment)."""
    storage = storage or Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    return read_progress(storage, spec.name)


def loss_curve(spec: RunSpec, storage: Storage | None = None) -> dict[int, float]:
    """step -> loss (the last record of a step wins, as after a resume)."""
    return {record["step"]: record["loss"] for record in progress(spec, storage)}


def validation_curve(spec: RunSpec, storage: Storage | None = None) -> dict[int, float]:
    """step -> validation loss, at the steps that evaluated it."""
    return {r["step"]: r["validation_lm_loss"] for r in progress(spec, storage) if "validation_lm_loss" in r}


def first_grad_norm(spec: RunSpec, storage: Storage | None = None) -> float:
    return next(r["grad_norm"] for r in progress(spec, storage) if r["step"] == 1)


def assert_same_curve(curve: dict[int, float], reference: dict[int, float], label: str) -> None:
    assert sorted(curve) == sorted(reference), f"{label}: logged steps differ"
    worst = max(abs(curve[s] - reference[s]) for s in reference)
    assert worst < LOSS_ATOL, f"{label}: loss curves differ by up to {worst:.5f} (tolerance {LOSS_ATOL})"


def assert_same_grad_norm(value: float, reference: float, label: str) -> None:
    relative = abs(value - reference) / abs(reference)
    assert relative < GRAD_NORM_RTOL, (
        f"{label}: step-1 gradient norm {value} vs {reference} (relative difference {relative:.2e})"
    )
