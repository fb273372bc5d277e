"""PREPARE: dumps -> documents -> tokenizer -> Megatron shards, published under data/<dataset-id>/.

The dataset id is derived from the inputs and settings, so preparing the same corpus twice is a
cache hit (the published manifest is found) and a changed setting never reuses stale shards.
"""

from __future__ import annotations

import functools
import itertools
import logging
import multiprocessing as mp
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from sobert_api import dataset, paths
from sobert_api.spec import RunSpec
from sobert_api.storage import Storage
from sobert_trainer.data import sample
from sobert_trainer.data.chunks import CHUNK_BYTES, Chunk, file_chunks, spill_chunks
from sobert_trainer.data.decompress import is_plain_local
from sobert_trainer.data.documents import DocumentStats, iter_documents, load_comments, pair_comments, site_of
from sobert_trainer.data.dump import RowStats, open_dump
from sobert_trainer.data.pipeline import PipelineConfig, PreparePipeline, sample_first
from sobert_trainer.data.post_chunks import ParsedPiece, PieceOrder, PieceTask
from sobert_trainer.data.shards import batches, write_documents_jsonl
from sobert_trainer.data.tokenizer import train_tokenizer

log = logging.getLogger(__name__)
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
    validation_fraction: float = 0.01  # data.validation_fraction: posts held out (`shards.held_out`)
    endpoint_url: str | None = None
    chunk_bytes: int = CHUNK_BYTES  # pieces a posts file is cut into (packed documents close at their ends)

    @staticmethod
    def from_spec(spec: RunSpec) -> PrepareConfig:
        return PrepareConfig(
            **dataset.identity(spec), workers=spec.data.workers, endpoint_url=spec.storage.endpoint_url
        )

    def dataset_id(self) -> str:
        """Content-derived id (`sobert_api.dataset`): same inputs + settings -> same id."""
        return dataset.content_id(**{name: getattr(self, name) for name in dataset.IDENTITY_FIELDS})


@contextmanager
def _worker_pool(workers: int) -> Iterator:
    """The processes that parse and tokenize (spawned: forking after torch/megatron imports is unsafe)."""
    with mp.get_context("spawn").Pool(max(1, workers)) as pool:
        yield pool


def _sources(config: PrepareConfig, work: Path, stats: DocumentStats):
    """The corpus's pieces for the pipeline, in the order to start them; the plan's size when known
    up front; and the check each parsed piece gets in dump order. `post` documents are parsed in
    parallel, a piece of a posts file per task (`post_chunks.py`); `thread` documents need every
    answer of a question, so they are grouped through SQLite in this process and cut into pieces
    of `PIECE_DOCS`."""
    if config.document_unit == "thread":
        return _thread_pieces(config, work, stats), None, lambda parsed: None
    comment_sites = pair_comments(config.posts, config.comments)
    db_path = work / "comments.sqlite"
    with closing(sqlite3.connect(db_path)) as db:
        load_comments(db, comment_sites, stats.comments, config.endpoint_url)
    order = PieceOrder()

    def accept(parsed: ParsedPiece) -> None:
        order.check(parsed)
        stats.merge(parsed.stats)

    tasks = _piece_tasks(config, work, str(db_path))
    if all(is_plain_local(uri) for uri in config.posts):  # the plan is known: sample pieces first
        planned = list(tasks)
        return iter(sample_first(planned, config.tokenizer_train_docs, config.chunk_bytes)), len(planned), accept
    return tasks, None, accept


def _piece_tasks(config: PrepareConfig, work: Path, comments_db: str) -> Iterator[PieceTask]:
    """A task per piece of every posts file, in dump order. A plain local file is cut where it
    lies; anything else streams from its decompressor process into piece files as it is read
    (the pipeline takes a task when a worker is free, so parsing starts with the first pieces and
    the spill stays a few pieces ahead of the parse)."""
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


