"""Distributed checkpoints (megatron-core `dist_checkpointing`) published to the run's storage.

Every rank saves its share into a node-local staging directory (fully parallel: replicated
tensors are split over the data-parallel ranks, as Megatron-LM saves by default). The first rank
of each node uploads its node's files and a part list with checksums; global rank 0 then writes
`manifest.json` once every node's part list is there, which is what makes the checkpoint exist.
Resume picks the newest checkpoint with a manifest, so a save cut short by a crash or preemption
is never loaded.

Asynchronous saves (`train.async_save`, as Megatron-LM's `--async-save`): the tensors are written
by a forked process while training goes on (megatron-core's `AsyncCallsQueue`, checked between
steps), and publishing (upload, part list, manifest) runs on a background thread of each node's
first rank. The save the run ends with (the last step, or a stop) is waited for: written,
uploaded and in the manifest before the process exits.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch.distributed as dist

from sobert_api.checkpoints import checkpoint_name, complete_checkpoints
from sobert_api.storage import MANIFEST, Storage, sha256_file

log = logging.getLogger(__name__)
# How long global rank 0 waits for the other nodes' part lists before leaving a checkpoint
# unpublished (a node that died mid-save; the run restarts from the previous one).
PARTS_TIMEOUT_S = 3600.0


def start_writer_helpers() -> None:
    """Start the helper process `dist_checkpointing` saves through, so that it outlives a SIGTERM.

    Its writer sends results through a multiprocessing Manager queue, a *spawned* process created
    at the first save and kept (`_get_write_results_queue` in megatron/core/dist_checkpointing/
    strategies/filesystem_async.py, megatron-core 0.16.1; its forked writers inherit this process's
    SIGTERM handler and are safe). The Manager shares the worker's process group, which torchrun
    signals whole (`os.killpg` in torch's SubprocessHandler.close): started with its default SIGTERM
    action it dies, and a save under way fails (BrokenPipeError), losing both that checkpoint and the
    one the stop asks for. Started here with SIGTERM ignored (kept across exec), it ignores the
    group's SIGTERM. A SIGTERM to this process meanwhile stays pending (blocked, so not discarded)
    and reaches the StopFlag handler afterwards. Call before any other thread exists.
    """
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    start = getattr(filesystem_async, "_get_write_results_queue", None)
    if start is None:  # a megatron-core without it saves without a Manager
        return
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    previous_action = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        start()
    finally:
        signal.signal(signal.SIGTERM, previous_action)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def _fully_parallel_save_strategy():
    """Megatron-LM's default save (`save_checkpoint` in megatron/training/checkpointing.py, tag
    core_v0.16.1: --ckpt-fully-parallel-save is on unless --no-ckpt-fully-parallel-save): the
    torch_dist strategy wrapped so that tensors replicated over data-parallel ranks (the model's
    weights) are written by all of them, each a share, not all by the first."""
    from megatron.core import parallel_state
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

    return FullyParallelSaveStrategyWrapper(
        get_default_save_sharded_strategy("torch_dist"), parallel_state.get_data_parallel_group()
    )


class CheckpointStore:
    def __init__(
        self,
        storage: Storage,
        local_root: Path,
        node_rank: int,
        local_rank: int,
        nodes: int = 1,
        keep_last: int = 2,
    ):
        self.storage = storage  # rooted at runs/<run>/pretrain/checkpoints
        self.local_root = local_root
        self.node_rank, self.local_rank, self.nodes = node_rank, local_rank, nodes
        self.keep_last = keep_last
        self._writes: Any = None  # megatron-core's AsyncCallsQueue, at the first asynchronous save
        # Publishing runs here, in order, on each node's first rank.
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sobert-ckpt-publish")
        self._published: list[Future] = []

    def local_dir(self, step: int) -> Path:
        return self.local_root / checkpoint_name(step)

    def save(self, sharded_state_dict: dict, step: int, extra: dict, asynchronous: bool = False) -> None:
        """Save `step` (collective). Synchronous: returns once the checkpoint is published.
        Asynchronous: returns once the tensors are handed to the writer process; `poll` between
        steps publishes it when every rank's writer is done."""
        from megatron.core import dist_checkpointing

        self._finish_writes()  # one save at a time
        name, local = checkpoint_name(step), self.local_dir(step)
        if dist.get_rank() == 0:  # what an interrupted save of this step left (its parts would join the manifest)
            self.storage.delete_prefix(name)
        if self.local_rank == 0:
            shutil.rmtree(local, ignore_errors=True)
            local.mkdir(parents=True)
        dist.barrier()
        if not asynchronous:
            dist_checkpointing.save(sharded_state_dict, str(local), _fully_parallel_save_strategy())
            dist.barrier()  # every rank's files are on this node's disk
            self._publish(step, extra)
            self.wait_published()
            return
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        request = dist_checkpointing.save(
            sharded_state_dict, str(local), _fully_parallel_save_strategy(), async_sharded_save=True
        )
        # Runs on every rank once every rank's writer is done (after megatron-core's own finalize,
        # which writes the metadata), so the node's files are complete.
        request.add_finalize_fn(lambda: self._publish(step, extra))
        self._writes = self._writes or AsyncCallsQueue()
        self._writes.schedule_async_request(request)

    def poll(self) -> None:
        """Between steps (collective while a write is under way): publish a finished async write."""
        if self._writes is not None and self._writes.get_num_unfinalized_calls():
            self._writes.maybe_finalize_async_calls(blocking=False)

    def wait_published(self) -> None:
        """Every save so far written and published (collective); raises what publishing raised."""
        self._finish_writes()
        pending, self._published = self._published, []
        for future in pending:
            future.result()
        dist.barrier()

    def close(self) -> None:
        self.wait_published()
        self._publisher.shutdown()

    def _finish_writes(self) -> None:
        if self._writes is not None and self._writes.get_num_unfinalized_calls():
            self._writes.maybe_finalize_async_calls(blocking=True)

    def _publish(self, step: int, extra: dict) -> None:
        """Hand this node's share of `step` to the publishing thread (node's first rank only)."""
        if self.local_rank == 0:
            manifest = dist.get_rank() == 0
            self._published.append(self._publisher.submit(self._upload, step, extra, manifest))

    def _upload(self, step: int, extra: dict, write_manifest: bool) -> None:
        name, local = checkpoint_name(step), self.local_dir(step)
        part = {}
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            self.storage.upload_file(path, f"{name}/{rel}")
            part[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
        self.storage.write_json(f"{name}/.parts/node-{self.node_rank}.json", part)
        if write_manifest:
            self._write_manifest(step, extra)
        # Staging copies of older checkpoints are no longer needed (newer ones may be being written).
        for stale in self.local_root.glob("iter_*"):
            if stale.name < name:
                shutil.rmtree(stale, ignore_errors=True)

    def _write_manifest(self, step: int, extra: dict) -> None:
        name = checkpoint_name(step)
        deadline = time.monotonic() + PARTS_TIMEOUT_S
        while len(parts := self.storage.list(f"{name}/.parts")) < self.nodes:
            if time.monotonic() > deadline:
                log.error(
                    "checkpoint %s: %d of %d nodes' parts after %.0f s; not published",
                    name,
                    len(parts),
                    self.nodes,
                    PARTS_TIMEOUT_S,
                )
                return
            time.sleep(0.5)
        files: dict = {}
        for key in parts:
            files.update(self.storage.read_json(key))
        self.storage.write_json(f"{name}/{MANIFEST}", {**extra, "step": step, "files": files})
        for old in complete_checkpoints(self.storage)[: -self.keep_last]:
            self.storage.delete_prefix(checkpoint_name(old))

    def latest_step(self) -> int | None:
        """Agreed on by all ranks (rank 0 looks, everyone receives)."""
        found: list[int | None] = [None]
        if dist.get_rank() == 0:
            steps = complete_checkpoints(self.storage)
            found = [steps[-1] if steps else None]
        dist.broadcast_object_list(found, src=0)
        return found[0]

    def fetch(self, step: int) -> tuple[Path, dict]:
        """Bring the checkpoint to this node's staging dir (verified against the manifest)."""
        local, name = self.local_dir(step), checkpoint_name(step)
        if self.local_rank == 0:
            manifest = self.storage.read_manifest(name)
            assert manifest is not None
            have = all(
                (local / rel).is_file() and sha256_file(local / rel) == meta["sha256"]
                for rel, meta in manifest["files"].items()
            )
            if not have:
                shutil.rmtree(local, ignore_errors=True)
                self.storage.fetch_tree(name, local)
        dist.barrier()
        return local, json.loads(self.storage.read_bytes(f"{name}/{MANIFEST}"))
