"""Score a finetuned task's best checkpoint on a held-out file (never used for training or tuning)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sobert_api import paths
from sobert_api.spec import RunSpec, TaskName
from sobert_trainer.finetune import tasks
from sobert_trainer.finetune.job import fetch_input
from sobert_trainer.storage import Storage


def evaluate_split(spec: RunSpec, name: TaskName, uri: str, split: str) -> dict[str, Any]:
    """Evaluate the published best checkpoint of `name` on `uri`; writes finetune/<task>/eval-<split>.json."""
    from transformers import PreTrainedTokenizerFast

    from sobert_trainer.finetune.encode import encode_examples
    from sobert_trainer.finetune.train_loop import _load_model, evaluate

    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    task = spec.finetune.tasks[name]
    info = tasks.task_info(name, task)
    prefix = paths.finetune_checkpoint_prefix(spec.name, name.value)
    if storage.read_manifest(prefix) is None:
        raise FileNotFoundError(f"no finetuned {name.value} model at {storage.uri(prefix)}; finetune it first")
    with tempfile.TemporaryDirectory(prefix="sobert-eval-") as scratch:
        model_dir = Path(scratch) / "model"
        storage.fetch_tree(prefix, model_dir)
        loaded = tasks.load_split(
            name, task, uri, local_path=fetch_input(uri, spec.storage.endpoint_url, Path(scratch))
        )
        examples = loaded.examples
        tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
        model = _load_model(str(model_dir), info.kind, list(info.labels))
        max_length = task.max_length or spec.model.max_position_embeddings
        items, gold = encode_examples(tokenizer, info.kind, examples, info.labels, max_length)
        scores = evaluate(model, items, gold, info.kind, list(info.labels), tokenizer.pad_token_id, 16)
    result = {"task": name.value, "split": split, "source": uri, "skipped_rows": loaded.skipped, "metrics": scores}
    storage.write_json(paths.finetune_eval_key(spec.name, name.value, split), result)
    return result
