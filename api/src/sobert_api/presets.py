"""Named recipes: the SOBert releases (`base`, `large`) and a CPU smoke preset (`tiny`).

A preset is plain data merged under the user's overrides and then validated as a RunSpec,
so a preset can never produce a spec the validator would reject silently.
"""

from __future__ import annotations

from typing import Any

# 0.5M-token batches of 2,048-token sequences over 27B tokens, as in the SOBert paper.
_PAPER_TRAIN = {"global_batch_size": 256, "train_tokens": 27_000_000_000, "log_interval": 10}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "model": {
            "num_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "ffn_hidden_size": 256,
            "seq_length": 128,
            "max_position_embeddings": 128,
            "vocab_size": 4000,
        },
        "train": {
            "global_batch_size": 16,
            "micro_batch_size": 4,
            "train_tokens": 40 * 16 * 128,
            "lr": 5e-4,
            "min_lr": 5e-5,
            "warmup_fraction": 0.1,
            "checkpoint_interval": 20,
            "log_interval": 5,
            "eval_interval": 10,
            "eval_iters": 2,
            "loader_workers": 1,  # tiny samples are cheap to mask; CI machines have 2 cores
        },
        "data": {"tokenizer_train_docs": 20_000, "validation_fraction": 0.05},
    },
    "base": {
        "model": {
            "num_layers": 12,
            "hidden_size": 768,
            "num_attention_heads": 12,
            "ffn_hidden_size": 3072,
            "seq_length": 2048,
            "max_position_embeddings": 2048,
            "vocab_size": 50_000,
        },
        "train": {**_PAPER_TRAIN, "micro_batch_size": 8, "lr": 2e-4, "min_lr": 2e-5},
        "finetune": {"use_gpu": True},
    },
    "large": {
        "model": {
            "num_layers": 24,
            "hidden_size": 1536,
            "num_attention_heads": 16,
            "ffn_hidden_size": 6144,
            "seq_length": 2048,
            "max_position_embeddings": 2048,
            "vocab_size": 50_000,
        },
        "train": {**_PAPER_TRAIN, "micro_batch_size": 4, "lr": 1e-4, "min_lr": 1e-5},
        "finetune": {"use_gpu": True},
    },
}


# Finetuning recipes per preset, applied to each task a run lists (the task's own fields win).
# base/large follow the SOBert paper's setup of using the model's whole 2,048-token context;
# tiny is capped so all four tasks finish in minutes on a laptop CPU.
_PAPER_FINETUNE = {"epochs": 3, "learning_rate": 2e-5, "batch_size": 16, "warmup_fraction": 0.1}
TASK_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "epochs": 2,
        "learning_rate": 5e-4,
        "batch_size": 8,
        "max_length": 128,
        "max_train_examples": 96,
        "max_eval_examples": 48,
        "validation_fraction": 0.25,  # small task files still get a validation set worth scoring
    },
    "base": {**_PAPER_FINETUNE, "max_length": 2048},
    "large": {**_PAPER_FINETUNE, "max_length": 2048, "learning_rate": 1e-5},
}


def task_document(preset: str | None, **fields: Any) -> dict[str, Any]:
    """A finetune task entry: the preset's recipe with the given fields (None values dropped) on top."""
    recipe = dict(TASK_RECIPES.get(preset or "", {}))
    return deep_merge(recipe, {k: v for k, v in fields.items() if v is not None})


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in; nested dicts merge, everything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def preset_names() -> list[str]:
    return sorted(PRESETS)


def preset_document(preset: str) -> dict[str, Any]:
    """The raw preset data (a copy), to be merged with user values."""
    try:
        return deep_merge({"preset": preset}, PRESETS[preset])
    except KeyError:
        raise KeyError(f"unknown preset {preset!r}; expected one of {', '.join(preset_names())}") from None
