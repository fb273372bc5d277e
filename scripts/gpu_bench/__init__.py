"""`make bench-gpu`'s parts (`scripts/bench_gpu.py` runs them in order on a CUDA machine):

- `environment.py`: torch, CUDA, the GPU, and which optional fused-kernel packages import;
- `sdpa_probe.py`: which kernel torch's SDPA picks for sobert's attention call, and its TFLOP/s;
- `profile_step.py`: one base-preset training step through sobert's own setup, under
  torch.profiler (GEMM / attention / elementwise / communication split);
- `summary.py`: progress records to per-preset figures, and those to BENCHMARKS.md sections.

The first three run as processes of their own (each writes a JSON file the last one reads), so a
crash or a timeout in one leaves the others' results.
"""
