"""Kubernetes' timestamps (RFC 3339 in UTC, `2026-12-03T16:17:50Z`) to and from unix seconds."""

from __future__ import annotations

import datetime as dt


def parse(value: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp (a `Z` or an offset); None for none."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def rfc3339(timestamp: float) -> str:
    """Unix seconds as Kubernetes writes a time: UTC, whole seconds, `Z`."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
