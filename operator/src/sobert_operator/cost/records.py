"""A run's cost records in its storage, shared by both executors and the report.

- the ledger, `runs/<run>/cost/ledger.jsonl`: one ended allocation per line (appended, never rewritten);
- the ETA history, `runs/<run>/cost/eta.jsonl`: each estimate of the run's progress and time left
  (`eta.py`), with the time it was made;
- the checkpoint request, `runs/<run>/control/checkpoint-request.json`: a new id asks a running
  pretraining to checkpoint (its rank 0 polls it every log interval), so the budget policy needs
  no exec into pods and no signal that a launcher might eat.
"""

from __future__ import annotations

import json
import time
import uuid

from sobert_api import paths
from sobert_api.storage import Storage
from sobert_operator.cost.ledger import Allocation


def read_ledger(storage: Storage, run: str) -> list[Allocation]:
    return [Allocation(**entry) for entry in storage.read_json_lines(paths.ledger_key(run))]


def append_allocation(storage: Storage, run: str, allocation: Allocation) -> None:
    storage.append_line(paths.ledger_key(run), json.dumps(allocation.as_dict()))


def request_checkpoint(storage: Storage, run: str, reason: str) -> str:
    """Ask the run's pretraining to checkpoint at its next log interval (a new request id)."""
    request = uuid.uuid4().hex
    storage.write_json(paths.checkpoint_request_key(run), {"id": request, "reason": reason, "time": time.time()})
    return request


def append_eta(storage: Storage, run: str, estimate: dict, now: float) -> None:
    storage.append_line(paths.eta_key(run), json.dumps({"time": round(now, 3), **estimate}, sort_keys=True))


def read_eta(storage: Storage, run: str) -> list[dict]:
    return storage.read_json_lines(paths.eta_key(run))
