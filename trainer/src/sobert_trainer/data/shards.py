"""Tokenize documents in worker processes and write Megatron indexed datasets (.bin/.idx).

Each document becomes one Megatron document whose sentences are its segments, which is the
layout `BERTMaskedWordPieceDataset` samples from. Writing uses megatron-core's own
`IndexedDatasetBuilder`, so the files are exactly what Megatron reads.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_WORKER_TOKENIZER = None


def _init_worker(tokenizer_path: str) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core; parallelism is ours
    from tokenizers import Tokenizer

    _WORKER_TOKENIZER = Tokenizer.from_file(tokenizer_path)


def _encode_batch(batch: list[list[str]]) -> list[list[np.ndarray]]:
    assert _WORKER_TOKENIZER is not None
    flat = [segment for segments in batch for segment in segments]
    encodings = _WORKER_TOKENIZER.encode_batch(flat, add_special_tokens=False)
    out, cursor = [], 0
    for segments in batch:
        doc = [np.asarray(e.ids, dtype=np.int32) for e in encodings[cursor : cursor + len(segments)]]
        out.append([s for s in doc if s.size])
        cursor += len(segments)
    return out


def _batches(documents: Iterable[list[str]], size: int) -> Iterator[list[list[str]]]:
    batch: list[list[str]] = []
    for segments in documents:
        batch.append(segments)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class ShardStats:
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    shards: list[dict] = field(default_factory=list)


def write_shards(
    documents: Iterable[list[str]],
    tokenizer_path: Path,
    vocab_size: int,
    out_dir: Path,
    name: str,
    workers: int,
    shard_tokens: int = 200_000_000,
    batch_docs: int = 64,
) -> ShardStats:
    """Tokenize `documents` with `workers` processes; write `<name>_<k>_text_sentence.{bin,idx}`."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = DType.optimal_dtype(vocab_size)
    stats = ShardStats()
    builder, prefix, shard_start = None, None, 0

    def close_shard() -> None:
        nonlocal builder
        if builder is not None:
            builder.finalize(str(out_dir / f"{prefix}.idx"))
            stats.shards.append({"prefix": prefix, "tokens": stats.tokens - shard_start})
            builder = None

    ctx = mp.get_context("spawn")  # fork after torch/megatron imports is unsafe
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_path),)) as pool:
        for encoded_batch in pool.imap(_encode_batch, _batches(documents, batch_docs), chunksize=1):
            for sentences in encoded_batch:
                if not sentences:
                    continue
                if builder is None:
                    prefix = f"{name}_{len(stats.shards):05d}_text_sentence"
                    builder = IndexedDatasetBuilder(str(out_dir / f"{prefix}.bin"), dtype=dtype)
                    shard_start = stats.tokens
                tokens = np.concatenate(sentences)
                builder.add_document(tokens, [len(s) for s in sentences])
                stats.documents += 1
                stats.sentences += len(sentences)
                stats.tokens += int(tokens.size)
                if stats.tokens - shard_start >= shard_tokens:
                    close_shard()
    close_shard()
    return stats


def write_documents_jsonl(documents: Iterable[list[str]], path: Path) -> int:
    """Spill documents to disk (one JSON list of segments per line); returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for segments in documents:
            handle.write(json.dumps(segments, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_documents_jsonl(path: Path) -> Iterator[list[str]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)
