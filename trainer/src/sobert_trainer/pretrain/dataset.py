"""Megatron's BERT masked-LM dataset over the published shards, and the per-rank batch order."""

from __future__ import annotations

import dataclasses
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from sobert_api.storage import Storage
from sobert_trainer.data.tokenizer import MegatronTokenizerAdapter, load_tokenizer

BATCH_KEYS = ("text", "types", "labels", "padding_mask", "loss_mask")
PREFETCH_BATCHES = 4  # per loader worker


def dataset_config(
    dataset_dir: Path,
    manifest: dict,
    seq_length: int,
    mask_prob: float,
    seed: int,
    cache: Path,
):
    """Megatron's masked-LM dataset settings: one blend per split (Megatron-LM's
    `--train-data-path` / `--valid-data-path`), the published training shards and the held-out
    ones (the manifest's `validation_shards`; none before dataset format 5); indices cached
    under `cache`."""
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDatasetConfig

    held_out = manifest.get("validation_shards") or []
    tokenizer = MegatronTokenizerAdapter(load_tokenizer(dataset_dir / "tokenizer.json"), manifest["dataset_id"])
    return BERTMaskedWordPieceDatasetConfig(
        random_seed=seed,
        # One more than the model's: megatron keeps room for a sentence pair's second [SEP], so a
        # one-segment sample of `seq_length` would end in a pad (`FullLengthSamples`).
        sequence_length=seq_length + 1,
        blend_per_split=[
            ([str(dataset_dir / shard) for shard in manifest["shards"]], None),
            ([str(dataset_dir / shard) for shard in held_out], None) if held_out else None,
            None,
        ],
        path_to_cache=str(cache),
        tokenizer=tokenizer,
        masking_probability=mask_prob,
        # Every sample filled to the sequence length (RoBERTa dropped BERT's 10% short samples):
        # short ones are padding the GPU computes on.
        short_sequence_probability=0.0,
        masking_max_ngram=3,
        # Full-word masking relies on WordPiece "##" continuations; SentencePiece pieces mark word
        # starts instead, so mask pieces.
        masking_do_full_word=False,
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=False,
    )


class FullLengthSamples(torch.utils.data.Dataset):
    """Megatron's samples cut to the model's sequence length, so that a sample is real tokens to
    its end. `BERTMaskedWordPieceDataset` (core_v0.16.1, `bert_dataset.py`) fills a sample with at
    most `sequence_length - 3` tokens plus [CLS] and [SEP], keeping room for a sentence pair's
    second [SEP]; with one segment every sample ended in a pad, so every micro-batch had padding
    and needed an attention mask. Built one position longer (`dataset_config`), the samples end
    at the model's length and the last position, always a pad, is dropped here: only the last
    sample of each Megatron document (~1M tokens) is short."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        if sample["padding_mask"][-1]:
            raise ValueError(f"sample {index} is real to its last position: built for another sequence length")
        return {key: value[:-1] if isinstance(value, np.ndarray) else value for key, value in sample.items()}


def build_dataset(config, num_samples: int, on_this_rank, dataset_class=None):
    """Megatron's BERT masked-LM training dataset of `num_samples` (`build_splits`)."""
    return build_splits(config, num_samples, 0, on_this_rank, dataset_class)[0]


