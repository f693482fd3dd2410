"""The ``cuda`` backend and its CUDA C++ kernels (``csrc/``): width-sliced GEMMs, attention at any head dim,
LayerNorm. The ops check their arguments in Python and load the compiled extension on first use (see
:mod:`.build`); importing this package builds nothing.
"""

from .backend import CudaBackend
from .ops import attention, layer_norm, sliced_linear

__all__ = ["CudaBackend", "attention", "layer_norm", "sliced_linear"]
