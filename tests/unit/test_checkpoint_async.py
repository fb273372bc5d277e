"""An asynchronous checkpoint holds the state of the moment it was asked for, and exists only once
it is published.

One rank, a local storage root: a tensor is saved asynchronously and changed right after the call
returns (as the next optimizer step changes the weights); the published checkpoint must hold the
values from before the change, and loading it must give them back. Until the writer is done and
the save published, no manifest exists, so a resume in between would not see it.
"""

from __future__ import annotations

import torch

from sobert_api.checkpoints import complete_checkpoints
from sobert_api.storage import Storage


def _state(weights: torch.Tensor) -> dict:
    from megatron.core.dist_checkpointing import ShardedTensor

    return {"w": ShardedTensor.from_rank_offsets("w", weights, replica_id=0)}


def test_an_async_save_holds_the_values_of_the_moment_it_was_asked_for(one_rank, tmp_path):
    from megatron.core import dist_checkpointing

    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.checkpoint import CheckpointStore, start_writer_helpers

    cpu_compat.install()
    start_writer_helpers()
    storage = Storage.open(str(tmp_path / "store"))
    store = CheckpointStore(storage, tmp_path / "staging", node_rank=0, local_rank=0)
    weights = torch.arange(1 << 16, dtype=torch.float32)
    saved = weights.clone()

    store.save(_state(weights), 10, extra={"run": "t"}, asynchronous=True)
    weights.add_(1.0)  # the next step, while the checkpoint is being written
    # Published only between steps, once every writer is done: nothing yet, however fast the write.
    assert complete_checkpoints(storage) == []
    store.wait_published()
    assert complete_checkpoints(storage) == [10]

    local, manifest = store.fetch(10)
    assert manifest["step"] == 10 and manifest["run"] == "t" and manifest["files"]
    loaded = dist_checkpointing.load(_state(torch.zeros_like(weights)), str(local))
    assert torch.equal(loaded["w"], saved)

    # A synchronous save after it: published when the call returns; the older one is kept (keep_last=2).
    store.save(_state(weights), 20, extra={"run": "t"})
    assert complete_checkpoints(storage) == [10, 20]
    store.close()
