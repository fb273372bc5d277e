"""The runs' storage Secrets, each read from the API server at most every `ttl_s` seconds.

Every reconcile of a run reads its storage Secret (to check it, to open storage with it), and a
burst of runs sharing one Secret asked for it once per reconcile: with 200 runs at once, one GET
in six of the controller's requests (BENCHMARKS.md "Controller"). A Secret changed in place
(rotated keys) is seen within `ttl_s`; a missing one is asked for again on every reconcile, so a
run waiting for it goes on as soon as it exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Secret = dict[str, Any]


class SecretCache:
    def __init__(
        self,
        read: Callable[[str, str], Secret | None],
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`read(namespace, name)`: the Secret from the API server, None where there is none."""
        self._read, self._ttl_s, self._clock = read, ttl_s, clock
        self._found: dict[tuple[str, str], tuple[float, Secret]] = {}

    def get(self, namespace: str, name: str) -> Secret | None:
        key = (namespace, name)
        found = self._found.get(key)
        if found is not None and self._clock() - found[0] < self._ttl_s:
            return found[1]
        secret = self._read(namespace, name)
        if secret is None:
            self._found.pop(key, None)
        else:
            self._found[key] = (self._clock(), secret)
        return secret
