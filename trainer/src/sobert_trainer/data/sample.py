"""The tokenizer's training sample: a uniform sample of k documents of the sample pieces
(`pipeline.sample_pieces`: pieces spread evenly over the dump), the same however many workers
parsed them.

Bottom-k sampling: every document gets a priority, a hash of the seed and its id; the sample is
the k documents with the smallest priorities (ties by dump position). Each piece keeps its own
bottom k (`BottomK`), the pieces' are merged (`merge`), and the result is exactly the bottom k of
the pieces merged. Memory: k (priority, position) pairs, never the documents themselves (they are
read back from the pieces' document files for training).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable

Entry = tuple[int, int, int]  # (priority, piece, position in piece)


def priority(seed: int, doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest(), "big")


class BottomK:
    """The k smallest entries seen."""

    def __init__(self, k: int):
        self.k = k
        self._heap: list[tuple[int, int, int]] = []  # negated, so the root is the largest kept

    def offer(self, entry: Entry) -> None:
        key = (-entry[0], -entry[1], -entry[2])
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, key)
        elif key > self._heap[0]:
            heapq.heapreplace(self._heap, key)

    def entries(self) -> list[Entry]:
        return sorted((-a, -b, -c) for a, b, c in self._heap)


def merge(k: int, pieces: Iterable[Iterable[Entry]]) -> dict[int, set[int]]:
    """The bottom k over all pieces' entries, as piece -> positions."""
    keep = BottomK(k)
    for entries in pieces:
        for entry in entries:
            keep.offer(entry)
    chosen: dict[int, set[int]] = {}
    for _, piece, position in keep.entries():
        chosen.setdefault(piece, set()).add(position)
    return chosen
