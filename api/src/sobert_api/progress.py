"""Reading a run's pretraining progress (`progress.jsonl`, one JSON line per logged step).

The trainer writes it (`sobert_trainer.pretrain.progress.ProgressLog`); the CLI, the controller,
the local executor, the forecast and the report read it through here.
"""

from __future__ import annotations

from sobert_api import paths
from sobert_api.storage import Storage


def read_progress(storage: Storage, run: str) -> list[dict]:
    """Every progress record of `run` in the order written; none before its first logged step."""
    return storage.read_json_lines(paths.progress_key(run))


def loss_curves(records: list[dict]) -> dict[str, list[list[float]]]:
    """The training loss and the validation loss (`validation_lm_loss`, at the steps that evaluated
    it) as [step, loss] pairs in step order, the last record of a step winning (a resumed run
    logs some steps twice)."""
    train = {r["step"]: r["loss"] for r in records if isinstance(r.get("loss"), int | float)}
    validation = {r["step"]: r["validation_lm_loss"] for r in records if "validation_lm_loss" in r}
    return {
        "train": [[step, train[step]] for step in sorted(train)],
        "validation": [[step, validation[step]] for step in sorted(validation)],
    }
