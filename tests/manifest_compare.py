"""Compare what was sent to the API server with what it stored."""

from __future__ import annotations

from typing import Any


def missing_fields(sent: Any, stored: Any, path: str = "") -> list[str]:
    """Paths in `sent` that the server pruned or changed. Server-added defaults are fine."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        problems = []
        for key, value in sent.items():
            if key not in stored:
                problems.append(f"{path}.{key}")
            else:
                problems += missing_fields(value, stored[key], f"{path}.{key}")
        return problems
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [path]
        return [
            p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in missing_fields(a, b, f"{path}[{i}]")
        ]
    # quantities and ints may come back as strings and vice versa only for int-or-string fields
    return [] if sent == stored or str(sent) == str(stored) else [f"{path}: sent {sent!r}, stored {stored!r}"]
