"""The MLP's bias add and GeLU in one fused kernel, with the exact (erf) GeLU BERT uses.

megatron-core fuses the first MLP linear's bias with its activation when `bias_activation_fusion`
is on (`MLP.forward`, megatron/core/transformer/mlp.py, megatron-core 0.16.1), but its fused GeLU
(`fusions/fused_bias_gelu.py`: `bias_gelu`, `GeLUFunction`) is the tanh approximation. BERT, and the
Hugging Face model a checkpoint is converted to (`hidden_act: gelu`), use the exact one, so that
fusion would change the function the model computes. `ExactGeluMLP` takes the same branch with
`F.gelu(x + bias)` compiled by megatron's own fuser (`megatron.core.jit.jit_fuser`, torch.compile
on this torch): one pointwise kernel for the forward and one for the backward, where the unfused
path runs an add, a GeLU and their two backward kernels over the [s, b, 4h] activation.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core.jit import jit_fuser
from megatron.core.transformer.mlp import MLP


@jit_fuser
def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`F.gelu(x + bias)`, exact GeLU, fused forward and backward."""
    return F.gelu(x + bias)


class ExactGeluMLP(MLP):
    """megatron-core's `MLP` whose bias-activation fusion keeps the exact GeLU.

    Where `config.bias_activation_fusion` is on and the MLP is BERT's (GeLU, a bias, no gated
    linear unit, no per-token scale), fc1's bias and the GeLU run as `bias_gelu`; every other
    configuration is the parent's, unchanged.
    """

    def _fuses_bias_gelu(self, per_token_scale) -> bool:
        config = self.config
        return (
            config.bias_activation_fusion
            and not config.use_te_activation_func
            and not config.gated_linear_unit
            and config.add_bias_linear
            and self.activation_func is F.gelu
            and per_token_scale is None
        )

    def forward(self, hidden_states, per_token_scale=None, **kwargs):
        if not self._fuses_bias_gelu(per_token_scale):
            return super().forward(hidden_states, per_token_scale, **kwargs)
        intermediate, bias = self.linear_fc1(hidden_states)
        return self.linear_fc2(bias_gelu(intermediate, bias))


def with_exact_gelu_mlp(layer_spec):
    """A transformer layer spec (a copy) whose MLP is `ExactGeluMLP`, its linears unchanged."""
    spec = copy.deepcopy(layer_spec)
    spec.submodules.mlp.module = ExactGeluMLP
    return spec
