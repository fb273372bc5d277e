"""A prepared dataset's id: derived from its inputs and settings, so that preparing the same corpus
twice finds the published one, and a changed input or setting never reuses stale shards.

The trainer publishes a dataset under `data/<id>/` (`sobert_trainer.data.prepare`); the executors
and the controller compute the same id from the run's spec to find it, without the trainer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from sobert_api.spec import RunSpec
from sobert_api.storage import is_s3

# The layout of a prepared dataset; part of its id, so a new layout never reuses old shards.
# 2: posts packed into Megatron documents; 3: bottom-k tokenizer sample; 4: drawn from sample
# pieces spread over the dump, so the tokenizer trains while the rest is parsed; 5: posts held out
# for validation in shards of their own.
FORMAT_VERSION = 5


def content_id(
    *,
    posts: list[str],
    comments: list[str],
    vocab_size: int,
    document_unit: str,
    min_document_chars: int,
    tokenizer_train_docs: int,
    seed: int,
    validation_fraction: float,
) -> str:
    """`so-<12 hex>` of everything that decides the dataset's bytes: the sources (a local file by
    its absolute path and size, an S3 object by its URI) and the preparation settings. Worker
    counts and endpoints are not in it: they change how, not what."""
    identity = {
        "format": FORMAT_VERSION,
        "posts": [_source_identity(uri) for uri in posts],
        "comments": [_source_identity(uri) for uri in comments],
        "vocab_size": vocab_size,
        "unit": document_unit,
        "min_chars": min_document_chars,
        "tokenizer_train_docs": tokenizer_train_docs,
        "seed": seed,
        "validation_fraction": validation_fraction,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    return f"so-{digest}"


def identity(spec: RunSpec) -> dict[str, Any]:
    """What of `spec` decides its dataset's bytes: `content_id`'s arguments."""
    return {
        "posts": list(spec.data.posts),
        "comments": list(spec.data.comments),
        "vocab_size": spec.model.vocab_size,
        "document_unit": spec.data.document_unit.value,
        "min_document_chars": spec.data.min_document_chars,
        "tokenizer_train_docs": spec.data.tokenizer_train_docs,
        "seed": spec.train.seed,
        "validation_fraction": spec.data.validation_fraction,
    }


IDENTITY_FIELDS = tuple(inspect.signature(content_id).parameters)  # what `identity` gives


class VocabularyMismatchError(ValueError):
    """A dataset's tokenizer has more tokens than the model's embedding has rows."""


def check_vocabulary(manifest: dict[str, Any], vocab_size: int) -> None:
    """Refuse a dataset whose token ids reach past `model.vocab_size` (`vocab_size`): on a GPU they
    index past the embedding, a device-side assert that names neither. `manifest`: the dataset's
    published manifest (its `tokenizer.vocab_size` is what the prepare stage trained)."""
    tokens = int(manifest["tokenizer"]["vocab_size"])
    if tokens > vocab_size:
        raise VocabularyMismatchError(
            f"dataset {manifest.get('dataset_id', '?')}: its tokenizer has {tokens} tokens, more than "
            f"model.vocab_size ({vocab_size}); prepare the dataset with this model's vocab_size, or set "
            f"model.vocab_size to at least {tokens}"
        )


def dataset_id(spec: RunSpec) -> str:
    """The id of the dataset `spec`'s prepare stage publishes (FileNotFoundError naming a local
    dump that does not exist)."""
    return content_id(**identity(spec))


def _source_identity(uri: str) -> list:
    if is_s3(uri):
        return [uri]
    path = Path(uri).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.posts/comments: {uri}: no such file")
    return [str(path.absolute()), path.stat().st_size]
