"""The controller reads a run's storage Secret at most every `ttl_s` seconds, and a missing one on
every reconcile."""

from __future__ import annotations

from sobert_operator.controller.secrets import SecretCache


def test_a_secret_is_read_again_only_after_its_ttl_and_a_missing_one_every_time():
    now = [100.0]
    secrets: dict[tuple[str, str], dict] = {}
    reads: list[tuple[str, str]] = []

    def read(namespace: str, name: str):
        reads.append((namespace, name))
        return secrets.get((namespace, name))

    cache = SecretCache(read, ttl_s=10, clock=lambda: now[0])
    assert cache.get("ml", "s3") is None and cache.get("ml", "s3") is None
    assert len(reads) == 2, "missing: asked for again, so a run goes on as soon as it exists"
    secrets[("ml", "s3")] = {"data": {"AWS_ACCESS_KEY_ID": "a"}}
    assert cache.get("ml", "s3") == {"data": {"AWS_ACCESS_KEY_ID": "a"}}
    now[0] += 9
    secrets[("ml", "s3")] = {"data": {"AWS_ACCESS_KEY_ID": "rotated"}}
    assert cache.get("ml", "s3")["data"]["AWS_ACCESS_KEY_ID"] == "a" and len(reads) == 3
    assert cache.get("other", "s3") is None and len(reads) == 4, "per namespace"
    now[0] += 2
    assert cache.get("ml", "s3")["data"]["AWS_ACCESS_KEY_ID"] == "rotated" and len(reads) == 5
    del secrets[("ml", "s3")]
    now[0] += 11
    assert cache.get("ml", "s3") is None and cache.get("ml", "s3") is None and len(reads) == 7
