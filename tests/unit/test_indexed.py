"""sobert's indexed-dataset writer writes the bytes megatron-core's `IndexedDatasetBuilder` writes,
and megatron-core reads them back as the documents written."""

from __future__ import annotations

import numpy as np
import pytest

from sobert_trainer.data.indexed import IndexedWriter, optimal_dtype, write_documents


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


def test_documents_appended_from_worker_files_are_the_documents_added_one_by_one(tmp_path):
    """The parent appends each worker's `.bin` and index (`add_documents`); the shard is byte for
    byte the one `add_document` writes for the same documents."""
    rng = np.random.default_rng(1)
    documents = [[rng.integers(0, 600, size=int(n)).astype(np.int32) for n in rng.integers(1, 90, size=3)]
                 for _ in range(30)]  # fmt: skip
    one_by_one = IndexedWriter(tmp_path / "one", np.uint16)
    for sentences in documents:
        one_by_one.add_document(np.concatenate(sentences), [len(s) for s in sentences])
    one_by_one.finalize()
    appended = IndexedWriter(tmp_path / "appended", np.uint16)
    for number, start in enumerate(range(0, 30, 7)):
        piece = tmp_path / f"piece-{number}.bin"
        lengths, per_document, tokens = write_documents(piece, documents[start : start + 7], np.uint16)
        assert tokens == sum(len(s) for d in documents[start : start + 7] for s in d)
        appended.add_documents(piece, lengths, per_document)
    appended.finalize()
    for suffix in (".bin", ".idx"):
        assert (tmp_path / f"appended{suffix}").read_bytes() == (tmp_path / f"one{suffix}").read_bytes()
