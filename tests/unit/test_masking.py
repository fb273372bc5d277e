"""The vectorised masked-LM samples are megatron-core's own, array for array (no servers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXTURES
from sobert_api.storage import Storage
from sobert_trainer.data.prepare import PrepareConfig, prepare_dataset
from sobert_trainer.pretrain.dataset import build_dataset, dataset_config
from sobert_trainer.pretrain.masking import MegatronBertSamples


@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory, one_rank) -> tuple[dict, Path]:
    """The project's fixture dump prepared and fetched: (manifest, dataset dir)."""
    root = tmp_path_factory.mktemp("prepared")
    dump = FIXTURES / "dump"
    storage = Storage.open(str(root / "store"))
    config = PrepareConfig(
        posts=[str(dump / "example.stackexchange.com-Posts.xml")],
        comments=[str(dump / "example.stackexchange.com-Comments.xml")],
        vocab_size=600,
        workers=1,
    )
    manifest = prepare_dataset(config, storage)
    storage.fetch_tree(f"data/{manifest['dataset_id']}", root / "fetched")
    return manifest, root / "fetched"


def assert_same_samples(config, count: int) -> None:
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset

    reference = build_dataset(config, count, lambda: True, dataset_class=BERTMaskedWordPieceDataset)
    vectorised = build_dataset(config, count, lambda: True)
    assert isinstance(vectorised.samples, MegatronBertSamples)  # inside FullLengthSamples
    assert len(reference) == len(vectorised) >= count
    for index in range(len(reference)):
        expected, got = reference[index], vectorised[index]
        assert expected.keys() == got.keys()
        for key in expected:
            assert np.array_equal(expected[key], got[key]), f"sample {index}: {key} differs"


@pytest.mark.parametrize(("seq_length", "mask_prob", "seed"), [(64, 0.15, 1234), (128, 0.15, 7), (48, 0.4, 99)])
def test_samples_equal_megatrons_on_the_fixture_dump(fixture_dataset, tmp_path, seq_length, mask_prob, seed):
    """Every sample over two epochs (trimmed and untrimmed, short last samples), for masking rates
    whose budget is fractional (megatron's loop then never meets it) and whole."""
    manifest, dataset_dir = fixture_dataset
    config = dataset_config(dataset_dir, manifest, seq_length, mask_prob, seed, cache=tmp_path)
    assert_same_samples(config, 2 * manifest["counts"]["tokens"] // seq_length)


def test_configurations_it_does_not_build_are_refused(fixture_dataset, tmp_path):
    manifest, dataset_dir = fixture_dataset
    config = dataset_config(dataset_dir, manifest, 64, 0.15, 1, cache=tmp_path)
    whole_words = dataclasses.replace(config, masking_do_full_word=True)
    with pytest.raises(ValueError, match="masking_do_full_word"):
        build_dataset(whole_words, 4, lambda: True)
