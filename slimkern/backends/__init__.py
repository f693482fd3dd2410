"""Backends: interchangeable implementations of the slimmed transformer blocks, one package each.

``base`` (the :class:`Backend` interface and the checks the backends share), ``registry`` (priority, selection and
refusal reasons), and one package per backend: ``torch`` (plain PyTorch), ``triton`` (Triton kernels), ``cuda``
(CUDA C++ kernels), each with its ops, its tolerances and, where it has one, its self-test.
"""

from .base import Backend, check_attention_inputs
from .registry import PRIORITY, describe_backends, list_backends, register_backend, select_backend

__all__ = ["PRIORITY", "Backend", "check_attention_inputs", "describe_backends", "list_backends", "register_backend",
           "select_backend"]
