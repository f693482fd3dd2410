"""The ``torch`` backend: plain PyTorch ops on prefix views of the stored weights (every device, every dtype)."""

from .backend import TorchBackend

__all__ = ["TorchBackend"]
