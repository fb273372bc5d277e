"""The Ray Train worker loop: HF MegatronBert head from the run's converted model, AdamW, eval per epoch.

Runs once per Ray Train worker (`TorchTrainer(train_loop_per_worker=train_func)`). Ray sets up the
process group (gloo on CPU, nccl on GPU); `prepare_model` wraps the model in DDP and
`prepare_data_loader` shards the training set. Validation is sharded by hand (rank::world) and
the predictions gathered, so every example is scored exactly once (a DistributedSampler pads).
Each epoch reports its metrics; rank 0 attaches a checkpoint (an HF model directory) and Ray's
CheckpointConfig keeps the best one by the task's primary metric. A restarted job resumes from
the latest reported checkpoint (`ray.train.get_checkpoint()`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from sobert_trainer.finetune.encode import Encoded, collate, word_predictions
from sobert_trainer.finetune.metrics import classification_metrics, entity_metrics

STATE_FILE = "sobert_finetune_state.json"  # epoch + history inside each Ray checkpoint


def _load_model(model_dir: str, kind: str, labels: list[str]):
    from transformers import MegatronBertForSequenceClassification, MegatronBertForTokenClassification

    cls = MegatronBertForTokenClassification if kind == "token" else MegatronBertForSequenceClassification
    return cls.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def _predict(model, items: list[Encoded], pad_id: int, batch_size: int, device) -> list[list[int]]:
    """Argmax predictions, one list per item (one entry for sequence, one per token for NER)."""
    model.eval()
    out: list[list[int]] = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items() if k != "labels"}
            logits = model(**batch).logits.argmax(-1).cpu()
            for row, item in enumerate(chunk):
                out.append(logits[row, : len(item.input_ids)].tolist() if logits.dim() == 2 else [int(logits[row])])
    return out


def evaluate(model, items: list[Encoded], gold: list, kind: str, labels: list[str], pad_id: int, batch_size: int):
    """Score `items` across all workers: each predicts its rank::world shard, rank order restores."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = next(model.parameters()).device
    mine = list(range(rank, len(items), world))
    predictions = _predict(model, [items[i] for i in mine], pad_id, batch_size, device)
    shards: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(shards, list(zip(mine, predictions, strict=True)))
    else:
        shards = [list(zip(mine, predictions, strict=True))]
    by_index = dict(pair for shard in shards for pair in shard)
    ordered = [by_index[i] for i in range(len(items))]
    if kind == "token":
        predicted = [
            word_predictions(item, tokens, len(tags), labels)
            for item, tokens, tags in zip(items, ordered, gold, strict=True)
        ]
        return entity_metrics(gold, predicted)
    return classification_metrics(gold, [labels[p[0]] for p in ordered], labels)


def _encode(config: dict[str, Any], tokenizer) -> tuple[list[Encoded], list[Encoded], list]:
    """Train and validation items from the plain-data examples in `config`, and the validation gold."""
    from sobert_trainer.finetune.encode import encode_examples
    from sobert_trainer.finetune.examples import TextExample, TokenExample

    kind, labels, max_length = config["kind"], config["labels"], config["recipe"]["max_length"]
    splits = []
    for split in ("train", "validation"):
        examples = [TokenExample(e["id"], tuple(e["tokens"]), tuple(e["tags"])) if kind == "token"
                    else TextExample(e["id"], e["text"], e["label"]) for e in config[split]]  # fmt: skip
        splits.append(encode_examples(tokenizer, kind, examples, labels, max_length))
    (train_items, _), (valid_items, gold) = splits
    return train_items, valid_items, gold


