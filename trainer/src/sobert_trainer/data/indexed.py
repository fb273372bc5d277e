"""Megatron's indexed dataset files (`.bin` tokens, `.idx` index), written without importing
megatron-core.

The format is megatron-core's `IndexedDatasetBuilder` / `_IndexWriter` (core_v0.16.1,
`datasets/indexed_dataset.py`): the `.bin` is every document's tokens back to back in the
index's dtype; the `.idx` is the header `MMIDIDX\\0\\0`, version 1 (<Q), the dtype's code (<B), the
sequence and document counts (<Q each), each sequence's length (int32), each sequence's byte
offset in the `.bin` (int64) and the document boundaries as sequence indices (int64, starting at
0). Importing megatron-core imports torch and most of megatron (~6 s of one core here, which the
data preparation stage spent while its workers waited); this writer needs numpy only.
`tests/unit/test_indexed.py` checks that it writes the same bytes as megatron-core's builder.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
# megatron-core's DType codes
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7,
               np.uint16: 8}  # fmt: skip


def optimal_dtype(vocab_size: int) -> type[np.number]:
    """`DType.optimal_dtype`: uint16 below 65,500 token ids, int32 above."""
    return np.uint16 if vocab_size < 65500 else np.int32


class IndexedWriter:
    """Documents (each a token array cut into sentences) to `<prefix>.bin` and `<prefix>.idx`."""

    def __init__(self, prefix: Path, dtype: type[np.number]):
        self.prefix, self.dtype = prefix, dtype
        self._bin = open(f"{prefix}.bin", "wb")  # noqa: SIM115 (closed by finalize)
        self._lengths: list[np.ndarray] = []  # sentence lengths, a block per add
        self._documents: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]  # document ends, as sentence counts
        self._sentences = 0

    def add_document(self, tokens: np.ndarray, lengths: list[int]) -> None:
        self._bin.write(np.asarray(tokens, dtype=self.dtype).tobytes(order="C"))
        self._add_index(np.asarray(lengths, dtype=np.int32), np.asarray([len(lengths)], dtype=np.int64))

    def add_documents(self, bin_path: Path, lengths: np.ndarray, sentences_per_document: np.ndarray) -> None:
        """Documents already written in this dtype to `bin_path` (`write_documents`): the bytes are
        copied as they are, the index extended."""
        with open(bin_path, "rb") as source:
            shutil.copyfileobj(source, self._bin, 1 << 20)
        self._add_index(lengths.astype(np.int32), sentences_per_document.astype(np.int64))

    def _add_index(self, lengths: np.ndarray, sentences_per_document: np.ndarray) -> None:
        self._lengths.append(lengths)
        self._documents.append(self._sentences + np.cumsum(sentences_per_document))
        self._sentences += int(sentences_per_document.sum())

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int32)
        documents = np.concatenate(self._documents)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        with open(f"{self.prefix}.idx", "wb") as index:
            index.write(HEADER)
            index.write(struct.pack("<Q", 1))
            index.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            index.write(struct.pack("<Q", len(lengths)))
            index.write(struct.pack("<Q", len(documents)))
            index.write(lengths.tobytes(order="C"))
            index.write(pointers.tobytes(order="C"))
            index.write(documents.tobytes(order="C"))


def write_documents(bin_path: Path, documents, dtype: type[np.number]) -> tuple[np.ndarray, np.ndarray, int]:
    """Documents (each a list of sentence arrays) to a bare `.bin` for `IndexedWriter.add_documents`;
    returns the sentence lengths, the sentences per document and the token count."""
    lengths: list[int] = []
    per_document: list[int] = []
    tokens = 0
    with open(bin_path, "wb") as out:
        for sentences in documents:
            joined = np.concatenate(sentences)
            out.write(joined.astype(dtype).tobytes(order="C"))
            lengths.extend(len(s) for s in sentences)
            per_document.append(len(sentences))
            tokens += int(joined.size)
    return np.asarray(lengths, dtype=np.int32), np.asarray(per_document, dtype=np.int64), tokens
