"""progress.jsonl: one JSON line per logged step, for the CLI, the controller and cost metering
(read back through `sobert_api.progress`)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sobert_api.storage import Storage


class ProgressLog:
    """Appends to a local file and republishes it whole (one PUT on S3), so readers see complete lines."""

    def __init__(self, storage: Storage, key: str, local_path: Path):
        self.storage, self.key, self.local_path = storage, key, local_path
        local_path.parent.mkdir(parents=True, exist_ok=True)
        if storage.exists(key):  # resumed run: keep the history
            storage.download_file(key, local_path)
        else:
            local_path.write_text("")

    def append(self, **record) -> Callable[[], None]:
        """Add a line (stamped with the time now) to the local file; returns the upload of the file
        as it is now, for the training loop's background thread (a snapshot: a line appended while
        it uploads is never half in it)."""
        record.setdefault("time", round(time.time(), 3))
        with open(self.local_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        snapshot = self.local_path.read_bytes()
        return lambda: self.storage.write_bytes(self.key, snapshot)
