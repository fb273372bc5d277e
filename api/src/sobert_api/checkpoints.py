"""Which checkpoints a run has published: names and the manifest test, without torch (the
controller reads them too, and its image has no torch)."""

from __future__ import annotations

import re

from sobert_api.storage import MANIFEST, Storage

_ITER = re.compile(r"^iter_(\d{7})$")


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def complete_checkpoints(storage: Storage) -> list[int]:
    """Steps of fully published checkpoints, ascending."""
    steps = set()
    for key in storage.list():
        parts = key.split("/")
        if len(parts) == 2 and parts[1] == MANIFEST and (m := _ITER.match(parts[0])):
            steps.add(int(m.group(1)))
    return sorted(steps)
