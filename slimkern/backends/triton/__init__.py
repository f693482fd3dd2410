"""Triton kernels for slimmed transformer blocks: width-sliced GEMMs, reduced-head-dim attention, LayerNorm.

Importing this package imports triton; set ``TRITON_INTERPRET=1`` before that to run the kernels on CPU tensors.
"""

from .attention import attention
from .layer_norm import layer_norm
from .sliced_linear import sliced_linear

__all__ = ["attention", "layer_norm", "sliced_linear"]
