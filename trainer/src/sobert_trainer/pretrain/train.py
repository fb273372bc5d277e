"""PRETRAIN: megatron-core BERT masked-LM under torchrun. One process per rank.

Driven the way Megatron-LM's own loop drives megatron-core (`megatron/training/training.py`, tag
core_v0.16.1): the model built with `use_cpu_initialization`, moved to the device and put in bf16
before `DistributedDataParallel` (`get_model`); `get_megatron_optimizer` and the
`OptimizerParamScheduler`; the schedule's hooks set on the model config before the loop (`train`:
`grad_scale_func` = the optimizer's loss scale, `finalize_model_grads_func` = `finalize_model_grads`,
which all-reduces gradients across data-parallel replicas); each step zeroes the grad buffers,
runs the no-pipelining schedule and steps the optimizer (`train_step`). Checkpoints go through
`dist_checkpointing`. Auto-resumes from the newest complete checkpoint; on SIGTERM it finishes the
step, checkpoints and exits with EXIT_PREEMPTED so an orchestrator restarts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from sobert_api import paths
from sobert_api.dataset import check_vocabulary
from sobert_api.flops import pretraining_flops_per_token
from sobert_api.spec import Precision, RunSpec
from sobert_api.stages import EXIT_PREEMPTED, PREEMPTED_LINE, STEP_LINE
from sobert_api.storage import Storage
from sobert_trainer.pretrain.distributed import RankInfo, current_device, init_distributed
from sobert_trainer.pretrain.stop import StopFlag
from sobert_trainer.pretrain.throughput import throughput_fields

log = logging.getLogger(__name__)


def use_bf16(spec: RunSpec) -> bool:
    if spec.train.precision == Precision.auto:
        return torch.cuda.is_available()
    return spec.train.precision == Precision.bf16


def _fetch_dataset(
    storage: Storage, dataset_id: str, workdir: Path, ranks: RankInfo, vocab_size: int
) -> tuple[Path, dict]:
    """The dataset on this node's disk, and its manifest. Every rank reads the manifest and refuses
    a dataset the model cannot embed (`check_vocabulary`) before any is fetched."""
    local = workdir / "data" / dataset_id
    prefix = paths.dataset_prefix(dataset_id)
    manifest = storage.read_manifest(prefix)
    if manifest is None:
        raise FileNotFoundError(f"{storage.uri(prefix)}: dataset not published (run `sobertctl data prepare`)")
    check_vocabulary(manifest, vocab_size)
    if ranks.local_rank == 0:
        marker = local / ".fetched"
        if not marker.exists():
            storage.fetch_tree(prefix, local)
            marker.write_text(manifest["dataset_id"])
    dist.barrier()
    return local, manifest


def _loss_func(loss_mask: torch.Tensor, lm_loss: torch.Tensor):
    mask = loss_mask.float()
    loss = torch.sum(lm_loss.float() * mask) / mask.sum().clamp(min=1.0)
    # The schedule divides `loss` in place by the micro-batch count: log a copy.
    return loss, {"lm loss": loss.detach().clone()}


def _validation_loss_func(loss_mask: torch.Tensor, lm_loss: torch.Tensor):
    """The micro-batch's summed masked-token loss and its masked-token count, so that the
    validation loss is the mean over every held-out masked token, however the micro-batches fall
    on the data-parallel ranks."""
    mask = loss_mask.float()
    sums = torch.stack([torch.sum(lm_loss.float() * mask), mask.sum()]).detach()
    return sums[0] / sums[1].clamp(min=1.0), {"lm loss sums": sums}


def _forward_step(data_iterator, model, loss_func=_loss_func):
    """megatron-core's forward step: the next micro-batch's per-token loss and the function that
    reduces it (`_loss_func` in training; evaluation passes `_validation_loss_func`)."""
    from sobert_trainer.pretrain.bert import per_token_loss
    from sobert_trainer.pretrain.dataset import to_device

    batch = to_device(next(data_iterator), current_device())
    return per_token_loss(model, batch), partial(loss_func, batch["loss_mask"])


# What megatron-core's gradient check says when it rejects a bucket's norm (`check_grads` in
# megatron/core/distributed/param_and_grad_buffer.py, core_v0.16.1).
NON_FINITE_GRAD_MESSAGES = ("found NaN in local grad norm", "found Inf in local grad norm")


class DivergedError(RuntimeError):
    """The gradients went NaN or Inf: the run diverged, and no step after it can be trusted."""

    def __init__(self, step: int, detail: str):
        super().__init__(
            f"pretrain: the run diverged at step {step}: non-finite gradients ({detail}); a checkpoint "
            "it saved holds the weights from before. Lower train.lr, raise train.warmup_fraction or keep "
            "train.clip_grad above 0, then submit again"
        )
        self.step = step


def train(spec: RunSpec, dataset_id: str, workdir: Path, peak_tflops: float | None = None) -> int:
    """Run (or resume) pretraining; returns the process exit code. `peak_tflops`: each device's
    dense BF16 peak, for the MFU in progress records (None: not reported)."""
    return Trainer(spec, dataset_id, workdir, peak_tflops).train()


@dataclass
class StepOutput:
    """What one optimizer step returns to the loop."""

    losses: list[dict[str, torch.Tensor]]  # each micro-batch's {"lm loss": loss}
    updated: bool  # False when the optimizer skipped the step (a non-finite gradient)
    grad_norm: float | None
    seconds: float


@dataclass
class RankZeroOutputs:
    """What only global rank 0 writes: progress.jsonl, the TensorBoard scalars, and the thread
    that uploads both (and polls for checkpoint requests) behind the steps."""

    progress: Any  # ProgressLog
    scalars: Any  # TensorBoardLog
    background: Any  # BackgroundIO


class Trainer:
    """One rank's pretraining, split as torchtitan's `Trainer` and Megatron-LM's training loop
    split theirs: built once (distributed init, dataset, model, optimizer, checkpoint store), then
    `restore` from the newest complete checkpoint, `train_step` per optimizer step, `log_step`
    (Megatron's `training_log`: one reduction over the data-parallel ranks per record), `save`
    (dist_checkpointing) at the checkpoint interval, on a request and on a stop; `train` is the
    loop over them."""

    def __init__(self, spec: RunSpec, dataset_id: str, workdir: Path, peak_tflops: float | None = None):
        from megatron.core import parallel_state

        from sobert_trainer.pretrain.checkpoint import CheckpointStore, start_writer_helpers
        from sobert_trainer.pretrain.goodput_clock import GoodputClock, process_started_at
        from sobert_trainer.pretrain.setup import setup_model_and_optimizer
        from sobert_trainer.pretrain.throughput import TokenTally

        self.spec, self.dataset_id, self.workdir, self.peak_tflops = spec, dataset_id, workdir, peak_tflops
        self.launched = time.time()  # checkpoint requests older than this were satisfied by an earlier process
        self.clock = GoodputClock(started_at=process_started_at())
        self.ranks = RankInfo.from_env()
        self.stop = StopFlag()
        start_writer_helpers()  # before any other thread: see its docstring
        init_distributed(spec, self.ranks)
        self.stop.join()
        self.bf16 = use_bf16(spec)
        self.tp, self.dp = spec.parallel.tensor_parallel, parallel_state.get_data_parallel_world_size()
        if self.tp * self.dp != dist.get_world_size():
            raise RuntimeError(
                f"torchrun world size {dist.get_world_size()} does not match the spec's TP x DP = {self.tp} x {self.dp}"
            )
        self.iters, self.seq = spec.train_iters, spec.model.seq_length
        self.gbs, self.mbs = spec.train.global_batch_size, spec.train.micro_batch_size
        self.accumulation = self.gbs // (self.mbs * self.dp)
        self.flops_per_token = pretraining_flops_per_token(spec.model, spec.train.mask_prob)
        self.storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
        self.run_storage = self.storage.child(paths.pretrain_prefix(spec.name))
        self.data_dir, self.data_manifest = _fetch_dataset(
            self.storage, dataset_id, workdir, self.ranks, spec.model.vocab_size
        )
        self.setup = setup_model_and_optimizer(spec, self.bf16, current_device())
        self.checkpoints = CheckpointStore(
            self.run_storage.child("checkpoints"),
            workdir / "checkpoints",
            self.ranks.node_rank,
            self.ranks.local_rank,
            nodes=spec.parallel.nodes,
        )
        self.tally = TokenTally()
        self.step = 0
        self.last_save = time.monotonic()
        self.outputs: RankZeroOutputs | None = None
        self.validation: Any = None  # the held-out samples (`micro_batches` builds it), if the run evaluates

    # -- before the first step ------------------------------------------------------------------
    def restore(self) -> int:
        """Load the newest complete checkpoint, if any; the step to go on from."""
        from megatron.core import dist_checkpointing

        start = self.checkpoints.latest_step() or 0
        if start:
            self.clock.resumed_from = start
            with self.clock.restoring():
                local, _ = self.checkpoints.fetch(start)
                sharded = {**self.setup.sharded_state(is_loading=True), "train_state": None}
                state = dist_checkpointing.load(sharded, str(local))
                self.setup.load(state)
                self.setup.scheduler.load_state_dict(state["train_state"]["scheduler"])
            if self.ranks.rank == 0:
                log.info("pretrain: resumed from step %d", start)
        self.step = start
        return start

    def micro_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """This data-parallel rank's micro-batches from the step restored on, timed as data waits
        and counted for the real-token fraction."""
        from megatron.core import parallel_state

        from sobert_trainer.pretrain.dataset import build_datasets, dataset_config, micro_batch_loader

        spec = self.spec
        config = dataset_config(
            self.data_dir,
            self.data_manifest,
            self.seq,
            spec.train.mask_prob,
            spec.train.seed,
            cache=self.workdir / "dataset-index",
        )
        dataset, self.validation = build_datasets(
            config,
            self.iters * self.gbs,
            self.storage.child(paths.dataset_index_prefix(spec.name)),
            local_rank=self.ranks.local_rank,
            validation_samples=spec.train.eval_iters * self.gbs if spec.train.eval_interval else 0,
        )
        if spec.train.eval_interval and self.validation is None and self.ranks.rank == 0:
            log.warning("pretrain: the dataset holds no posts out (data.validation_fraction): no validation loss")
        loader = micro_batch_loader(
            dataset,
            self.step,
            self.iters,
            self.gbs,
            self.mbs,
            parallel_state.get_data_parallel_rank(),
            self.dp,
            workers=spec.train.loader_workers,
            pin_memory=torch.cuda.is_available(),
        )
        return self.clock.waited(self.tally.counted(loader))

    def open_outputs(self) -> None:
        """Rank 0's progress log, TensorBoard scalars and background uploads; the checkpoint
        requests it polls for."""
        from sobert_trainer.pretrain.background import BackgroundIO
        from sobert_trainer.pretrain.progress import ProgressLog
        from sobert_trainer.pretrain.tensorboard_log import TensorBoardLog

        if self.ranks.rank != 0:
            return
        self.outputs = RankZeroOutputs(
            progress=ProgressLog(self.run_storage, "progress.jsonl", self.workdir / "progress.jsonl"),
            scalars=TensorBoardLog(self.run_storage, "tensorboard", self.workdir / "tensorboard"),
            background=BackgroundIO(),
        )
        self.stop.watch_requests(self.storage, paths.checkpoint_request_key(self.spec.name), self.launched)

    # -- each step --------------------------------------------------------------------------------
    def train_step(self, batches: Iterator[dict[str, torch.Tensor]], forward_backward) -> StepOutput:
        """One optimizer step over `accumulation` micro-batches (Megatron-LM's `train_step`):
        zero the grad buffers, run the schedule, step the optimizer and the LR schedule."""
        setup = self.setup
        self.clock.step_began()
        began = time.monotonic()
        setup.model.zero_grad_buffer()
        setup.optimizer.zero_grad()
        try:
            losses = forward_backward(
                forward_step_func=_forward_step,
                data_iterator=batches,  # the schedule takes `accumulation` micro-batches: this step's
                model=[setup.model],
                num_microbatches=self.accumulation,
                seq_length=self.seq,
                micro_batch_size=self.mbs,
                forward_only=False,
            )
        except RuntimeError as exc:
            found = next((m for m in NON_FINITE_GRAD_MESSAGES if m in str(exc)), None)
            if found is None:
                raise
            raise DivergedError(self.step + 1, found) from exc
        updated, grad_norm, _ = setup.optimizer.step()
        setup.after_step(updated)
        setup.scheduler.step(increment=1)
        self.checkpoints.poll()  # publishes an asynchronous save whose writes have finished
        self.step += 1
        seconds = time.monotonic() - began
        self.clock.step_ended(seconds)
        return StepOutput(losses, updated, None if grad_norm is None else float(grad_norm), seconds)

    def evaluation_due(self) -> bool:
        interval = self.spec.train.eval_interval
        return self.validation is not None and interval > 0 and (self.step % interval == 0 or self.step == self.iters)

    def evaluate(self, forward_backward) -> float:
        """The masked-LM loss on the held-out samples (Megatron-LM's `evaluate`): the same
        `eval_iters` global batches every time, forward only, dropout off, each data-parallel rank
        its share of them as in a training step; the mean over every masked token, reduced over
        the data-parallel ranks, so DP=2 gives DP=1's value."""
        from megatron.core import parallel_state

        from sobert_trainer.pretrain.dataset import micro_batches

        dp_rank = parallel_state.get_data_parallel_rank()
        totals = torch.zeros(2, dtype=torch.float64, device=current_device())
        with self.clock.evaluating(), self.setup.evaluating(), torch.no_grad():
            for batch_index in range(self.spec.train.eval_iters):
                outputs = forward_backward(
                    forward_step_func=partial(_forward_step, loss_func=_validation_loss_func),
                    data_iterator=micro_batches(self.validation, batch_index, self.gbs, self.mbs, dp_rank, self.dp),
                    model=[self.setup.model],
                    num_microbatches=self.accumulation,
                    seq_length=self.seq,
                    micro_batch_size=self.mbs,
                    forward_only=True,
                )
                for output in outputs:
                    totals += output["lm loss sums"].double()
            dist.all_reduce(totals, group=parallel_state.get_data_parallel_group())
        loss_sum, tokens = totals.tolist()
        return loss_sum / max(tokens, 1.0)

    def log_due(self, start: int) -> bool:
        step = self.step
        return (
            step % self.spec.train.log_interval == 0 or step == self.iters or step == start + 1 or self.evaluation_due()
        )

    def log_step(self, output: StepOutput, started: float, validation_loss: float | None = None) -> None:
        """The progress record of this step (Megatron-LM's `training_log`). One reduction and one
        host sync per record, on every rank: this step's loss, and the tokens fed since the
        previous record, over the data-parallel ranks. Rank 0 writes it behind the steps."""
        from megatron.core import parallel_state

        loss = torch.stack([item["lm loss"] for item in output.losses]).mean().to(current_device())
        sums = torch.stack([loss.double(), *torch.tensor(self.tally.take(), device=loss.device).double()])
        dist.all_reduce(sums, group=parallel_state.get_data_parallel_group())
        loss_sum, slots, real = sums.tolist()
        if self.outputs is None:
            return
        tokens_per_s = self.gbs * self.seq / output.seconds
        world = dist.get_world_size()
        record = {
            "step": self.step,
            "train_iters": self.iters,
            "consumed_tokens": self.step * self.gbs * self.seq,
            "loss": round(loss_sum / self.dp, 5),
            "lr": self.setup.optimizer.param_groups[0]["lr"],
            "grad_norm": None if output.grad_norm is None else round(output.grad_norm, 5),
            "skipped": not output.updated,
            "step_time_s": round(output.seconds, 4),
            "tokens_per_s": round(tokens_per_s, 1),
            **throughput_fields(tokens_per_s, real / slots, self.flops_per_token, world, self.peak_tflops),
            "wall_time_s": round(time.monotonic() - started, 3),
            "world_size": world,
            **({} if validation_loss is None else {"validation_lm_loss": round(validation_loss, 5)}),
            **self.clock.fields(),
        }
        background = self.outputs.background
        background.submit(self.outputs.progress.append(**record))
        background.submit(self.outputs.scalars.add(record, samples=self.step * self.gbs))
        background.submit(self.stop.poll_storage)
        print(
            f"{STEP_LINE} {self.step}/{self.iters} loss {record['loss']:.4f} "
            f"{record['tokens_per_s']:,.0f} tok/s lr {record['lr']:.2e}"
            + ("" if validation_loss is None else f" validation loss {validation_loss:.4f}"),
            flush=True,
        )

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, asynchronous: bool) -> None:
        """A checkpoint of this step through dist_checkpointing (every rank its shards), published
        to storage by the checkpoint store; asynchronous: written behind the next steps."""
        setup, step = self.setup, self.step
        with self.clock.saving():
            setup.gather_params()
            train_state = {"step": step, "consumed_samples": step * self.gbs, "scheduler": setup.scheduler.state_dict()}
            self.checkpoints.save(
                {**setup.sharded_state(is_loading=False), "train_state": train_state},
                step,
                extra={
                    "dataset_id": self.dataset_id,
                    "run": self.spec.name,
                    "tokens": step * self.gbs * self.seq,
                    "tensor_parallel": self.tp,
                    "world_size": dist.get_world_size(),
                },
                asynchronous=asynchronous,
            )
        self.last_save = time.monotonic()
        if self.ranks.rank == 0:
            log.info("pretrain: checkpoint at step %d", step)

    def timed_save_due(self) -> bool:
        minutes = self.spec.train.checkpoint_interval_minutes
        return minutes is not None and time.monotonic() - self.last_save >= minutes * 60

    # -- the loop -----------------------------------------------------------------------------------
    def train(self) -> int:
        """Steps until the last one or a stop; the process exit code (EXIT_PREEMPTED after the
        checkpoint a SIGTERM asks for)."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        start = self.restore()
        batches = self.micro_batches()
        self.open_outputs()
        forward_backward = get_forward_backward_func()
        started = time.monotonic()
        self.setup.before_first_step()
        while self.step < self.iters:
            output = self.train_step(batches, forward_backward)
            validation_loss = self.evaluate(forward_backward) if self.evaluation_due() else None
            if self.log_due(start):
                self.log_step(output, started, validation_loss)
            if self.ranks.rank == 0 and self.timed_save_due():
                self.stop.request_checkpoint()
            preempted, asked = self.stop.agreed()
            last = self.step == self.iters
            if self.step % self.spec.train.checkpoint_interval == 0 or last or preempted or asked:
                # The save a run stops or ends with is waited for; the others are written behind the steps.
                self.save(asynchronous=self.spec.train.async_save and not preempted and not last)
            if preempted:
                return self.stop_preempted()
        return self.finish()

    def stop_preempted(self) -> int:
        """After the SIGTERM checkpoint: publish what is pending and exit for a restart."""
        self.checkpoints.close()
        if self.outputs:
            self.outputs.background.close()
            print(f"{PREEMPTED_LINE} step {self.step}, exiting", flush=True)
        dist.destroy_process_group()
        return EXIT_PREEMPTED

    def finish(self) -> int:
        """After the last step: the last checkpoint and progress record are published before the
        stage ends."""
        self.checkpoints.close()
        if self.outputs:
            self.outputs.background.close()
            self.outputs.scalars.close()
        dist.barrier()
        dist.destroy_process_group()
        return 0
