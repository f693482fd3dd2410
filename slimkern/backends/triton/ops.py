"""The Triton kernels as custom ops ``slimkern::triton_{sliced_linear,attention,layer_norm}`` and their checked
entry points (:class:`~slimkern.backends.custom_ops.CheckedOps`). Importing this module imports triton: set
``TRITON_INTERPRET=1`` before that to run the kernels on CPU tensors (the interpreter, for tests)."""

from __future__ import annotations

import torch

from ..custom_ops import CheckedOps, define_ops
from . import attention_kernel, layer_norm_kernel, sliced_linear_kernel

DTYPES = (torch.float32, torch.bfloat16, torch.float16)

OPS = define_ops("triton", {"sliced_linear": sliced_linear_kernel.launch, "attention": attention_kernel.launch,
                            "layer_norm": layer_norm_kernel.launch})
CHECKED = CheckedOps("triton", "Triton", DTYPES, OPS, max_head_dim=attention_kernel.MAX_HEAD_DIM,
                     max_norm_width=max(layer_norm_kernel.CONFIGS))
sliced_linear = CHECKED.sliced_linear
attention = CHECKED.attention
layer_norm = CHECKED.layer_norm
