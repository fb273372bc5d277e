"""Let megatron-core run on a machine without CUDA. Used only when `torch.cuda.is_available()` is False.

megatron-core assumes a CUDA device in a few places that have nothing to do with the math:
- the model-parallel RNG tracker saves and restores *CUDA* generator states;
- `GlobalMemoryBuffer`, DDP's grad buffers, the optimizer and `dist_checkpointing` allocate
  with `device="cuda"` / `torch.cuda.current_device()`;
- the schedules and DDP call `torch.cuda.current_stream()` / `synchronize()`;
- gradient clipping asserts `grad.type() == 'torch.cuda.FloatTensor'`.
Here the tracker keeps CPU generator states, a TorchFunctionMode turns `device="cuda"` into
`device="cpu"`, and the stream calls become no-ops, and `Tensor.type()` (no arguments, the
form only such assertions use) names a CPU tensor by its CUDA type. The numerics are those of the
same code on CPU; nothing in the training math is replaced. On a CUDA machine none of this is installed.

The CPU stands in for the device here, so a tensor left on the CPU cannot look misplaced: where the
model goes is checked by `model.place_model` on every path (every parameter on the training device
in the training dtype, or an error), and a unit test places the model on the `meta` device as the
GPU path places it on its GPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_INSTALLED = False


def _to_cpu_device(value: Any) -> Any:
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    if isinstance(value, int) and not isinstance(value, bool):
        return "cpu"  # torch.cuda.current_device() returns 0 here
    return value


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites the `device=` argument of tensor factories and `.to()`/`.cuda()` calls."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _to_cpu_device(kwargs["device"])
        name = getattr(func, "__name__", "")
        if name == "type" and len(args) == 1 and not kwargs and args[0].device.type == "cpu":
            return func(*args).replace("torch.", "torch.cuda.", 1)
        if name == "cuda":
            return args[0]
        if name == "to" and len(args) > 1 and isinstance(args[1], (str, torch.device)):
            args = (args[0], _to_cpu_device(args[1]), *args[2:])
        return func(*args, **kwargs)


class _NullStream:
    """Stands in for torch.cuda.Stream (a class, so annotations like `Stream | None` still work)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None: ...

    def synchronize(self) -> None: ...

    def wait_stream(self, _stream: Any) -> None: ...

    def wait_event(self, _event: Any) -> None: ...

    def record_event(self, _event: Any = None) -> None: ...

    def __enter__(self) -> _NullStream:
        return self

    def __exit__(self, *_exc: Any) -> None: ...


def _make_cpu_rng_tracker():
    from megatron.core.tensor_parallel import random as mp_random

    class CpuRNGStatesTracker(mp_random.CudaRNGStatesTracker):
        """Megatron's tracker with CPU generator states (same seeding and forking semantics)."""

        def add(self, name: str, seed: int) -> None:
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            original = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(original)

        @contextlib.contextmanager
        def fork(self, name: str = mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            original = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(original)

    return CpuRNGStatesTracker


def install() -> None:
    """Idempotently install the CPU redirections (no-op where CUDA is available)."""
    global _INSTALLED
    if _INSTALLED or torch.cuda.is_available():
        return
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._CUDA_RNG_STATE_TRACKER = _make_cpu_rng_tracker()()
    mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    null_stream = _NullStream()
    torch.cuda.current_stream = lambda *a, **k: null_stream  # type: ignore[assignment]
    torch.cuda.default_stream = lambda *a, **k: null_stream  # type: ignore[assignment]
    torch.cuda.Stream = _NullStream  # type: ignore[assignment,misc]
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    torch.cuda.manual_seed = torch.manual_seed  # type: ignore[assignment]
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    torch.cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore[assignment]
    torch.cuda.empty_cache = lambda: None  # type: ignore[assignment]
    torch.cuda.memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]
    torch.cuda.max_memory_allocated = lambda *a, **k: 0  # type: ignore[assignment]

    _CudaToCpuMode().__enter__()  # stays active for the life of the process
    _INSTALLED = True
