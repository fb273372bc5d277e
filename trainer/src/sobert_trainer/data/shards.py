"""Tokenize documents in worker processes and write Megatron indexed datasets (.bin/.idx).

Posts are packed FULL-SENTENCES style (RoBERTa, Liu et al. 2019, section 4.2): consecutive posts,
each ended by `[SEP]`, fill one Megatron document of at least `PACK_TOKENS` tokens, whose
sentences are the posts' segments. `BERTMaskedWordPieceDataset` fills each sample with whole
sentences of one Megatron document until it reaches the sequence length (megatron-core
core_v0.16.1, datasets/helpers.cpp `build_mapping_impl`), so a sample spans posts and is full;
with one post per document (posts average ~200 tokens) a 2,048-token sample was ~90% padding.
Attention spans the posts of a sample, as in RoBERTa. Writing uses megatron-core's own
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
# build_mapping_impl skips a whole document that holds a sentence longer than LONG_SENTENCE_LEN
# (512 tokens): longer segments are cut into sentences of at most this many tokens.
MAX_SENTENCE_TOKENS = 512
# A Megatron document closes at the first post boundary past this many tokens (512 samples of
# 2,048): only each document's last sample can be short, ~0.1% padding.
PACK_TOKENS = 1 << 20


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


def pack_documents(
    posts: Iterable[list[np.ndarray]],
    sep_id: int,
    pack_tokens: int = PACK_TOKENS,
    max_sentence_tokens: int = MAX_SENTENCE_TOKENS,
) -> Iterator[list[np.ndarray]]:
    """Consecutive posts (each a list of tokenized segments) as Megatron documents (lists of
    sentences): each post ends with `sep_id`; no sentence is longer than `max_sentence_tokens`;
    a document closes at the first post boundary at or past `pack_tokens` tokens. Pure and
    order-preserving: the same posts give the same documents."""
    pack: list[np.ndarray] = []
    size = 0
    for segments in posts:
        if not segments:
            continue
        ended = [*segments[:-1], np.append(segments[-1], sep_id).astype(segments[-1].dtype)]
        for segment in ended:
            pack.extend(
                segment[start : start + max_sentence_tokens] for start in range(0, segment.size, max_sentence_tokens)
            )
            size += int(segment.size)
        if size >= pack_tokens:
            yield pack
            pack, size = [], 0
    if pack:
        yield pack


@dataclass
class ShardStats:
    posts: int = 0  # packed into `documents`
    documents: int = 0  # Megatron documents
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
    pack_tokens: int = PACK_TOKENS,
) -> ShardStats:
    """Tokenize `documents` with `workers` processes, pack them (`pack_documents`) and write
    `<name>_<k>_text_sentence.{bin,idx}`."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
    from tokenizers import Tokenizer

    from sobert_trainer.data.tokenizer import SEP

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

    def encoded_posts(pool) -> Iterator[list[np.ndarray]]:
        for encoded_batch in pool.imap(_encode_batch, _batches(documents, batch_docs), chunksize=1):
            for sentences in encoded_batch:
                if sentences:
                    stats.posts += 1
                    yield sentences

    sep_id = Tokenizer.from_file(str(tokenizer_path)).token_to_id(SEP)
    if sep_id is None:
        raise ValueError(f"{tokenizer_path}: the tokenizer has no {SEP} token to end each post with")
    ctx = mp.get_context("spawn")  # fork after torch/megatron imports is unsafe
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_path),)) as pool:
        for sentences in pack_documents(encoded_posts(pool), sep_id, pack_tokens):
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
