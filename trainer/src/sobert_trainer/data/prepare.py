"""PREPARE: dumps -> documents -> tokenizer -> Megatron shards, published under data/<dataset-id>/.

The dataset id is derived from the inputs and settings, so preparing the same corpus twice is a
cache hit (the published manifest is found) and a changed setting never reuses stale shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sobert_api import paths
from sobert_api.spec import RunSpec
from sobert_trainer.data.documents import DocumentStats, iter_documents
from sobert_trainer.data.dump import RowStats
from sobert_trainer.data.shards import read_documents_jsonl, write_documents_jsonl, write_shards
from sobert_trainer.data.tokenizer import train_tokenizer
from sobert_trainer.storage import Storage, is_s3

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: posts packed into Megatron documents (data/shards.py)


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


class Reservoir:
    """A uniform sample of k items from a stream of unknown length (bounded memory)."""

    def __init__(self, k: int, seed: int):
        self.k, self.rng = k, random.Random(seed)
        self.sample: list[str] = []

    def passthrough(self, items):
        """Yield every item unchanged while sampling."""
        for index, item in enumerate(items):
            if index < self.k:
                self.sample.append(item)
            else:
                slot = self.rng.randint(0, index)
                if slot < self.k:
                    self.sample[slot] = item
            yield item


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
    stats = DocumentStats(RowStats(), RowStats())
    with tempfile.TemporaryDirectory(prefix="sobert-prepare-") as tmp:
        work, staging = Path(tmp, "work"), Path(tmp, "publish")
        staging.mkdir(parents=True)
        work.mkdir(parents=True)
        documents = (
            d.segments
            for d in iter_documents(
                config.posts,
                config.comments,
                config.document_unit,
                work,
                stats,
                config.min_document_chars,
                config.endpoint_url,
            )
        )
        jsonl = work / "documents.jsonl"
        reservoir = Reservoir(config.tokenizer_train_docs, config.seed)
        count = write_documents_jsonl(reservoir.passthrough(documents), jsonl)
        if count == 0:
            raise ValueError(f"data.posts: no usable documents in {', '.join(config.posts)} ({stats.as_dict()})")
        log.info("prepare: %d documents from %d post rows; training tokenizer", count, stats.posts.rows)
        parsed_at = time.monotonic()

        tokenizer = train_tokenizer(("\n".join(s) for s in reservoir.sample), config.vocab_size)
        tokenizer_path = staging / "tokenizer.json"
        tokenizer.save(str(tokenizer_path))
        tokenized_at = time.monotonic()
        log.info("prepare: tokenizer has %d pieces; writing shards", tokenizer.get_vocab_size())

        shard_stats = write_shards(
            read_documents_jsonl(jsonl),
            tokenizer_path,
            tokenizer.get_vocab_size(),
            staging / "shards",
            name=dataset_id,
            workers=config.workers,
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
