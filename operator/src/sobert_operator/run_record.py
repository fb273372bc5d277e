"""A run's spec as recorded in its storage (`runs/<run>/spec.json`): what `sobertctl report`,
`finetune` and `eval` read, written by whichever backend runs it (the local executor or the
controller)."""

from __future__ import annotations

import json

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage


class RunConflictError(ValueError):
    """A run with this name exists in the storage prefix with a different spec."""


def record_spec(spec: RunSpec, storage: Storage) -> None:
    """Write runs/<run>/spec.json, refusing to reuse a name for a different spec."""
    key = paths.spec_key(spec.name)
    document = json.loads(spec.model_dump_json())
    if storage.exists(key):
        existing = storage.read_json(key)
        if existing != document:
            changed = sorted(k for k in set(existing) | set(document) if existing.get(k) != document.get(k))
            if changed == ["budget"]:  # raising (or lowering) the budget is how a budget-stopped run resumes
                storage.write_json(key, document)
                return
            raise RunConflictError(
                f"run {spec.name!r} already exists at {storage.uri(key)} with a different spec "
                f"(differs in: {', '.join(changed)}); choose another --name or delete that run"
            )
        return
    storage.write_json(key, document)
