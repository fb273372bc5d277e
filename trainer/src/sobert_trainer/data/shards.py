"""Tokenize document pieces in worker processes and write Megatron indexed datasets (.bin/.idx).

Posts are packed FULL-SENTENCES style (RoBERTa, Liu et al. 2019, section 4.2): consecutive posts,
each ended by `[SEP]`, fill one Megatron document of at least `PACK_TOKENS` tokens (or to the end
of their piece of the dump: each worker packs its own piece), whose sentences are the posts'
segments. `BERTMaskedWordPieceDataset` fills each sample with whole
sentences of one Megatron document until it reaches the sequence length (megatron-core
core_v0.16.1, datasets/helpers.cpp `build_mapping_impl`), so a sample spans posts and is full;
with one post per document (posts average ~200 tokens) a 2,048-token sample was ~90% padding.
Attention spans the posts of a sample, as in RoBERTa. The files are megatron-core's indexed
dataset format, byte for byte (`indexed.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sobert_trainer.data.indexed import IndexedWriter, optimal_dtype, write_documents

# build_mapping_impl skips a whole document that holds a sentence longer than LONG_SENTENCE_LEN
# (512 tokens): longer segments are cut into sentences of at most this many tokens.
MAX_SENTENCE_TOKENS = 512
# A Megatron document closes at the first post boundary past this many tokens (512 samples of
# 2,048): only each document's last sample can be short, ~0.1% padding.
PACK_TOKENS = 1 << 20


T = TypeVar("T")
_TOKENIZERS: dict[str, Any] = {}  # per worker process: tokenizer path -> Tokenizer


@dataclass(frozen=True)
class PieceShard:
    """One piece's packed documents, written by a worker for the parent to append to a shard."""

    piece: int
    bin_path: str
    lengths: np.ndarray  # each sentence's tokens
    sentences_per_document: np.ndarray
    posts: int
    tokens: int
    held_out: PieceShard | None = None  # the piece's validation posts, packed the same way


def held_out(post: list[np.ndarray], fraction: float) -> bool:
    """Whether `post` (its segments' tokens) belongs to the validation split: a hash of its tokens
    below `fraction` of the hash space. Decided by the post alone, so the split is the same for any
    worker count and piece size, and a post repeated verbatim falls on one side only."""
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(digest_size=8)
    for segment in post:
        digest.update(segment.astype(np.int32).tobytes())
        digest.update(b"|")
    return int.from_bytes(digest.digest(), "big") < fraction * 2**64


def pack_piece(task: tuple[int, str, str, int, int, float]) -> PieceShard:
    """Worker: one piece's documents (JSON lines of segments) tokenized, split into training and
    held-out posts (`held_out`), each side packed into Megatron documents (`pack_documents`; the
    piece's last one closes at its end) and written to `<piece>.bin` and `<piece>.valid.bin` in
    the shards' dtype. Empty segments and posts are dropped."""
    piece, documents_path, tokenizer_path, vocab_size, pack_tokens, validation_fraction = task
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process = one core; parallelism is ours
    from tokenizers import Tokenizer

    from sobert_trainer.data.tokenizer import SEP

    tokenizer = _TOKENIZERS.get(tokenizer_path)
    if tokenizer is None:
        tokenizer = _TOKENIZERS[tokenizer_path] = Tokenizer.from_file(tokenizer_path)
    sep_id = tokenizer.token_to_id(SEP)
    if sep_id is None:
        raise ValueError(f"{tokenizer_path}: the tokenizer has no {SEP} token to end each post with")
    train: list[list[np.ndarray]] = []
    validation: list[list[np.ndarray]] = []
    for post in _tokenized_posts(tokenizer, Path(documents_path)):
        (validation if held_out(post, validation_fraction) else train).append(post)

    def packed(posts: list[list[np.ndarray]], suffix: str, **extra) -> PieceShard:
        path = Path(documents_path).with_suffix(suffix)
        written = write_documents(path, pack_documents(posts, sep_id, pack_tokens), optimal_dtype(vocab_size))
        lengths, per_document, tokens = written
        return PieceShard(piece, str(path), lengths, per_document, len(posts), tokens, **extra)

    return packed(train, ".bin", held_out=packed(validation, ".valid.bin"))


def _tokenized_posts(tokenizer, documents_path: Path) -> Iterator[list[np.ndarray]]:
    """Each post of a piece as its non-empty segments' token arrays (posts with none dropped)."""
    for batch in batches(read_documents_jsonl(documents_path), 256):
        flat = [segment for segments in batch for segment in segments]
        # encode_batch_fast: the same ids as encode_batch, without the offsets we never use.
        encodings = tokenizer.encode_batch_fast(flat, add_special_tokens=False)
        cursor = 0
        for segments in batch:
            post = []
            for encoding in encodings[cursor : cursor + len(segments)]:
                ids = encoding.ids  # a new list on every access
                if ids:
                    post.append(np.asarray(ids, dtype=np.int32))
            if post:
                yield post
            cursor += len(segments)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
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


class ShardWriter:
    """Appends packed pieces (`pack_piece`), in dump order, to `<name>_<k>_text_sentence.{bin,idx}`
    in `out_dir`, a new shard once one holds `shard_tokens`. It only copies bytes and extends the
    index, so one process keeps up with many workers; the result depends on the pieces appended,
    not on how many workers made them."""

    def __init__(self, out_dir: Path, name: str, vocab_size: int, shard_tokens: int = 200_000_000):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.name, self.shard_tokens = out_dir, name, shard_tokens
        self.dtype = optimal_dtype(vocab_size)
        self.stats = ShardStats()
        self._builder: IndexedWriter | None = None
        self._prefix, self._shard_start = "", 0

    def append(self, piece: PieceShard) -> None:
        """Append one piece's documents and delete its `.bin` (a piece without any opens no shard)."""
        if not len(piece.sentences_per_document):
            Path(piece.bin_path).unlink()
            return
        if self._builder is None:
            self._prefix = f"{self.name}_{len(self.stats.shards):05d}_text_sentence"
            self._builder = IndexedWriter(self.out_dir / self._prefix, self.dtype)
            self._shard_start = self.stats.tokens
        self._builder.add_documents(Path(piece.bin_path), piece.lengths, piece.sentences_per_document)
        Path(piece.bin_path).unlink()
        self.stats.posts += piece.posts
        self.stats.documents += len(piece.sentences_per_document)
        self.stats.sentences += len(piece.lengths)
        self.stats.tokens += piece.tokens
        if self.stats.tokens - self._shard_start >= self.shard_tokens:
            self._close_shard()

    def close(self) -> ShardStats:
        self._close_shard()
        return self.stats

    def _close_shard(self) -> None:
        if self._builder is not None:
            self._builder.finalize()
            self.stats.shards.append({"prefix": self._prefix, "tokens": self.stats.tokens - self._shard_start})
            self._builder = None


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
