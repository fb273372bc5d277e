"""CONVERT: a megatron-core BERT checkpoint (any TP degree) -> Hugging Face `MegatronBertForMaskedLM`.

The checkpoint is loaded into a TP=1 model by `dist_checkpointing` itself, which reshards
whatever TP degree it was saved with; the name mapping below is then a pure function of a
TP=1 state dict. The result loads with `MegatronBertForMaskedLM.from_pretrained`, like the
released SOBert checkpoints (`model_type: megatron-bert`).
"""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path

import torch

from sobert_api import paths
from sobert_api.checkpoints import checkpoint_name, complete_checkpoints
from sobert_api.spec import ModelSpec, RunSpec
from sobert_api.storage import Storage
from sobert_trainer.data.tokenizer import CLS, MASK, PAD, SEP, SPECIAL_TOKENS, UNK

log = logging.getLogger(__name__)


def hf_config(model: ModelSpec, padded_vocab: int):
    from transformers import MegatronBertConfig

    return MegatronBertConfig(
        vocab_size=padded_vocab,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_attention_heads,
        intermediate_size=model.ffn_hidden_size,
        hidden_act="gelu",
        hidden_dropout_prob=model.hidden_dropout,
        attention_probs_dropout_prob=model.attention_dropout,
        max_position_embeddings=model.max_position_embeddings,
        type_vocab_size=max(model.num_tokentypes, 1),
        layer_norm_eps=model.layernorm_epsilon,
        pad_token_id=SPECIAL_TOKENS.index(PAD),
        tie_word_embeddings=True,
        architectures=["MegatronBertForMaskedLM"],
    )


