"""Megatron's BERT masked-LM samples, the same ones, built with numpy instead of per-token Python.

`BERTMaskedWordPieceDataset.__getitem__` (megatron-core core_v0.16.1,
`datasets/bert_dataset.py`) and `MaskedWordPieceDataset._create_masked_lm_predictions`
(`datasets/masked_dataset.py`) take ~55 ms per 2,048-token sample on one core, for three reasons:

- every sample lists every candidate's 1..3-grams as nested Python lists (~20 ms);
- the masking loop never stops early: it stops once the masked count reaches `n_maskings`, a float
  (0.15 x 2,045 = 306.75) the integer count never reaches, so it visits all ~2,000 candidates with
  a `RandomState.choice` call each (~30 ms);
- trimming the last sentence deletes one token at a time from a Python list.

`MegatronBertSamples` makes the same samples, array for array (`test_masking.py` compares every
sample of the real data with megatron-core's own), by consuming the sample's `RandomState` in the
same order:

- the trim draws its `excess` coin flips in one `random_sample(excess)` (the same doubles as
  `excess` calls of `random()`);
- the candidate shuffle runs on an index array (`RandomState.shuffle` draws the same intervals for
  a list and a 1-d array);
- each visited candidate's n is one `random_sample()` searched in the same CDF `choice` builds,
  and masked tokens go through megatron's own `_get_token_mask`.

The loop stops once no further candidate could be masked (the count is within one of the budget).
The draws megatron makes after that point change nothing: the random state is discarded with the
sample.

Only the configuration sobert trains with is built here (`dataset.dataset_config`: no
next-sentence head, piece-level masking, n-grams up to 3 with P(n) proportional to 1/n, no
permutation); any other configuration is refused at construction.
"""

from __future__ import annotations

import numpy as np
from megatron.core.datasets.bert_dataset import BERTMaskedWordPieceDataset


class MegatronBertSamples(BERTMaskedWordPieceDataset):
    """`BERTMaskedWordPieceDataset` with a vectorised `__getitem__` giving identical samples."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        unsupported = {
            "classification_head": config.classification_head,
            "masking_do_full_word": config.masking_do_full_word,
            "masking_do_permutation": config.masking_do_permutation,
            "masking_use_longer_ngrams": config.masking_use_longer_ngrams,
            "masking_use_geometric_distribution": config.masking_use_geometric_distribution,
        }
        enabled = sorted(name for name, value in unsupported.items() if value)
        if enabled:
            raise ValueError(f"MegatronBertSamples builds no samples with {', '.join(enabled)} (the config enables it)")
        # `RandomState.choice(ngram_nvals, p=p)`'s CDF, computed as numpy's legacy `choice` does.
        nvals = np.arange(config.masking_max_ngram, dtype=np.int64) + 1
        probs = 1.0 / nvals
        probs = probs / probs.sum(keepdims=True)
        probs = probs / probs.sum(keepdims=True)
        cdf = probs.cumsum()
        self._ngram_cdf = cdf / cdf[-1]

    def __getitem__(self, idx: int) -> dict:
        config, tokenizer = self.config, self.config.tokenizer
        idx_beg, idx_end, target_length = self.sample_index[idx]
        random_state = np.random.RandomState(seed=(config.random_seed + idx) % 2**32)
        assert target_length <= config.sequence_length

        body = np.concatenate([self.dataset[i] for i in range(idx_beg, idx_end)]).astype(np.int64)
        excess = len(body) - int(target_length)
        truncated = excess > 0
        if truncated:
            # megatron: one `random() < 0.5` per excess token, deleting the first token or the last.
            from_front = int(np.count_nonzero(random_state.random_sample(excess) < 0.5))
            body = body[from_front : len(body) - (excess - from_front)]
        tokens = np.concatenate(([tokenizer.cls], body, [tokenizer.sep])).astype(np.int64)

        masked_tokens, positions = self._mask(tokens, int(target_length), random_state)

        length_pads = config.sequence_length - len(tokens)
        pad = self._pad_token_id
        text = np.pad(masked_tokens, (0, length_pads), constant_values=pad)
        assignments = np.pad(np.zeros(len(tokens), dtype=np.int64), (0, length_pads), constant_values=pad)
        padding_mask = np.ones(config.sequence_length, dtype=np.int64)
        padding_mask[text == pad] = pad
        labels = np.full(config.sequence_length, -1, dtype=np.int64)
        labels[positions] = tokens[positions]
        loss_mask = np.zeros(config.sequence_length, dtype=np.int64)
        loss_mask[positions] = 1
        text[text == pad] = 0
        labels[labels == pad] = 0
        return {
            "text": text,
            "types": assignments,
            "labels": labels,
            "is_random": 0,
            "padding_mask": padding_mask,
            "loss_mask": loss_mask,
            "truncated": int(truncated),
        }

    def _mask(self, tokens: np.ndarray, target_length: int, random_state: np.random.RandomState):
        """megatron's `_create_masked_lm_predictions` for piece-level n-gram masking: the masked
        sequence and the masked positions."""
        tokenizer = self.config.tokenizer
        candidates = np.flatnonzero((tokens != tokenizer.cls) & (tokens != tokenizer.sep)).tolist()
        budget = min(
            self.config.masking_probability * target_length,
            max(1, round(len(tokens) * self.config.masking_probability)),
        )
        order = np.arange(len(candidates))
        random_state.shuffle(order)

        masked_tokens = tokens.copy()
        is_masked = bytearray(len(tokens))
        positions: list[int] = []
        cdf = self._ngram_cdf
        for start in order.tolist():
            if len(positions) + 1 > budget:  # nothing more fits (megatron loops on, changing nothing)
                break
            n = cdf.searchsorted(random_state.random_sample(), side="right").item() + 1
            while True:
                span = candidates[start : start + n]
                n -= 1
                if budget >= len(positions) + len(span):
                    break
                if n == 0:
                    span = []
                    break
            if not span or any(is_masked[index] for index in span):
                continue
            for index in span:
                is_masked[index] = 1
                replacement = self._get_token_mask(random_state)
                if replacement is not None:
                    masked_tokens[index] = replacement
                positions.append(index)
        return masked_tokens, np.array(positions, dtype=np.int64)
