"""Serving many compute budgets from one loaded model.

``Engine`` (budgets -> width, CUDA graphs, latency profiles) needs only torch. The HTTP server
(:mod:`slimkern.serving.server`, FastAPI + uvicorn) and the Ray Serve deployment
(:mod:`slimkern.serving.ray_serve`) import their dependencies when they are imported themselves.
"""

from .engine import Choice, Engine
from .profile import LatencyProfile

__all__ = ["Choice", "Engine", "LatencyProfile"]
