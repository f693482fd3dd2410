"""The CUDA kernels (``csrc/``) as custom ops ``slimkern::cuda_{sliced_linear,attention,layer_norm}`` and their
checked entry points: the same operations, arguments and layouts as the Triton ops (:mod:`slimkern.backends.triton`).

The checked functions validate every argument before the extension is touched, with the offending shapes, dtypes
and devices in the message; so the checks run (and are tested) on CPU or meta tensors on machines without a GPU,
and a bad call never triggers a build. The device check comes last: CPU tensors that pass every other check raise
a ValueError saying the kernels need CUDA tensors. The binding (``csrc/binding.cpp``) repeats the essential checks.
The ops' implementations load the extension on first use (:mod:`.build`): importing this module builds nothing.

bfloat16 and float16 only: the ``cuda`` backend runs float32 models on the torch backend's ops.
"""

from __future__ import annotations

import torch

from ..custom_ops import (
    CheckedOps,
    attention_output,
    define_ops,
    layer_norm_output,
    sliced_linear_output,
)

DTYPES = (torch.bfloat16, torch.float16)
MAX_HEAD_DIM = 256
MAX_NORM_WIDTH = 8192


def _ext():
    from .build import extension

    return extension()  # cached after the first call: the module, or the same ExtensionUnavailable


def run_sliced_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, n_out: int, k_in: int,
                      gelu: bool = False, value_weight: torch.Tensor | None = None,
                      value_bias: torch.Tensor | None = None, residual: torch.Tensor | None = None,
                      gamma: torch.Tensor | None = None, qkv_heads: int = 0, seq_len: int = 0) -> torch.Tensor:
    """``slimkern::cuda_sliced_linear``: allocate the output and launch, on arguments already checked."""
    out = sliced_linear_output(x, n_out, qkv_heads, seq_len)
    if x.shape[0] > 0:
        _ext().sliced_linear(x, weight, bias, value_weight, value_bias, residual, gamma, out, n_out, k_in, gelu,
                             qkv_heads, seq_len)
    return out


def run_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """``slimkern::cuda_attention``: allocate the ``[B, Nq, d'*H]`` output and launch, on arguments already checked."""
    out = attention_output(q)
    if out.numel() > 0:
        _ext().attention(q, k, v, bias, out, scale, True)  # True: the out-projection's [B, Nq, d'*H] layout
    return out


def run_layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                   eps: float) -> torch.Tensor:
    """``slimkern::cuda_layer_norm``: allocate the output and launch, on arguments already checked."""
    out = layer_norm_output(x)
    if out.numel() > 0:
        _ext().layer_norm(x, weight, bias, None, out, None, eps)  # no residual: it is fused into the GEMMs
    return out


OPS = define_ops("cuda", {"sliced_linear": run_sliced_linear, "attention": run_attention,
                          "layer_norm": run_layer_norm})
CHECKED = CheckedOps("cuda", "CUDA", DTYPES, OPS, max_head_dim=MAX_HEAD_DIM, max_norm_width=MAX_NORM_WIDTH,
                     device_type="cuda")
sliced_linear = CHECKED.sliced_linear
attention = CHECKED.attention
layer_norm = CHECKED.layer_norm
