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
        self._lengths: list[int] = []
        self._documents = [0]

    def add_document(self, tokens: np.ndarray, lengths: list[int]) -> None:
        self._bin.write(np.asarray(tokens, dtype=self.dtype).tobytes(order="C"))
        self._lengths.extend(lengths)
        self._documents.append(len(self._lengths))

    def finalize(self) -> None:
        self._bin.close()
        lengths = np.asarray(self._lengths, dtype=np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(self.dtype).itemsize, out=pointers[1:])
        with open(f"{self.prefix}.idx", "wb") as index:
            index.write(HEADER)
            index.write(struct.pack("<Q", 1))
            index.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            index.write(struct.pack("<Q", len(lengths)))
            index.write(struct.pack("<Q", len(self._documents)))
            index.write(lengths.tobytes(order="C"))
            index.write(pointers.tobytes(order="C"))
            index.write(np.asarray(self._documents, dtype=np.int64).tobytes(order="C"))
