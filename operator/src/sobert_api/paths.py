"""Storage keys of a run, in one place (the layout in DESIGN.md)."""

from __future__ import annotations


def dataset_prefix(dataset_id: str) -> str:
    return f"data/{dataset_id}"


def run_prefix(run: str) -> str:
    return f"runs/{run}"


def spec_key(run: str) -> str:
    return f"runs/{run}/spec.json"


def checkpoints_prefix(run: str) -> str:
    return f"{pretrain_prefix(run)}/checkpoints"


def progress_key(run: str) -> str:
    return f"{pretrain_prefix(run)}/progress.jsonl"


def hf_prefix(run: str) -> str:
    return f"runs/{run}/hf"


def summary_key(run: str) -> str:
    return f"runs/{run}/summary.json"


def pretrain_prefix(run: str) -> str:
    return f"runs/{run}/pretrain"
