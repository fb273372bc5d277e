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
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from sobert_api import paths
from sobert_api.flops import pretraining_flops_per_token
from sobert_api.spec import Precision, RunSpec
from sobert_trainer.pretrain.distributed import RankInfo, current_device, init_distributed
from sobert_trainer.pretrain.stop import StopFlag
from sobert_trainer.stage_cli import EXIT_PREEMPTED
from sobert_trainer.storage import Storage

log = logging.getLogger(__name__)


def use_bf16(spec: RunSpec) -> bool:
    if spec.train.precision == Precision.auto:
        return torch.cuda.is_available()
    return spec.train.precision == Precision.bf16


def _fetch_dataset(storage: Storage, dataset_id: str, workdir: Path, ranks: RankInfo) -> tuple[Path, dict]:
    local = workdir / "data" / dataset_id
    prefix = paths.dataset_prefix(dataset_id)
    if ranks.local_rank == 0:
        manifest = storage.read_manifest(prefix)
        if manifest is None:
            raise FileNotFoundError(f"{storage.uri(prefix)}: dataset not published (run `sobertctl data prepare`)")
        marker = local / ".fetched"
        if not marker.exists():
            storage.fetch_tree(prefix, local)
            marker.write_text(manifest["dataset_id"])
    dist.barrier()
    return local, storage.read_manifest(prefix)  # type: ignore[return-value]


def _loss_func(loss_mask: torch.Tensor, lm_loss: torch.Tensor):
    mask = loss_mask.float()
    loss = torch.sum(lm_loss.float() * mask) / mask.sum().clamp(min=1.0)
    # The schedule divides `loss` in place by the micro-batch count: log a copy.
    return loss, {"lm loss": loss.detach().clone()}


def _forward_step(data_iterator, model):
    from sobert_trainer.pretrain.bert import per_token_loss

    batch = {k: v.to(current_device(), non_blocking=True) for k, v in next(data_iterator).items()}
    return per_token_loss(model, batch), partial(_loss_func, batch["loss_mask"])


