"""TensorBoard event files beside progress.jsonl, with Megatron-LM's scalar names, so
`tensorboard --logdir <run>/pretrain/tensorboard` shows a sobert run the way it shows a Megatron one.

Megatron-LM (core_v0.16.1, megatron/training/training.py `training_log`) writes each scalar against
the iteration and again as "<name> vs samples" against consumed samples, through
`torch.utils.tensorboard.SummaryWriter`: "lm loss", "learning-rate", "grad-norm", "world-size",
"iteration-time" (seconds) and "throughput" (model TFLOP/s per GPU), among others. sobert adds what
its progress records carry and Megatron does not: "tokens-per-s", "real-tokens-per-s",
"real-token-fraction" and "mfu".

Each training process writes its own event file (a resumed run adds one; TensorBoard reads them
together) and uploads it whole after every record, on the training loop's background thread.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sobert_api.storage import Storage

# progress record field -> (TensorBoard tag, also written against consumed samples)
SCALARS: dict[str, tuple[str, bool]] = {
    "loss": ("lm loss", True),
    "validation_lm_loss": ("lm loss validation", True),  # Megatron-LM's `evaluate_and_print_results`
    "lr": ("learning-rate", True),
    "grad_norm": ("grad-norm", True),
    "world_size": ("world-size", True),
    "step_time_s": ("iteration-time", False),
    "model_tflops_per_s_per_device": ("throughput", False),
    "tokens_per_s": ("tokens-per-s", False),
    "real_tokens_per_s": ("real-tokens-per-s", False),
    "real_token_fraction": ("real-token-fraction", False),
    "mfu": ("mfu", False),
}


class TensorBoardLog:
    """Scalars of each progress record into this process's event file in `local_dir`, published
    under `prefix` of `storage` (the run's pretrain/tensorboard/)."""

    def __init__(self, storage: Storage, prefix: str, local_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        local_dir.mkdir(parents=True, exist_ok=True)
        self.storage, self.prefix, self.local_dir = storage, prefix, local_dir
        self._earlier = set(local_dir.iterdir())  # an earlier process's files, already published
        self.writer = SummaryWriter(log_dir=str(local_dir))
        self.path: Path | None = None

    def add(self, record: dict, samples: int) -> Callable[[], None]:
        """Write the record's scalars at its step, flush, and return the upload of the file as it
        is now (a snapshot, as `ProgressLog.append` returns)."""
        step = record["step"]
        for field, (tag, vs_samples) in SCALARS.items():
            value = record.get(field)
            if value is None or isinstance(value, bool):
                continue
            self.writer.add_scalar(tag, value, step)
            if vs_samples:
                self.writer.add_scalar(f"{tag} vs samples", value, samples)
        self.writer.flush()
        if self.path is None:
            (self.path,) = set(self.local_dir.iterdir()) - self._earlier  # this writer's event file
        snapshot, key = self.path.read_bytes(), f"{self.prefix}/{self.path.name}"
        return lambda: self.storage.write_bytes(key, snapshot)

    def close(self) -> None:
        self.writer.close()
