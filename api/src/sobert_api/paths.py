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


def dataset_index_prefix(run: str) -> str:
    """Megatron's sample index of the run's training dataset, built once by global rank 0 and
    fetched by every other node (scratch is node-local)."""
    return f"{pretrain_prefix(run)}/dataset-index"


def finetune_prefix(run: str, task: str) -> str:
    return f"runs/{run}/finetune/{task}"


def finetune_metrics_key(run: str, task: str) -> str:
    """Written last by a finetune job: its presence means the task is done."""
    return f"{finetune_prefix(run, task)}/metrics.json"


def finetune_driver_log_key(run: str, task: str) -> str:
    """The finetune driver's stdout and stderr, uploaded as it exits (its Ray cluster is deleted
    soon after the job ends)."""
    return f"{finetune_prefix(run, task)}/driver.log"


def finetune_checkpoint_prefix(run: str, task: str) -> str:
    """The best checkpoint (a Hugging Face model directory), published with a manifest."""
    return f"{finetune_prefix(run, task)}/checkpoint"


def finetune_ray_prefix(run: str, task: str) -> str:
    """Ray Train's RunConfig(storage_path=...) for the task: per-epoch checkpoints and results."""
    return f"{finetune_prefix(run, task)}/ray"


def finetune_eval_key(run: str, task: str, split: str) -> str:
    return f"{finetune_prefix(run, task)}/eval-{split}.json"


def checkpoint_request_key(run: str) -> str:
    """Written (with a new id) to ask a running pretraining to checkpoint now; polled by rank 0."""
    return f"runs/{run}/control/checkpoint-request.json"


def cost_prefix(run: str) -> str:
    return f"runs/{run}/cost"


def ledger_key(run: str) -> str:
    return f"{cost_prefix(run)}/ledger.jsonl"


def forecast_key(run: str) -> str:
    """The latest forecast (calibrated from progress.jsonl once pretraining has run long enough)."""
    return f"{cost_prefix(run)}/forecast.json"


def eta_key(run: str) -> str:
    """The run's progress and ETA as they were estimated, one JSON line each (for the report)."""
    return f"{cost_prefix(run)}/eta.jsonl"


def submit_forecast_key(run: str) -> str:
    """The forecast the run was admitted on, kept as it was."""
    return f"{cost_prefix(run)}/forecast-submit.json"
