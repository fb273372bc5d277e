"""FULL-SENTENCES packing of posts into Megatron documents (no servers, no tokenizer)."""

from __future__ import annotations

import numpy as np

from sobert_trainer.data.shards import MAX_SENTENCE_TOKENS, pack_documents

SEP = 3


def _posts(seed: int, count: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        [rng.integers(5, 100, size=int(n), dtype=np.int32) for n in rng.integers(1, 1500, size=rng.integers(1, 6))]
        for _ in range(count)
    ]


def test_packs_keep_every_token_in_order_with_a_separator_after_each_post():
    posts = _posts(0, 200)
    packs = list(pack_documents(iter(posts), sep_id=SEP, pack_tokens=10_000))
    expected = np.concatenate([np.concatenate([*post, [SEP]]) for post in posts])
    assert np.array_equal(np.concatenate([np.concatenate(pack) for pack in packs]), expected)
    assert sum(int(np.sum(np.concatenate(pack) == SEP)) for pack in packs) == len(posts)


def test_packs_reach_their_size_and_no_sentence_is_longer_than_megatron_keeps():
    """megatron-core's build_mapping skips a whole document holding a sentence over 512 tokens."""
    packs = list(pack_documents(iter(_posts(1, 300)), sep_id=SEP, pack_tokens=20_000))
    sizes = [sum(len(s) for s in pack) for pack in packs]
    assert len(packs) > 5 and all(size >= 20_000 for size in sizes[:-1]) and sizes[-1] > 0
    assert max(len(s) for pack in packs for s in pack) <= MAX_SENTENCE_TOKENS
    assert min(len(s) for pack in packs for s in pack) >= 1


def test_packing_is_deterministic():
    first = list(pack_documents(iter(_posts(2, 50)), sep_id=SEP, pack_tokens=5_000))
    again = list(pack_documents(iter(_posts(2, 50)), sep_id=SEP, pack_tokens=5_000))
    assert len(first) == len(again)
    assert all(np.array_equal(a, b) for x, y in zip(first, again, strict=True) for a, b in zip(x, y, strict=True))
