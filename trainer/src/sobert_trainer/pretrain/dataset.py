"""Megatron's BERT masked-LM dataset over the published shards, and the per-rank batch order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sobert_trainer.data.tokenizer import MegatronTokenizerAdapter, load_tokenizer

BATCH_KEYS = ("text", "types", "labels", "padding_mask", "loss_mask")


def build_train_dataset(
    dataset_dir: Path, manifest: dict, seq_length: int, num_samples: int, mask_prob: float, seed: int
):
    """`BERTMaskedWordPieceDataset` over every shard, sized for `num_samples` (multi-epoch if needed)."""
    from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    tokenizer = MegatronTokenizerAdapter(load_tokenizer(dataset_dir / "tokenizer.json"), manifest["dataset_id"])
    prefixes = [str(dataset_dir / shard) for shard in manifest["shards"]]
    config = BERTMaskedWordPieceDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend=(prefixes, None),
        split="100,0,0",
        # No shared cache: every rank builds the (deterministic) sample index in memory, so
        # nodes need no shared filesystem.
        path_to_cache=None,
        tokenizer=tokenizer,
        masking_probability=mask_prob,
        short_sequence_probability=0.1,
        masking_max_ngram=3,
        # Full-word masking relies on WordPiece "##" continuations; SentencePiece pieces mark word
        # starts instead, so mask pieces.
        masking_do_full_word=False,
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=False,
    )
    train, _, _ = BlendedMegatronDatasetBuilder(
        BERTMaskedWordPieceDataset, [num_samples, 0, 0], lambda: True, config
    ).build()
    return train, tokenizer


def micro_batches(
    dataset, step: int, global_batch: int, micro_batch: int, dp_rank: int, dp_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """The micro-batches this data-parallel rank trains on at optimizer step `step`.

    Step s consumes samples [s*G, (s+1)*G) of the dataset; rank r takes micro-batch j as the
    slice starting at s*G + (j*dp_size + r)*mbs. Fully determined by the step, so a resumed run
    sees exactly the samples it would have seen.
    """
    per_step = global_batch // (micro_batch * dp_size)
    base = step * global_batch
    for j in range(per_step):
        start = base + (j * dp_size + dp_rank) * micro_batch
        samples = [dataset[i % len(dataset)] for i in range(start, start + micro_batch)]
        yield {key: torch.from_numpy(np.stack([s[key] for s in samples])) for key in BATCH_KEYS}