def train_func(config: dict[str, Any]) -> None:
    """Per-worker entry point. `config` is built by `sobert_trainer.finetune.job` (plain data only)."""
    import transformers
    from transformers import PreTrainedTokenizerFast, get_linear_schedule_with_warmup

    from sobert_api.storage import Storage

    torch.manual_seed(config["seed"])
    # The head (classifier, pooler) is new and the LM head unused: that load report is expected.
    transformers.logging.set_verbosity_error()
    world = ray.train.get_context().get_world_size()
    recipe = config["recipe"]

    with tempfile.TemporaryDirectory(prefix="sobert-ft-") as scratch:
        model_dir = Path(scratch) / "model"
        Storage.open(config["storage_uri"], config["endpoint_url"]).fetch_tree(config["hf_prefix"], model_dir)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
        train_items, valid_items, gold = _encode(config, tokenizer)
        model, start_epoch, history = _restore(str(model_dir), config["kind"], config["labels"])
        model = ray.train.torch.prepare_model(model)
        per_worker = max(1, recipe["batch_size"] // world)
        loader = ray.train.torch.prepare_data_loader(
            DataLoader(
                train_items,  # type: ignore[arg-type]
                batch_size=per_worker,
                shuffle=True,
                collate_fn=lambda items: collate(items, tokenizer.pad_token_id),
            )
        )
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"]
        )
        total_steps = recipe["epochs"] * len(loader)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, math.ceil(recipe["warmup_fraction"] * total_steps), total_steps
        )
        for _ in range(start_epoch * len(loader)):
            scheduler.step()  # resume the schedule where the checkpointed epoch left it

        for epoch in range(start_epoch, recipe["epochs"]):
            if world > 1:
                loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            tally = _train_epoch(model, loader, optimizer, scheduler)
            scores = evaluate(
                model, valid_items, gold, config["kind"], config["labels"], tokenizer.pad_token_id, per_worker * 2
            )
            _report_epoch(config, epoch, tally, scores, history, model, tokenizer)


def _restore(model_dir: str, kind: str, labels: list[str]) -> tuple[Any, int, list[dict[str, Any]]]:
    """The model to train, the epoch to start at and the epochs' history so far: from the latest
    reported checkpoint when Ray restarted the job, else the converted model's head fresh."""
    resumed = ray.train.get_checkpoint()
    if resumed is None:
        return _load_model(model_dir, kind, labels), 0, []
    with resumed.as_directory() as ckpt_dir:
        state = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())
        model = _load_model(ckpt_dir, kind, labels)
    return model, state["epoch"] + 1, state["history"]


@dataclass
class EpochTally:
    """One worker's counts over an epoch of training."""

    started: float  # time.monotonic() at the epoch's start
    seconds: float = 0.0  # training only
    examples: int = 0
    slots: int = 0  # token slots fed, and the real (non-padding) ones, for goodput's padding
    real: int = 0
    loss_sum: float = 0.0
    steps: int = 0


def _train_epoch(model, loader, optimizer, scheduler) -> EpochTally:
    model.train()
    tally = EpochTally(started=time.monotonic())
    for batch in loader:
        tally.slots += batch["attention_mask"].numel()
        tally.real += int(batch["attention_mask"].sum())
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        tally.examples += batch["input_ids"].shape[0]
        tally.loss_sum += loss.item()
        tally.steps += 1
    tally.seconds = time.monotonic() - tally.started
    return tally


def _report_epoch(config, epoch: int, tally: EpochTally, scores, history: list, model, tokenizer) -> None:
    """The epoch's metrics to Ray Train (counts summed over the workers), with rank 0's checkpoint
    of the model and the history so far; the last report carries every epoch."""
    counts = torch.tensor([tally.examples, tally.slots, tally.real], dtype=torch.long)
    if dist.is_initialized():
        dist.all_reduce(counts)
    metrics = {
        "epoch": epoch,
        "train_loss": tally.loss_sum / max(1, tally.steps),
        "train_examples_per_second": int(counts[0]) / tally.seconds if tally.seconds else 0.0,
        "real_token_fraction": int(counts[2]) / max(1, int(counts[1])),
        "epoch_seconds": time.monotonic() - tally.started,  # training and evaluation (the forecast's rate)
        "score": scores[config["primary_metric"]],
        "validation": scores,
    }
    history.append({k: v for k, v in metrics.items() if k != "validation"})
    metrics["history"] = list(history)  # the last report carries every epoch (Result.metrics)
    with tempfile.TemporaryDirectory(prefix="sobert-ckpt-") as ckpt:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            unwrapped: Any = model.module if hasattr(model, "module") else model
            unwrapped.save_pretrained(ckpt)
            tokenizer.save_pretrained(ckpt)
            state = {"epoch": epoch, "history": history, "validation": scores}
            (Path(ckpt) / STATE_FILE).write_text(json.dumps(state))
            checkpoint = ray.train.Checkpoint.from_directory(ckpt)
        ray.train.report(metrics, checkpoint=checkpoint)
