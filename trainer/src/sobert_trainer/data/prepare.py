"""PREPARE: dumps -> documents -> tokenizer -> Megatron shards, published under data/<dataset-id>/.

The dataset id is derived from the inputs and settings, so preparing the same corpus twice is a
cache hit (the published manifest is found) and a changed setting never reuses stale shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_trainer.data import sample
from sobert_trainer.data.chunks import CHUNK_BYTES, Chunk, file_chunks, spill_chunks
from sobert_trainer.data.decompress import is_plain_local
from sobert_trainer.data.documents import DocumentStats, iter_documents, load_comments, pair_comments, site_of
from sobert_trainer.data.dump import RowStats, open_dump
from sobert_trainer.data.post_chunks import PieceOrder, PieceTask, parse_piece
from sobert_trainer.data.sample import Entry
from sobert_trainer.data.shards import batches, read_documents_jsonl, write_documents_jsonl, write_shards
from sobert_trainer.data.tokenizer import train_tokenizer
from sobert_trainer.storage import Storage, is_s3

log = logging.getLogger(__name__)
FORMAT_VERSION = 3  # 2: posts packed into Megatron documents (data/shards.py); 3: bottom-k tokenizer sample
PIECE_DOCS = 4096  # documents per piece file of `thread` documents


@dataclass(frozen=True)
class PrepareConfig:
    """Inputs and settings of one data preparation."""

    posts: list[str]
    comments: list[str]
    vocab_size: int
    document_unit: str = "post"
    min_document_chars: int = 32
    workers: int = 2
    tokenizer_train_docs: int = 200_000
    seed: int = 1234
    endpoint_url: str | None = None
    chunk_bytes: int = CHUNK_BYTES  # pieces a posts file is cut into (packed documents close at their ends)

    @staticmethod
    def from_spec(spec: RunSpec) -> PrepareConfig:
        return PrepareConfig(
            posts=list(spec.data.posts),
            comments=list(spec.data.comments),
            vocab_size=spec.model.vocab_size,
            document_unit=spec.data.document_unit.value,
            min_document_chars=spec.data.min_document_chars,
            workers=spec.data.workers,
            tokenizer_train_docs=spec.data.tokenizer_train_docs,
            seed=spec.train.seed,
            endpoint_url=spec.storage.endpoint_url,
        )

    def dataset_id(self) -> str:
        """Content-derived id: same inputs + settings -> same id."""
        identity = {
            "format": FORMAT_VERSION,
            "posts": [_source_identity(u) for u in self.posts],
            "comments": [_source_identity(u) for u in self.comments],
            "vocab_size": self.vocab_size,
            "unit": self.document_unit,
            "min_chars": self.min_document_chars,
            "tokenizer_train_docs": self.tokenizer_train_docs,
            "seed": self.seed,
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
        return f"so-{digest}"


def _source_identity(uri: str) -> list:
    if is_s3(uri):
        return [uri]
    path = Path(uri).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.posts/comments: {uri}: no such file")
    return [str(path.absolute()), path.stat().st_size]


@contextmanager
def _worker_pool(workers: int) -> Iterator:
    """The processes that parse and tokenize (spawned: forking after torch/megatron imports is unsafe)."""
    with mp.get_context("spawn").Pool(max(1, workers)) as pool:
        yield pool


def document_pieces(config: PrepareConfig, work: Path, pool) -> tuple[list[Path], list[list[Entry]], DocumentStats]:
    """The corpus's documents as JSON-lines piece files in dump order, each piece's bottom-k
    tokenizer-sample entries, and the counts. `post` documents are made in parallel, a piece of
    a posts file per task (`post_chunks.py`); `thread` documents need every answer of a question,
    so they are grouped through SQLite in this process and cut into pieces of `PIECE_DOCS`."""
    stats = DocumentStats(RowStats(), RowStats())
    if config.document_unit == "thread":
        return (*_thread_pieces(config, work, stats), stats)
    comment_sites = pair_comments(config.posts, config.comments)
    db_path = work / "comments.sqlite"
    with closing(sqlite3.connect(db_path)) as db:
        load_comments(db, comment_sites, stats.comments, config.endpoint_url)
    tasks = _Guarded(_piece_tasks(config, work, str(db_path)))
    pieces, samples, order = [], [], PieceOrder()
    for parsed in pool.imap(parse_piece, tasks):
        order.check(parsed)
        stats.merge(parsed.stats)
        pieces.append(Path(parsed.out))
        samples.append(parsed.sample)
    if tasks.error is not None:
        raise tasks.error
    return pieces, samples, stats


class _Guarded:
    """Tasks for `Pool.imap`, whose task thread cannot report an error raised while it takes the
    next task (before the first it even hangs the pool): the error is kept, the tasks end, and the
    caller raises it once the tasks taken so far are done."""

    def __init__(self, tasks: Iterator):
        self.tasks = tasks
        self.error: Exception | None = None

    def __iter__(self) -> Iterator:
        try:
            yield from self.tasks
        except Exception as exc:  # a dump that cannot be read or decompressed
            self.error = exc


def _piece_tasks(config: PrepareConfig, work: Path, comments_db: str) -> Iterator[PieceTask]:
    """A task per piece of every posts file, in dump order. A plain local file is cut where it
    lies; anything else streams from its decompressor process into piece files as it is read
    (this generator runs on the pool's task thread, so parsing starts with the first pieces)."""
    piece = 0
    for number, uri in enumerate(config.posts):
        site = site_of(uri)
        if is_plain_local(uri):
            chunks = file_chunks(uri, Path(uri).expanduser(), config.chunk_bytes)
            yield from _tasks_for(chunks, piece, site, comments_db, config, work)
            piece += len(chunks)
            continue
        last = None
        with open_dump(uri, config.endpoint_url) as stream:
            for task in _tasks_for(spill_chunks(uri, stream, work / f"spill-{number}", config.chunk_bytes),
                                   piece, site, comments_db, config, work):  # fmt: skip
                piece += 1
                if task.chunk.final:
                    last = task  # held until the decompressor has exited cleanly: its error comes first
                else:
                    yield task
        if last is not None:
            yield last


def _tasks_for(chunks: Iterable[Chunk], first: int, site: str, comments_db: str, config: PrepareConfig,
               work: Path) -> Iterator[PieceTask]:  # fmt: skip
    for offset, chunk in enumerate(chunks):
        piece = first + offset
        yield PieceTask(chunk, piece, site, comments_db, config.min_document_chars,
                        str(work / f"piece-{piece:06d}.jsonl"), config.seed, config.tokenizer_train_docs)  # fmt: skip


def _thread_pieces(config: PrepareConfig, work: Path, stats: DocumentStats) -> tuple[list[Path], list[list[Entry]]]:
    documents = iter_documents(config.posts, config.comments, "thread", work, stats, config.min_document_chars,
                               config.endpoint_url)  # fmt: skip
    pieces: list[Path] = []
    samples: list[list[Entry]] = []
    for number, batch in enumerate(batches(documents, PIECE_DOCS)):
        keep = sample.BottomK(config.tokenizer_train_docs)
        for position, document in enumerate(batch):
            keep.offer((sample.priority(config.seed, document.id), number, position))
        pieces.append(work / f"piece-{number:06d}.jsonl")
        write_documents_jsonl((d.segments for d in batch), pieces[-1])
        samples.append(keep.entries())
    return pieces, samples


def sampled_documents(pieces: list[Path], chosen: dict[int, set[int]]) -> Iterator[list[str]]:
    """The sampled documents, read back from their pieces in dump order."""
    for number, piece in enumerate(pieces):
        positions = chosen.get(number)
        if not positions:
            continue
        for position, segments in enumerate(read_documents_jsonl(piece)):
            if position in positions:
                yield segments


def prepare_dataset(
    config: PrepareConfig, storage: Storage, dataset_id: str | None = None, force: bool = False
) -> dict:
    """Prepare (or find) the dataset; returns its published manifest."""
    dataset_id = dataset_id or config.dataset_id()
    prefix = paths.dataset_prefix(dataset_id)
    existing = None if force else storage.read_manifest(prefix)
    if existing is not None:
        log.info("prepare: %s already published at %s", dataset_id, storage.uri(prefix))
        return existing
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sobert-prepare-") as tmp, _worker_pool(config.workers) as pool:
        work, staging = Path(tmp, "work"), Path(tmp, "publish")
        staging.mkdir(parents=True)
        work.mkdir(parents=True)
        pieces, samples, stats = document_pieces(config, work, pool)
        if stats.documents == 0:
            raise ValueError(f"data.posts: no usable documents in {', '.join(config.posts)} ({stats.as_dict()})")
        log.info("prepare: %d documents from %d post rows; training tokenizer", stats.documents, stats.posts.rows)
        parsed_at = time.monotonic()

        chosen = sample.merge(config.tokenizer_train_docs, samples)
        tokenizer = train_tokenizer(("\n".join(s) for s in sampled_documents(pieces, chosen)), config.vocab_size)
        tokenizer_path = staging / "tokenizer.json"
        tokenizer.save(str(tokenizer_path))
        tokenized_at = time.monotonic()
        log.info("prepare: tokenizer has %d pieces; writing shards", tokenizer.get_vocab_size())

        shard_stats = write_shards(
            pieces, tokenizer_path, tokenizer.get_vocab_size(), staging / "shards", name=dataset_id, pool=pool
        )
        finished = time.monotonic()
        manifest_extra = {
            "dataset_id": dataset_id,
            "format_version": FORMAT_VERSION,
            "sources": {"posts": config.posts, "comments": config.comments},
            "settings": {
                "document_unit": config.document_unit,
                "min_document_chars": config.min_document_chars,
                "vocab_size_target": config.vocab_size,
                "tokenizer_train_docs": config.tokenizer_train_docs,
            },
            "tokenizer": {"file": "tokenizer.json", "vocab_size": tokenizer.get_vocab_size()},
            "counts": {
                **stats.as_dict(),
                "packed_posts": shard_stats.posts,
                "shard_documents": shard_stats.documents,
                "sentences": shard_stats.sentences,
                "tokens": shard_stats.tokens,
            },
            "shards": [f"shards/{s['prefix']}" for s in shard_stats.shards],
            "timings_s": {
                "parse": round(parsed_at - started, 3),
                "tokenizer_train": round(tokenized_at - parsed_at, 3),
                "tokenize_and_write": round(finished - tokenized_at, 3),
            },
            "workers": config.workers,
        }
        manifest = storage.publish_tree(staging, prefix, extra=manifest_extra)
    log.info(
        "prepare: published %s (%d tokens in %d shard(s)) at %s",
        dataset_id,
        shard_stats.tokens,
        len(shard_stats.shards),
        storage.uri(prefix),
    )
    return manifest