def megatron_to_hf_state(state: dict[str, torch.Tensor], model: ModelSpec) -> dict[str, torch.Tensor]:
    """Rename (and split the fused QKV of) a TP=1 megatron-core BertModel state dict."""
    heads, hidden = model.num_attention_heads, model.hidden_size
    head_dim = hidden // heads
    out = {
        "bert.embeddings.word_embeddings.weight": state["embedding.word_embeddings.weight"],
        "bert.embeddings.position_embeddings.weight": state["embedding.position_embeddings.weight"],
        "bert.encoder.ln.weight": state["encoder.final_layernorm.weight"],
        "bert.encoder.ln.bias": state["encoder.final_layernorm.bias"],
        "cls.predictions.transform.dense.weight": state["lm_head.dense.weight"],
        "cls.predictions.transform.dense.bias": state["lm_head.dense.bias"],
        "cls.predictions.transform.LayerNorm.weight": state["lm_head.layer_norm.weight"],
        "cls.predictions.transform.LayerNorm.bias": state["lm_head.layer_norm.bias"],
        "cls.predictions.bias": state["output_layer.bias"],
        "cls.predictions.decoder.weight": state["embedding.word_embeddings.weight"],
        "cls.predictions.decoder.bias": state["output_layer.bias"],
    }
    if "embedding.tokentype_embeddings.weight" in state:
        out["bert.embeddings.token_type_embeddings.weight"] = state["embedding.tokentype_embeddings.weight"]
    for i in range(model.num_layers):
        src, dst = f"encoder.layers.{i}.", f"bert.encoder.layer.{i}."
        # megatron fuses QKV per head: rows are [head0: q k v, head1: q k v, ...].
        qkv_w = state[src + "self_attention.linear_qkv.weight"].view(heads, 3, head_dim, hidden)
        qkv_b = state[src + "self_attention.linear_qkv.bias"].view(heads, 3, head_dim)
        for j, name in enumerate(("query", "key", "value")):
            out[dst + f"attention.self.{name}.weight"] = qkv_w[:, j].reshape(hidden, hidden).clone()
            out[dst + f"attention.self.{name}.bias"] = qkv_b[:, j].reshape(hidden).clone()
        renames = {
            "input_layernorm": "attention.ln",
            "self_attention.linear_proj": "attention.output.dense",
            "pre_mlp_layernorm": "ln",
            "mlp.linear_fc1": "intermediate.dense",
            "mlp.linear_fc2": "output.dense",
        }
        for megatron_name, hf_name in renames.items():
            for param in ("weight", "bias"):
                out[f"{dst}{hf_name}.{param}"] = state[f"{src}{megatron_name}.{param}"]
    return {k: v.detach().float().contiguous() for k, v in out.items()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_megatron_model(checkpoint_dir: Path, model: ModelSpec, saved_tensor_parallel: int):
    """A TP=1 megatron-core BertModel holding the checkpoint's weights (resharded on load)."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing, parallel_state, tensor_parallel

    from sobert_trainer.pretrain import cpu_compat
    from sobert_trainer.pretrain.model import build_bert_model, transformer_config

    if not torch.cuda.is_available():
        cpu_compat.install()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=1)
        tensor_parallel.model_parallel_cuda_manual_seed(0)
    config = transformer_config(model, tensor_parallel=1, bf16=False)
    # Keep the saved run's padded vocabulary so shapes match whatever TP it was saved with.
    bert = build_bert_model(model, config, padded_vocab=model.padded_vocab_size(saved_tensor_parallel))
    state = dist_checkpointing.load({"model": bert.sharded_state_dict()}, str(checkpoint_dir))
    bert.load_state_dict(state["model"])
    return bert.eval()


def save_hf(bert, model: ModelSpec, padded_vocab: int, tokenizer_file: Path, out_dir: Path) -> None:
    from transformers import MegatronBertForMaskedLM, PreTrainedTokenizerFast

    state = megatron_to_hf_state({k: v for k, v in bert.state_dict().items() if not k.endswith("_extra_state")}, model)
    hf = MegatronBertForMaskedLM(hf_config(model, padded_vocab))
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "bert.embeddings.position_ids"]
    if missing or unexpected:
        raise RuntimeError(f"conversion mapping incomplete: missing {missing}, unexpected {unexpected}")
    hf.save_pretrained(out_dir)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD, UNK, CLS, SEP, MASK)],
        model_max_length=model.max_position_embeddings,
    )
    tokenizer.save_pretrained(out_dir)


def convert_run(spec: RunSpec, storage: Storage, dataset_id: str, step: int | None = None) -> dict:
    """Convert the run's newest (or given) checkpoint; publish under runs/<run>/hf/."""
    checkpoints = storage.child(paths.checkpoints_prefix(spec.name))
    steps = complete_checkpoints(checkpoints)
    if not steps:
        raise FileNotFoundError(f"{checkpoints.uri()}: no complete checkpoint to convert")
    step = step if step is not None else steps[-1]
    if step not in steps:
        raise FileNotFoundError(f"{checkpoints.uri(checkpoint_name(step))}: no complete checkpoint at step {step}")
    manifest = checkpoints.read_manifest(checkpoint_name(step)) or {}
    saved_tp = int(manifest.get("tensor_parallel", spec.parallel.tensor_parallel))
    padded_vocab = spec.model.padded_vocab_size(saved_tp)
    with tempfile.TemporaryDirectory(prefix="sobert-convert-") as tmp:
        local_ckpt, out_dir = Path(tmp, "ckpt"), Path(tmp, "hf")
        checkpoints.fetch_tree(checkpoint_name(step), local_ckpt)
        tokenizer_file = Path(tmp, "tokenizer.json")
        storage.download_file(paths.dataset_prefix(dataset_id) + "/tokenizer.json", tokenizer_file)
        bert = load_megatron_model(local_ckpt, spec.model, saved_tp)
        save_hf(bert, spec.model, padded_vocab, tokenizer_file, out_dir)
        published = storage.publish_tree(
            out_dir,
            paths.hf_prefix(spec.name),
            extra={"run": spec.name, "step": step, "dataset_id": dataset_id, "saved_tensor_parallel": saved_tp},
        )
    log.info("convert: step %d -> %s", step, storage.uri(paths.hf_prefix(spec.name)))
    return published
