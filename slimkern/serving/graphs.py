"""CUDA graphs of the slimmed forward, one per (plan, batch bucket, input shape, dtype, output), in a bounded LRU.

A batch of ``B`` images runs in the graph of the smallest bucket ``>= B``: its rows are copied into the graph's
static input buffer, the rest of the buffer is zero (a valid normalised image: rows never mix in a ViT, so the
padding cannot change the real rows), the graph is replayed and the first ``B`` rows of its static output are
cloned. Batches larger than the largest bucket run eagerly.

Replay gives exactly what the eager forward gives on the same padded batch (same kernels); against the eager
forward of the unpadded batch, GEMMs of another row count may round differently in the last bits.

One lock serialises capture and the enqueueing of replays: everything runs on the device's current stream, so
a replay and the clone of its output are ordered before the next request overwrites the static buffers.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..model import SlimModel
from ..plan import SlimPlan

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

GraphKey = tuple[SlimPlan, int, tuple[int, ...], torch.dtype, str]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_x: torch.Tensor
    static_out: torch.Tensor
    nbytes: int  # static buffers plus the graph's private memory pool (reserved-memory growth at capture)


class GraphCache:
    """Captured forwards of one CUDA model, bounded by ``max_entries`` and ``max_bytes`` (least recently used
    graphs are released first).

    Args:
        model: a :class:`SlimModel` on a CUDA device.
        buckets: batch sizes graphs are captured for, ascending.
        max_entries: most graphs held at once.
        max_bytes: most bytes (static buffers + graph memory pools) held at once; ``None``: no byte limit.
    """

    def __init__(self, model: SlimModel, *, buckets: tuple[int, ...] = DEFAULT_BUCKETS, max_entries: int = 32,
                 max_bytes: int | None = None) -> None:
        if model.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a model on a CUDA device, the model is on {model.device}")
        if not buckets or list(buckets) != sorted(set(buckets)) or buckets[0] < 1:
            raise ValueError(f"buckets must be ascending distinct positive batch sizes, got {buckets!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.model = model
        self.buckets = tuple(buckets)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.lock = threading.Lock()
        self._graphs: OrderedDict[GraphKey, _Graph] = OrderedDict()
        self._uncapturable: set[GraphKey] = set()
        self.captures = 0  # graphs captured so far (evicted ones included): tests and metrics read it

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self._graphs.values())

    def __len__(self) -> int:
        return len(self._graphs)

    def bucket_for(self, batch: int) -> int | None:
        """The smallest bucket that holds ``batch`` images, or ``None`` when the batch is larger than every bucket."""
        return next((b for b in self.buckets if b >= batch), None)

    def run(self, x: torch.Tensor, width: float, mode: str, output: str) -> torch.Tensor:
        """``model.encode`` of an already checked ``x`` at ``width`` through a graph (eager when none applies)."""
        bucket = self.bucket_for(x.shape[0])
        plan = self.model.plan(width, mode)
        key = (plan, bucket, tuple(x.shape[1:]), x.dtype, output)
        with self.lock:
            if bucket is None or key in self._uncapturable:
                return self._eager(x, width, mode, output)
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(key, x, width, mode, output)
                if entry is None:
                    return self._eager(x, width, mode, output)
            self._graphs.move_to_end(key)
            rows = x.shape[0]
            entry.static_x[:rows].copy_(x)
            entry.static_x[rows:].zero_()
            entry.graph.replay()
            return entry.static_out[:rows].clone()

    def _eager(self, x: torch.Tensor, width: float, mode: str, output: str) -> torch.Tensor:
        with torch.no_grad():
            return self.model.encode(x, width, mode, output, self.model.backend)

    def _capture(self, key: GraphKey, x: torch.Tensor, width: float, mode: str, output: str) -> _Graph | None:
        bucket = key[1]
        device = self.model.device
        static_x = torch.zeros((bucket, *x.shape[1:]), dtype=x.dtype, device=device)
        backend = self.model.backend
        reserved = torch.cuda.memory_reserved(device)
        try:
            # warm up on a side stream (Triton JIT, cuBLAS workspaces) before capture, as torch.cuda.graphs advises
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):
                    self.model.encode(static_x, width, mode, output, backend)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: requests being checked or copied to the host in other threads may touch CUDA meanwhile
            with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = self.model.encode(static_x, width, mode, output, backend)
        except RuntimeError as err:  # e.g. a stem that copies host data each call: serve this key eagerly
            warnings.warn(f"{self.model.cfg.name}: CUDA graph capture failed for {key[0].summary()} batch {bucket} "
                          f"({err}); this shape runs eagerly", stacklevel=3)
            self._uncapturable.add(key)
            return None
        nbytes = max(0, torch.cuda.memory_reserved(device) - reserved) + static_x.nbytes + static_out.nbytes
        entry = _Graph(graph, static_x, static_out, nbytes)
        self._graphs[key] = entry
        self.captures += 1
        self._evict()
        return entry

    def _evict(self) -> None:
        """Release least recently used graphs until both limits hold (the newest graph always stays)."""
        while len(self._graphs) > 1 and (len(self._graphs) > self.max_entries
                                         or (self.max_bytes is not None and self.nbytes > self.max_bytes)):
            self._graphs.popitem(last=False)