def build_splits(config, train_samples: int, validation_samples: int, on_this_rank, dataset_class=None):
    """Megatron's BERT masked-LM datasets (`masking.MegatronBertSamples`: megatron's samples,
    vectorised; `dataset_class` another `BERTMaskedWordPieceDataset`): the training split of
    `train_samples` and the held-out one of up to `validation_samples` (None when none is asked
    for or the dataset holds none out); each sample index is built where
    `on_this_rank()` is true and read from `config.path_to_cache` elsewhere."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    from sobert_trainer.pretrain.masking import MegatronBertSamples

    if not validation_samples or not config.blend_per_split[1]:
        # Nothing held out is built: megatron's masked dataset needs a sample count (its
        # `_build_sample_index` hands `build_mapping` None otherwise). The blends are not part of
        # the cache key, so the training split's index is the same either way.
        config = dataclasses.replace(config, blend_per_split=[config.blend_per_split[0], None, None])
    train, validation, _ = BlendedMegatronDatasetBuilder(
        dataset_class or MegatronBertSamples, [train_samples, validation_samples or None, None], on_this_rank, config
    ).build()
    return FullLengthSamples(train), None if validation is None else FullLengthSamples(validation)


def build_datasets(config, num_samples: int, index_store: Storage, local_rank: int, validation_samples: int = 0):
    """The training and validation datasets (`build_splits`) on every rank, the training one sized
    for `num_samples` (multi-epoch if needed).

    Megatron builds the sample index on global rank 0 only, writes it to `path_to_cache` and has
    every other rank read it from there, which needs a filesystem shared by all nodes. sobert's
    scratch is node-local, so the index goes through the run's storage instead: rank 0 builds
    it and publishes it (`index_store`, manifest last), the first rank of every other node fetches
    it, then every rank opens the dataset from its node's copy. A restarted job fetches the
    published index instead of rebuilding it. Every node must use the same workdir path (the
    dataset path is part of megatron's cache key); the rendered pods all use /scratch.
    """
    cache = Path(config.path_to_cache)
    published = [index_store.read_manifest("") is not None if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(published, src=0)
    if not published[0]:
        build_splits(config, num_samples, validation_samples, on_this_rank=lambda: dist.get_rank() == 0)
        if dist.get_rank() == 0:
            index_store.publish_tree(cache, "")
        dist.barrier()
    if local_rank == 0 and (dist.get_rank() != 0 or published[0]):
        shutil.rmtree(cache, ignore_errors=True)
        index_store.fetch_tree("", cache)
    dist.barrier()
    return build_splits(config, num_samples, validation_samples, on_this_rank=lambda: True)


def micro_batch_indices(
    step: int, global_batch: int, micro_batch: int, dp_rank: int, dp_size: int, length: int
) -> Iterator[list[int]]:
    """Sample indices of the micro-batches this data-parallel rank trains on at optimizer step `step`.

    Step s consumes samples [s*G, (s+1)*G) of the dataset; rank r takes micro-batch j as the
    slice starting at s*G + (j*dp_size + r)*mbs. Fully determined by the step, so a resumed run
    sees exactly the samples it would have seen.
    """
    per_step = global_batch // (micro_batch * dp_size)
    base = step * global_batch
    for j in range(per_step):
        start = base + (j * dp_size + dp_rank) * micro_batch
        yield [i % length for i in range(start, start + micro_batch)]


def collate(samples: list[dict]) -> dict[str, Any]:
    """The samples stacked per key; the masked positions the LM head runs on
    (`bert.head_positions`) and whether any token is padding (`padding_free`, a bool), both found
    here on the host so that the model's gather and its choice of attention need no device sync."""
    from sobert_trainer.pretrain.bert import head_positions

    batch: dict[str, Any] = {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in BATCH_KEYS}
    batch["head_positions"] = head_positions(batch["loss_mask"])
    batch["padding_free"] = bool(batch["padding_mask"].all())
    return batch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated micro-batch's tensors on `device` (its host-side flags stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def micro_batches(
    dataset, step: int, global_batch: int, micro_batch: int, dp_rank: int, dp_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """The micro-batches of step `step`, built in this process (the reference order)."""
    for indices in micro_batch_indices(step, global_batch, micro_batch, dp_rank, dp_size, len(dataset)):
        yield collate([dataset[i] for i in indices])


class StepOrder(torch.utils.data.Sampler):
    """`micro_batch_indices` for steps [start, stop), as a DataLoader batch sampler."""

    def __init__(
        self, length: int, start: int, stop: int, global_batch: int, micro_batch: int, dp_rank: int, dp_size: int
    ):
        self.length, self.start, self.stop = length, start, stop
        self.shape = (global_batch, micro_batch, dp_rank, dp_size)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            yield from micro_batch_indices(step, *self.shape, self.length)

    def __len__(self) -> int:
        global_batch, micro_batch, _, dp_size = self.shape
        return (self.stop - self.start) * (global_batch // (micro_batch * dp_size))


def micro_batch_loader(
    dataset,
    start: int,
    stop: int,
    global_batch: int,
    micro_batch: int,
    dp_rank: int,
    dp_size: int,
    workers: int,
    pin_memory: bool,
) -> Iterator[dict[str, torch.Tensor]]:
    """Every micro-batch of steps [start, stop) in `micro_batches`' order, built ahead of the step
    by `workers` processes (off the training process's critical path), each keeping
    `PREFETCH_BATCHES` in flight, in pinned memory for an asynchronous host-to-device copy on GPU.
    `workers` 0 builds them in this process."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=StepOrder(len(dataset), start, stop, global_batch, micro_batch, dp_rank, dp_size),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH_BATCHES if workers else None,
        worker_init_fn=_ignore_sigterm,
    )
    return iter(loader)


def _ignore_sigterm(_worker_id: int) -> None:
    """torchrun signals each worker's whole process group, loader workers included; they must live
    on while the rank finishes its step and checkpoints (SIGKILL at the grace period's end, or the
    rank's exit, ends them)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
