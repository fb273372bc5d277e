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
