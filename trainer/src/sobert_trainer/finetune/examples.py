"""The example types every task loader returns (bad input raises `sobert_api.task_files.TaskDataError`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar


@dataclass(frozen=True)
class TextExample:
    """One sequence-classification example."""

    id: str
    text: str
    label: str


@dataclass(frozen=True)
class TokenExample:
    """One token-classification example: words and their BIO tags (same length)."""

    id: str
    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.tags):
            raise ValueError(f"example {self.id}: {len(self.tokens)} tokens but {len(self.tags)} tags")


E = TypeVar("E", TextExample, TokenExample)


@dataclass
class LoadResult(Generic[E]):
    """What a loader read: the examples in file order, and what it left out by reason.

    Skipped rows are counted rather than silently dropped so a run can report them (an empty
    text is not an error in a 60k-row export, but a thousand of them would be worth knowing).
    """

    examples: list[E] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
