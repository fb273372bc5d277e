"""The dataset id the executors compute from a spec (`sobert_api.dataset`) is the one the trainer
publishes under: same inputs and settings, same id; anything that changes the bytes, another id."""

from __future__ import annotations

import pytest

from conftest import FIXTURES
from sobert_api import build_spec
from sobert_api.dataset import VocabularyMismatchError, check_vocabulary, dataset_id
from sobert_trainer.data.prepare import PrepareConfig

POSTS = str(FIXTURES / "dump" / "example.stackexchange.com-Posts.xml")


def spec(**data):
    document = {"preset": "tiny", "name": "ids", "storage": {"uri": "/tmp/s"}, "data": {"posts": [POSTS], **data}}
    return build_spec(document)


def test_the_trainer_and_the_contract_agree_on_the_id():
    assert PrepareConfig.from_spec(spec()).dataset_id() == dataset_id(spec())


def test_the_id_follows_what_changes_the_dataset_and_not_how_it_is_made():
    assert dataset_id(spec()) == dataset_id(spec(workers=1))  # workers change how, not what
    assert dataset_id(spec()) != dataset_id(spec(min_document_chars=40))
    assert dataset_id(spec()) != dataset_id(spec(document_unit="thread"))


def test_a_missing_local_dump_is_named():
    with pytest.raises(FileNotFoundError, match=r"nope\.xml"):
        dataset_id(spec(posts=["nope.xml"]))


def test_a_dataset_whose_tokenizer_outgrows_the_model_is_refused_naming_both_sizes():
    """A 50k-token dataset under the tiny model (4,000 rows of embedding) would index past the
    embedding: on a GPU, a device-side assert that names neither."""
    manifest = {"dataset_id": "so-0123456789ab", "tokenizer": {"file": "tokenizer.json", "vocab_size": 50_000}}
    with pytest.raises(VocabularyMismatchError, match=r"so-0123456789ab: its tokenizer has 50000 tokens.*\(4000\)"):
        check_vocabulary(manifest, 4000)
    check_vocabulary(manifest, 50_000)  # as many rows as tokens: fine
    check_vocabulary({**manifest, "tokenizer": {"vocab_size": 3_977}}, 4000)  # BPE stopped short of its target
