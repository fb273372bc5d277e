"""The pretraining input pipeline: the DataLoader with worker processes yields exactly the
micro-batches the step-order reference builds in process, from any start step (resume)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sobert_trainer.pretrain.dataset import BATCH_KEYS, micro_batch_loader, micro_batches


class Samples:
    """A stand-in for Megatron's dataset with the same item shape: deterministic per index."""

    def __init__(self, length: int, seq: int = 8):
        self.length, self.seq = length, seq

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(index)
        return {key: rng.integers(0, 50, size=self.seq, dtype=np.int64) for key in BATCH_KEYS}


@pytest.mark.parametrize(("workers", "start", "dp_rank"), [(0, 0, 0), (2, 0, 1), (2, 3, 0)])
def test_loader_yields_the_reference_micro_batches_in_order(workers, start, dp_rank):
    dataset, gbs, mbs, dp, stop = Samples(37), 8, 2, 2, 7  # wraps past the end of the dataset
    loaded = list(micro_batch_loader(dataset, start, stop, gbs, mbs, dp_rank, dp, workers=workers, pin_memory=False))
    reference = [b for step in range(start, stop) for b in micro_batches(dataset, step, gbs, mbs, dp_rank, dp)]
    assert len(loaded) == len(reference) == (stop - start) * gbs // (mbs * dp)
    for got, want in zip(loaded, reference, strict=True):
        assert all(torch.equal(got[key], want[key]) for key in BATCH_KEYS)