def train(spec: RunSpec, dataset_id: str, workdir: Path, peak_tflops: float | None = None) -> int:
    """Run (or resume) pretraining; returns the process exit code. `peak_tflops`: each device's
    dense BF16 peak, for the MFU in progress records (None: not reported)."""
    from megatron.core import dist_checkpointing, parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from sobert_trainer.pretrain.background import BackgroundIO
    from sobert_trainer.pretrain.checkpoint import CheckpointStore, start_writer_helpers
    from sobert_trainer.pretrain.dataset import build_train_dataset, dataset_config, micro_batch_loader
    from sobert_trainer.pretrain.goodput_clock import GoodputClock, process_started_at
    from sobert_trainer.pretrain.progress import ProgressLog
    from sobert_trainer.pretrain.setup import setup_model_and_optimizer
    from sobert_trainer.pretrain.tensorboard_log import TensorBoardLog
    from sobert_trainer.pretrain.throughput import TokenTally, throughput_fields

    launched = time.time()  # checkpoint requests older than this were satisfied by an earlier process
    clock = GoodputClock(started_at=process_started_at())
    ranks = RankInfo.from_env()
    stop = StopFlag()
    start_writer_helpers()  # before any other thread: see its docstring
    init_distributed(spec, ranks)
    stop.join()
    bf16 = use_bf16(spec)
    tp, dp = spec.parallel.tensor_parallel, parallel_state.get_data_parallel_world_size()
    if tp * dp != dist.get_world_size():
        raise RuntimeError(
            f"torchrun world size {dist.get_world_size()} does not match the spec's TP x DP = {tp} x {dp}"
        )
    storage = Storage.open(spec.storage.uri, spec.storage.endpoint_url)
    run_storage = storage.child(paths.pretrain_prefix(spec.name))
    iters, seq, gbs, mbs = (
        spec.train_iters,
        spec.model.seq_length,
        spec.train.global_batch_size,
        spec.train.micro_batch_size,
    )

    data_dir, data_manifest = _fetch_dataset(storage, dataset_id, workdir, ranks)
    setup = setup_model_and_optimizer(spec, bf16, current_device())
    model, optimizer, scheduler = setup.model, setup.optimizer, setup.scheduler
    checkpoints = CheckpointStore(
        run_storage.child("checkpoints"),
        workdir / "checkpoints",
        ranks.node_rank,
        ranks.local_rank,
        nodes=spec.parallel.nodes,
    )
    start = checkpoints.latest_step() or 0
    if start:
        clock.resumed_from = start
        with clock.restoring():
            local, _ = checkpoints.fetch(start)
            state = dist_checkpointing.load({**setup.sharded_state(is_loading=True), "train_state": None}, str(local))
            setup.load(state)
            scheduler.load_state_dict(state["train_state"]["scheduler"])
        if ranks.rank == 0:
            log.info("pretrain: resumed from step %d", start)

    config = dataset_config(
        data_dir, data_manifest, seq, spec.train.mask_prob, spec.train.seed, cache=workdir / "dataset-index"
    )
    dataset = build_train_dataset(
        config, iters * gbs, storage.child(paths.dataset_index_prefix(spec.name)), local_rank=ranks.local_rank
    )
    progress = ProgressLog(run_storage, "progress.jsonl", workdir / "progress.jsonl") if ranks.rank == 0 else None
    scalars = TensorBoardLog(run_storage, "tensorboard", workdir / "tensorboard") if ranks.rank == 0 else None
    background = BackgroundIO() if ranks.rank == 0 else None
    if ranks.rank == 0:
        stop.watch_requests(storage, paths.checkpoint_request_key(spec.name), launched)
    forward_backward = get_forward_backward_func()
    dp_rank = parallel_state.get_data_parallel_rank()
    accumulation = gbs // (mbs * dp)
    flops_per_token = pretraining_flops_per_token(spec.model, spec.train.mask_prob)
    tally = TokenTally()
    batches = clock.waited(
        tally.counted(
            micro_batch_loader(
                dataset,
                start,
                iters,
                gbs,
                mbs,
                dp_rank,
                dp,
                workers=spec.train.loader_workers,
                pin_memory=torch.cuda.is_available(),
            )
        )
    )
    started = time.monotonic()

    def save(step: int, asynchronous: bool) -> None:
        setup.gather_params()
        train_state = {"step": step, "consumed_samples": step * gbs, "scheduler": scheduler.state_dict()}
        sharded = {**setup.sharded_state(is_loading=False), "train_state": train_state}
        checkpoints.save(
            sharded,
            step,
            extra={
                "dataset_id": dataset_id,
                "run": spec.name,
                "tokens": step * gbs * seq,
                "tensor_parallel": tp,
                "world_size": dist.get_world_size(),
            },
            asynchronous=asynchronous,
        )

    last_save = time.monotonic()
    save_minutes = spec.train.checkpoint_interval_minutes

    def timed_save_due() -> bool:
        return save_minutes is not None and time.monotonic() - last_save >= save_minutes * 60

    step = start
    setup.before_first_step()
    while step < iters:
        clock.step_began()
        step_started = time.monotonic()
        model.zero_grad_buffer()
        optimizer.zero_grad()
        losses = forward_backward(
            forward_step_func=_forward_step,
            data_iterator=batches,  # the schedule takes `accumulation` micro-batches: this step's
            model=[model],
            num_microbatches=accumulation,
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=False,
        )
        updated, grad_norm, _ = optimizer.step()
        setup.after_step(updated)
        scheduler.step(increment=1)
        checkpoints.poll()  # publishes an asynchronous save whose writes have finished
        step += 1
        step_time = time.monotonic() - step_started
        clock.step_ended(step_time)
        if step % spec.train.log_interval == 0 or step == iters or step == start + 1:
            # One reduction and one host sync per record: this step's loss, and the tokens fed
            # since the previous record, over the data-parallel ranks.
            loss = torch.stack([item["lm loss"] for item in losses]).mean().to(current_device())
            sums = torch.stack([loss.double(), *torch.tensor(tally.take(), device=loss.device).double()])
            dist.all_reduce(sums, group=parallel_state.get_data_parallel_group())
            loss_sum, slots, real = sums.tolist()
            record = {
                "step": step,
                "train_iters": iters,
                "consumed_tokens": step * gbs * seq,
                "loss": round(loss_sum / dp, 5),
                "lr": optimizer.param_groups[0]["lr"],
                "grad_norm": None if grad_norm is None else round(float(grad_norm), 5),
                "skipped": not updated,
                "step_time_s": round(step_time, 4),
                "tokens_per_s": round(gbs * seq / step_time, 1),
                **throughput_fields(
                    gbs * seq / step_time, real / slots, flops_per_token, dist.get_world_size(), peak_tflops
                ),
                "wall_time_s": round(time.monotonic() - started, 3),
                "world_size": dist.get_world_size(),
                **clock.fields(),
            }
            if progress and scalars and background:
                background.submit(progress.append(**record))
                background.submit(scalars.add(record, samples=step * gbs))
                background.submit(stop.poll_storage)
                print(
                    f"pretrain step {step}/{iters} loss {record['loss']:.4f} "
                    f"{record['tokens_per_s']:,.0f} tok/s lr {record['lr']:.2e}",
                    flush=True,
                )
        if ranks.rank == 0 and timed_save_due():
            stop.request_checkpoint()
        preempted, asked = stop.agreed()
        if step % spec.train.checkpoint_interval == 0 or step == iters or preempted or asked:
            # The save a run stops or ends with is waited for; the others are written behind the steps.
            with clock.saving():
                save(step, asynchronous=spec.train.async_save and not preempted and step < iters)
            last_save = time.monotonic()
            if ranks.rank == 0:
                log.info("pretrain: checkpoint at step %d", step)
        if preempted:
            checkpoints.close()
            if background:
                background.close()
                print(f"pretrain: SIGTERM received; checkpointed step {step}, exiting", flush=True)
            dist.destroy_process_group()
            return EXIT_PREEMPTED
    checkpoints.close()
    if background and scalars:
        background.close()  # the last progress record is published before the stage ends
        scalars.close()
    dist.barrier()
    dist.destroy_process_group()
    return 0
