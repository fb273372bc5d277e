"""kopf's diff base (the last-handled spec it compares each event with), built from the fields it
keeps rather than from a deep copy of the whole object.

For every event it processes kopf builds the object's "essence", to tell a spec change from any
other, whether or not a handler of that object compares essences (kopf 1.45.2
`_core/reactor/processing.py`, `_detect_causes`; the controller has none since runs are watched
with `on.event`): `DiffBaseStorage.build` (`_cogs/configs/diffbase.py`) deep-copies the whole
body, then deletes `metadata` and `status` from the copy, and copies back the labels and
annotations. A run's or job's body is mostly its status and `metadata.managedFields`, so with 200
runs at once that copy was the largest single cost of the controller's event handling (7% of its
CPU, py-spy). This storage hands kopf the same body without what it would delete: the essence,
the annotation it is stored in and so every diff are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import kopf

KEPT_METADATA = ("name", "namespace", "labels", "annotations", "ownerReferences")
"""What of `metadata` the essence or the storage's key reads: labels and annotations (kept in
the essence), the name, namespace and owners (the storage's keys, `make_keys` and `mark_key`)."""


def trimmed(body: Any) -> kopf.Body:
    """The body without its status and with only the metadata `KEPT_METADATA` lists."""
    metadata = body.get("metadata") or {}
    kept = {key: value for key, value in body.items() if key not in ("status", "metadata")}
    kept["metadata"] = {key: metadata[key] for key in KEPT_METADATA if key in metadata}
    return kopf.Body(cast(kopf.RawBody, kept))


class SpecDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's default diff base storage (the same annotation), built from `trimmed` bodies.
    Handlers that track status fields (`extra_fields`) get kopf's own build."""

    def build(self, *, body, extra_fields: Iterable[Any] | None = None):
        if extra_fields:
            return super().build(body=body, extra_fields=extra_fields)
        return super().build(body=trimmed(body), extra_fields=extra_fields)
