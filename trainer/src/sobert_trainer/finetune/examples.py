"""The example types every task loader returns, and the error they raise on bad input."""

from __future__ import annotations

from dataclasses import dataclass, field


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


@dataclass
class LoadResult:
    """What a loader read: the examples, and rows it skipped by reason (e.g. empty text)."""

    examples: list = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


class TaskDataError(ValueError):
    """Bad task input; the message names the file, the line, the field and what was expected."""
