"""What a run has published to its storage, read from manifests (never from a partial file).

Both executors reduce it to stage states: the local executor alone, the controller for a stage
whose job object is gone (removed by its TTL after it finished), so a finished stage is never run
twice. No torch here: the controller reads it too.
"""

from __future__ import annotations

from sobert_api import paths
from sobert_api.checkpoints import complete_checkpoints
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_operator.pipeline import Observed
from sobert_operator.results import finetuned_tasks


def observe(spec: RunSpec, storage: Storage, dataset_id: str) -> Observed:
    steps = complete_checkpoints(storage.child(paths.checkpoints_prefix(spec.name)))
    hf = storage.read_manifest(paths.hf_prefix(spec.name))
    hf_step = hf.get("step") if hf else None
    return Observed(
        dataset_published=storage.read_manifest(paths.dataset_prefix(dataset_id)) is not None,
        checkpoint_step=steps[-1] if steps else None,
        hf_step=hf_step,
        finetuned=finetuned_tasks(spec, storage, hf_step),
    )
