"""What a run has measured that its forecast assumed, read from its storage and its inputs
(`forecast.Measured`): the posts files' size, the published dataset's tokens, and each finished
finetune's first epoch. Pretraining's throughput and start-up come from progress.jsonl
(`forecast.calibrated_tokens_per_s`, `forecast.measured_pretrain_startup_s`)."""

from __future__ import annotations

from pathlib import Path

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage, is_s3
from sobert_operator.cost.forecast import Measured
from sobert_operator.results import finetune_metrics


def posts_bytes(spec: RunSpec) -> int | None:
    """The posts files' total size when they are all local files (s3:// inputs: unknown here)."""
    files = [Path(uri).expanduser() for uri in spec.data.posts if not is_s3(uri)]
    if len(files) != len(spec.data.posts) or not all(f.is_file() for f in files):
        return None
    return sum(f.stat().st_size for f in files)


def read_measured(spec: RunSpec, storage: Storage, dataset_id: str) -> Measured:
    manifest = storage.read_manifest(paths.dataset_prefix(dataset_id))
    epochs = {}
    for task, metrics in finetune_metrics(spec, storage).items():
        first = (metrics.get("history") or [None])[0]
        if not first:
            continue
        examples = metrics["train_examples"]
        seconds = first.get("epoch_seconds") or examples / max(first["train_examples_per_second"], 1e-9)
        epochs[task] = (examples, float(seconds))
    return Measured(
        posts_bytes=posts_bytes(spec),
        dataset_tokens=((manifest or {}).get("counts") or {}).get("tokens"),  # none in a manifest without counts
        finetune_epochs=epochs,
    )
