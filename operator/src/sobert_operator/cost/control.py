"""Asking a running pretraining to checkpoint: a request object in the run's storage.

Both executors use it (the trainer's rank 0 polls it every log interval; a new id means "save
now"), so the budget policy needs no exec into pods and no signal that a launcher might eat.
"""

from __future__ import annotations

import time
import uuid

from sobert_api import paths
from sobert_trainer.storage import Storage


def request_checkpoint(storage: Storage, run: str, reason: str) -> str:
    """Ask the run's pretraining to checkpoint at its next log interval (a new request id)."""
    request = uuid.uuid4().hex
    storage.write_json(paths.checkpoint_request_key(run), {"id": request, "reason": reason, "time": time.time()})
    return request
