"""CUDA C++ kernels (``csrc/``) for slimmed transformer blocks: width-sliced GEMMs, attention at any head dim,
LayerNorm. The ops check their arguments in Python and load the compiled extension on first use (see
:mod:`.build`); importing this package builds nothing.
"""

from .ops import attention, layer_norm, sliced_linear

__all__ = ["attention", "layer_norm", "sliced_linear"]
