"""Which kernel torch's SDPA runs for sobert's attention on this GPU, and at what speed:
`python sdpa_probe.py OUT_JSON` (no project imports).

sobert's `SdpaDotProductAttention` (trainer/src/sobert_trainer/pretrain/attention.py) calls
`F.scaled_dot_product_attention` on q, k, v permuted from [s, b, heads, head dim] to
[b, heads, s, head dim] (not contiguous), with dropout 0.1 in training. A micro-batch without
padding (most of them: samples are filled to the sequence length, `dataset.FullLengthSamples`)
gets no mask, so SDPA may pick its flash kernel; one with padding gets an additive bf16
key-padding bias [b, 1, 1, s], which holds it to the memory-efficient or cuDNN kernel. This times
both calls (forward + backward) against the variants that could replace them, at the base and
large presets' micro-batch shapes, and names the CUDA kernels each ran; then dense bf16 GEMMs at
the layers' shapes, the ceiling of the linear layers.

TFLOP/s use the count sobert's MFU uses for attention: 4·b·heads·s²·head dim forward, x3 for
forward + backward (the recomputation inside flash-style backward kernels is not counted).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {"base": (8, 12, 2048, 64), "large": (4, 16, 2048, 96)}  # micro-batch, heads, seq, head dim
MASKED_SCORE = -10000.0  # attention.MASKED_SCORE
DROPOUT = 0.1
# (name, q/k/v permuted as sobert's, key-padding bias, dropout, forced backend or None)
VARIANTS = (
    ("sobert, micro-batch without padding: permuted, no mask, dropout", True, False, DROPOUT, None),
    ("sobert, micro-batch with padding: permuted, bias, dropout", True, True, DROPOUT, None),
    ("permuted, no mask, no dropout", True, False, 0.0, None),
    ("contiguous, no mask, dropout", False, False, DROPOUT, None),
    ("flash forced: permuted, no mask, dropout", True, False, DROPOUT, SDPBackend.FLASH_ATTENTION),
    ("cuDNN forced: contiguous, no mask, dropout", False, False, DROPOUT, SDPBackend.CUDNN_ATTENTION),
    ("cuDNN forced: contiguous, bias, dropout", False, True, DROPOUT, SDPBackend.CUDNN_ATTENTION),
    ("efficient forced: permuted, bias, dropout", True, True, DROPOUT, SDPBackend.EFFICIENT_ATTENTION),
)
GEMMS = {  # name: (m, k, n) with m = micro-batch x seq tokens
    "base qkv 16384 x 768 x 2304": (16384, 768, 2304),
    "base fc1 16384 x 768 x 3072": (16384, 768, 3072),
    "large fc1 8192 x 1536 x 6144": (8192, 1536, 6144),
    "large fc2 8192 x 6144 x 1536": (8192, 6144, 1536),
}
ATTENTION_KERNEL_WORDS = ("fmha", "flash", "attention", "cudnn", "sdpa", "attn")


def qkv(b: int, h: int, s: int, d: int, permuted: bool) -> list[torch.Tensor]:
    shape = (s, b, h, d) if permuted else (b, h, s, d)
    tensors = [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    if permuted:  # the layout sobert hands to SDPA: [s, b, heads, head dim] viewed as [b, heads, s, head dim]
        tensors = [t.permute(1, 2, 0, 3) for t in tensors]
    return [t.requires_grad_(True) for t in tensors]


def padding_bias(b: int, s: int) -> torch.Tensor:
    """A micro-batch whose last sample ends in padding (a Megatron document's last sample)."""
    mask = torch.zeros(b, 1, 1, s, dtype=torch.bool, device="cuda")
    mask[-1, ..., s // 2 :] = True
    return torch.zeros(mask.shape, dtype=torch.bfloat16, device="cuda").masked_fill_(mask, MASKED_SCORE)


def attention_step(q, k, v, bias, dropout: float, backend) -> None:
    context = sdpa_kernel([backend]) if backend is not None else contextlib.nullcontext()
    with context:
        out = F.scaled_dot_product_attention(q, k, v, bias, dropout, scale=q.shape[-1] ** -0.5)
    out.backward(torch.ones_like(out))


def milliseconds(fn, iters: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def kernels(fn) -> list[str]:
    """The attention kernels one call ran (every CUDA kernel if none looks like one), shortest names first."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA"}, key=len)
    attention = [n for n in names if any(word in n.lower() for word in ATTENTION_KERNEL_WORDS)]
    return (attention or names)[:3]


def time_variant(b: int, h: int, s: int, d: int, variant: tuple) -> dict:
    """One of `VARIANTS` at one shape: milliseconds, TFLOP/s and kernels, or why it did not run."""
    name, permuted, masked, dropout, backend = variant
    q, k, v = qkv(b, h, s, d, permuted)
    bias = padding_bias(b, s) if masked else None

    def step() -> None:
        attention_step(q, k, v, bias, dropout, backend)

    flops = 3 * 4 * b * h * s * s * d
    try:
        ms = milliseconds(step)
        return {"name": name, "ms": round(ms, 4), "tflops": round(flops / ms / 1e9, 1), "kernels": kernels(step)}
    except Exception as exc:  # a forced backend that refuses these inputs (RuntimeError, mostly)
        return {"name": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}


def probe_shape(b: int, h: int, s: int, d: int) -> dict:
    variants = []
    for variant in VARIANTS:
        variants.append(time_variant(b, h, s, d, variant))
        print(f"  {variants[-1]}", flush=True)
        torch.cuda.empty_cache()
    return {"shape": [b, h, s, d], "tflop_per_call": round(3 * 4 * b * h * s * s * d / 1e12, 4), "variants": variants}


def gemm_ceilings() -> list[dict]:
    rows = []
    for name, (m, k, n) in GEMMS.items():
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        ms = milliseconds(lambda a=a, w=w: F.linear(a, w), iters=50)
        rows.append({"name": name, "ms": round(ms, 4), "tflops": round(2 * m * k * n / ms / 1e9, 1)})
        print(f"  {rows[-1]}", flush=True)
    return rows


def main() -> int:
    out = Path(sys.argv[1])
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for preset, shape in SHAPES.items():
        print(f"== {preset}: micro-batch, heads, seq, head dim = {shape}", flush=True)
        result["shapes"][preset] = probe_shape(*shape)
        out.write_text(json.dumps(result, indent=2))  # what is measured so far survives a timeout
    print("== dense bf16 GEMMs", flush=True)
    result["gemm"] = gemm_ceilings()
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