def _thread_pieces(config: PrepareConfig, work: Path, stats: DocumentStats) -> Iterator[ParsedPiece]:
    documents = iter_documents(config.posts, config.comments, "thread", work, stats, config.min_document_chars,
                               config.endpoint_url)  # fmt: skip
    for number, batch in enumerate(batches(documents, PIECE_DOCS)):
        keep = sample.BottomK(config.tokenizer_train_docs)
        for position, document in enumerate(batch):
            keep.offer((sample.priority(config.seed, document.id), number, position))
        out = work / f"piece-{number:06d}.jsonl"
        write_documents_jsonl((d.segments for d in batch), out)
        yield ParsedPiece(number, None, str(out), DocumentStats(RowStats(), RowStats()), sample=keep.entries())


def _train_tokenizer(config: PrepareConfig, path: Path, documents: Iterator[list[str]]) -> tuple[Path, int]:
    """The tokenizer trained on the sample documents, saved to `path`; its vocabulary size."""
    texts = ("\n".join(segments) for segments in documents)
    first = next(texts, None)
    if first is None:
        raise ValueError(f"data.posts: no usable documents in the tokenizer sample of {', '.join(config.posts)}")
    tokenizer = train_tokenizer(itertools.chain([first], texts), config.vocab_size)
    tokenizer.save(str(path))
    return path, tokenizer.get_vocab_size()


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
    with tempfile.TemporaryDirectory(prefix="sobert-prepare-") as tmp, _worker_pool(config.workers) as pool:
        work, staging = Path(tmp, "work"), Path(tmp, "publish")
        staging.mkdir(parents=True)
        work.mkdir(parents=True)
        stats = DocumentStats(RowStats(), RowStats())
        sources, planned, accept = _sources(config, work, stats)
        settings = PipelineConfig(
            config.tokenizer_train_docs, config.chunk_bytes, staging / "shards", dataset_id, config.validation_fraction
        )
        train = functools.partial(_train_tokenizer, config, staging / "tokenizer.json")
        pipeline = PreparePipeline(pool, config.workers, settings, sources, planned, accept, train)
        shard_stats, held_out = pipeline.run()
        if stats.documents == 0:
            raise ValueError(f"data.posts: no usable documents in {', '.join(config.posts)} ({stats.as_dict()})")
        manifest_extra = _manifest_fields(config, dataset_id, stats, shard_stats, held_out, pipeline)
        manifest = storage.publish_tree(staging, prefix, extra=manifest_extra)
    log.info(
        "prepare: published %s (%d tokens in %d shard(s)) at %s",
        dataset_id,
        shard_stats.tokens,
        len(shard_stats.shards),
        storage.uri(prefix),
    )
    return manifest


def _manifest_fields(config: PrepareConfig, dataset_id: str, stats, shard_stats, held_out, pipeline) -> dict:
    """What the dataset's manifest says of it beyond its files: its sources and settings, the
    tokenizer, the counts (the training shards', and the held-out ones' under `validation`), the
    shards of each split, and how the preparation ran."""
    return {
        "dataset_id": dataset_id,
        "format_version": dataset.FORMAT_VERSION,
        "sources": {"posts": config.posts, "comments": config.comments},
        "settings": {
            "document_unit": config.document_unit,
            "min_document_chars": config.min_document_chars,
            "vocab_size_target": config.vocab_size,
            "tokenizer_train_docs": config.tokenizer_train_docs,
            "validation_fraction": config.validation_fraction,
        },
        "tokenizer": {"file": "tokenizer.json", "vocab_size": pipeline.vocab_size},
        "counts": {
            **stats.as_dict(),
            "packed_posts": shard_stats.posts,
            "shard_documents": shard_stats.documents,
            "sentences": shard_stats.sentences,
            "tokens": shard_stats.tokens,
            "validation": {
                "posts": held_out.posts,
                "shard_documents": held_out.documents,
                "sentences": held_out.sentences,
                "tokens": held_out.tokens,
            },
        },
        "shards": [f"shards/{s['prefix']}" for s in shard_stats.shards],
        "validation_shards": [f"shards/{s['prefix']}" for s in held_out.shards],
        "timings_s": pipeline.timings.as_dict(),
        "pipeline": pipeline.layout(),
        "workers": config.workers,
    }
