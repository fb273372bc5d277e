"""Examples to model inputs with the run's own tokenizer, and predictions back to labels.

Sequences are kept unpadded and padded per batch (`collate`): StackOverflow posts vary from a
dozen to thousands of tokens, and padding every example to `max_length` would multiply the
CPU/GPU work. For token classification only the first sub-token of each word carries a label
(-100 elsewhere, ignored by the loss); words cut off by `max_length` are predicted `O`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sobert_trainer.finetune.examples import TextExample, TokenExample

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index


def bio_labels(types: Sequence[str]) -> list[str]:
    """The tag set of a token-classification head: O, then B-/I- per entity type."""
    return ["O", *[f"{prefix}-{t}" for t in types for prefix in ("B", "I")]]


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ids, and a label per example (sequence) or per token (NER)."""

    input_ids: list[int]
    labels: list[int]  # one entry (sequence classification) or one per input id (token classification)
    word_ids: tuple[int | None, ...] = ()  # token classification: word index of each input id


def encode_texts(tokenizer, examples: Sequence[TextExample], labels: Sequence[str], max_length: int) -> list[Encoded]:
    index = {label: i for i, label in enumerate(labels)}
    batch = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    return [Encoded(ids, [index[e.label]]) for ids, e in zip(batch["input_ids"], examples, strict=True)]


def encode_tokens(tokenizer, examples: Sequence[TokenExample], tags: Sequence[str], max_length: int) -> list[Encoded]:
    index = {tag: i for i, tag in enumerate(tags)}
    batch = tokenizer(
        [list(e.tokens) for e in examples], is_split_into_words=True, truncation=True, max_length=max_length
    )
    encoded = []
    for i, example in enumerate(examples):
        word_ids = tuple(batch.word_ids(i))
        labels, previous = [], None
        for word in word_ids:
            first = word is not None and word != previous
            labels.append(index[example.tags[word]] if first else IGNORE_INDEX)
            previous = word
        encoded.append(Encoded(batch["input_ids"][i], labels, word_ids))
    return encoded


def encode_examples(
    tokenizer,
    kind: str,
    examples: Sequence[TextExample | TokenExample],
    labels: Sequence[str],
    max_length: int,
) -> tuple[list[Encoded], list]:
    """Items for a sequence ("sequence") or token ("token") head, and the gold labels to score them against."""
    if kind == "token":
        words = [e for e in examples if isinstance(e, TokenExample)]
        return encode_tokens(tokenizer, words, labels, max_length), [list(e.tags) for e in words]
    texts = [e for e in examples if isinstance(e, TextExample)]
    return encode_texts(tokenizer, texts, labels, max_length), [e.label for e in texts]


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member; sequence labels stay one per example."""
    width = max(len(item.input_ids) for item in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    per_token = len(items[0].labels) == len(items[0].input_ids) and bool(items[0].word_ids)
    labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long) if per_token else None
    for row, item in enumerate(items):
        n = len(item.input_ids)
        ids[row, :n] = torch.tensor(item.input_ids)
        mask[row, :n] = 1
        if labels is not None:
            labels[row, :n] = torch.tensor(item.labels)
    if labels is None:
        labels = torch.tensor([item.labels[0] for item in items], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def word_predictions(item: Encoded, token_predictions: Sequence[int], words: int, tags: Sequence[str]) -> list[str]:
    """Per-word tags from per-token predictions (first sub-token wins; truncated words are O)."""
    out = ["O"] * words
    previous = None
    for position, word in enumerate(item.word_ids):
        if word is not None and word != previous:
            out[word] = tags[token_predictions[position]]
        previous = word
    return out
