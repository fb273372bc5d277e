"""sobert's indexed-dataset writer writes the bytes megatron-core's `IndexedDatasetBuilder` writes,
and megatron-core reads them back as the documents written."""

from __future__ import annotations

import numpy as np
import pytest

from sobert_trainer.data.indexed import IndexedWriter, optimal_dtype


@pytest.mark.parametrize("vocab_size", [600, 50_000, 70_000])
def test_files_are_megatrons_byte_for_byte(tmp_path, vocab_size):
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder

    dtype = optimal_dtype(vocab_size)
    assert dtype is DType.optimal_dtype(vocab_size)
    rng = np.random.default_rng(vocab_size)
    documents = []
    for _ in range(40):
        lengths = [int(n) for n in rng.integers(1, 600, size=rng.integers(1, 8))]
        documents.append((rng.integers(0, vocab_size, size=sum(lengths)).astype(np.int32), lengths))

    ours = IndexedWriter(tmp_path / "ours", dtype)
    theirs = IndexedDatasetBuilder(str(tmp_path / "theirs.bin"), dtype=dtype)
    for tokens, lengths in documents:
        ours.add_document(tokens, lengths)
        theirs.add_document(tokens, lengths)
    ours.finalize()
    theirs.finalize(str(tmp_path / "theirs.idx"))
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"theirs{suffix}").read_bytes(), suffix

    read = IndexedDataset(str(tmp_path / "ours"))
    assert len(read.document_indices) - 1 == len(documents)
    sentences = [s for tokens, lengths in documents for s in np.split(tokens, np.cumsum(lengths)[:-1])]
    assert all(np.array_equal(read[i], expected) for i, expected in enumerate(sentences))
