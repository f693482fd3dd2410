"""Dynamic batching: requests for the same plan are merged, different plans run concurrently.

Each request waits in the queue of its key (plan, image shape, output). A per-key drain task merges the waiting
requests into one batch of at most ``max_batch`` images once the batch is full or the oldest request has waited
``max_wait_ms``, runs it in a worker thread and hands every request its rows. While a key's batch runs, new
requests of that key queue up and form the next batch; other keys run at the same time on other workers.

Requests admitted and not yet answered (waiting or running) are bounded by ``max_queue``: beyond it
:meth:`DynamicBatcher.submit` raises :class:`QueueFull` instead of growing the queue.

When every worker is busy, ready batches wait for one in order of their estimated finish time: the oldest
request's arrival plus the batch's cost (images x relative compute) times the measured seconds per unit of cost.
A cheap width thus overtakes a full-width batch that became ready at about the same time, instead of queueing
behind it (head-of-line blocking), but never one that has already waited longer than the cheap batch would take:
nothing starves. Until the first batch has been timed the order is first come, first served.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

#: ``run_batch(items, x)``: the merged batch ``x`` of the requests ``items`` (all of one key) -> output rows.
RunBatch = Callable[[list["Pending"], torch.Tensor], torch.Tensor]


class QueueFull(RuntimeError):
    """The batcher holds ``max_queue`` unanswered requests already; the client should retry later."""


@dataclass
class Pending:
    """One admitted request: its input rows, what the caller attached (e.g. the chosen width), its future."""

    x: torch.Tensor
    tag: Any
    future: asyncio.Future
    cost: float = 1.0  # relative compute per image (1.0 = the full model)
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Merge same-key requests up to ``max_batch`` images or ``max_wait_ms``; at most ``max_queue`` unanswered.

    Args:
        run_batch: runs one merged batch (called in a worker thread).
        max_batch: most images in one batch (a single larger request runs alone, unsplit).
        max_wait_ms: longest a request waits for others to join its batch.
        max_queue: most requests admitted and not yet answered.
        workers: worker threads, i.e. how many batches (of different keys) run at once.
        on_batch: called with each batch's size (metrics).
    """

    def __init__(self, run_batch: RunBatch, *, max_batch: int = 16, max_wait_ms: float = 5.0, max_queue: int = 64,
                 workers: int = 2, on_batch: Callable[[int], None] | None = None) -> None:
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue), ("workers", workers)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.max_queue = max_queue
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slimkern-batch")
        self._queues: dict[Hashable, deque[Pending]] = {}
        self._wakeups: dict[Hashable, asyncio.Event] = {}
        self._drains: dict[Hashable, asyncio.Task] = {}
        self.depth = 0  # admitted, unanswered requests
        self._free_workers = workers
        self._waiting: list[tuple[float, int, asyncio.Future]] = []  # heap of batches waiting for a worker
        self._order = itertools.count()
        self.seconds_per_cost: float | None = None  # moving average over the batches run so far

    async def submit(self, key: Hashable, x: torch.Tensor, tag: Any = None, cost: float = 1.0) -> torch.Tensor:
        """Queue ``x`` ``[B, ...]`` under ``key`` and return its output rows once its batch has run.

        ``cost`` is the relative compute of one image (``Choice.relative_flops``); it orders batches when the
        workers are busy (see the module docstring).

        Raises:
            QueueFull: ``max_queue`` requests are unanswered already.
        """
        if self.depth >= self.max_queue:
            raise QueueFull(f"the server holds {self.depth} unanswered requests (max_queue={self.max_queue}); "
                            "retry later")
        pending = Pending(x, tag, asyncio.get_running_loop().create_future(), cost)
        self.depth += 1
        try:
            self._queues.setdefault(key, deque()).append(pending)
            self._wakeups.setdefault(key, asyncio.Event()).set()
            if key not in self._drains:
                self._drains[key] = asyncio.create_task(self._drain(key))
            return await pending.future
        finally:
            self.depth -= 1

    async def _drain(self, key: Hashable) -> None:
        """Form and run batches of ``key`` until its queue is empty."""
        queue, wakeup = self._queues[key], self._wakeups[key]
        loop = asyncio.get_running_loop()
        batch: list[Pending] = []
        try:
            while queue:
                deadline = queue[0].enqueued + self.max_wait
                while self._rows(queue) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                    wakeup.clear()
                    try:
                        await asyncio.wait_for(wakeup.wait(), left)
                    except asyncio.TimeoutError:
                        break
                batch = [queue.popleft()]
                rows = batch[0].x.shape[0]
                while queue and rows + queue[0].x.shape[0] <= self.max_batch:
                    rows += queue[0].x.shape[0]
                    batch.append(queue.popleft())
                batch = [p for p in batch if not p.future.done()]  # clients that went away
                if not batch:
                    continue
                if self.on_batch is not None:
                    self.on_batch(sum(p.x.shape[0] for p in batch))
                cost = sum(p.x.shape[0] * p.cost for p in batch)
                await self._acquire_worker(batch[0].enqueued + cost * (self.seconds_per_cost or 0.0))
                try:
                    began = time.perf_counter()
                    out = await loop.run_in_executor(self.executor, self._run, batch)
                    self._timed(cost, time.perf_counter() - began)
                except Exception as err:  # the batch failed as a whole: every request in it gets the error
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(err)
                    continue
                finally:
                    self._release_worker()
                start = 0
                for p in batch:
                    rows = p.x.shape[0]
                    if not p.future.done():
                        p.future.set_result(out[start:start + rows])
                    start += rows
        except Exception as err:  # outside the model call (on_batch, ...): the requests get the error, never hang
            for p in (*batch, *queue):
                if not p.future.done():
                    p.future.set_exception(err)
            raise
        finally:
            del self._drains[key], self._queues[key], self._wakeups[key]

    async def _acquire_worker(self, finish_estimate: float) -> None:
        """Wait until a worker is free and no waiting batch has an earlier estimated finish."""
        if self._free_workers and not self._waiting:
            self._free_workers -= 1
            return
        handed = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (finish_estimate, next(self._order), handed))
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():  # the worker was handed over as we were cancelled
                self._release_worker()
            raise

    def _release_worker(self) -> None:
        while self._waiting:
            handed = heapq.heappop(self._waiting)[2]
            if not handed.done():
                handed.set_result(None)
                return
        self._free_workers += 1

    def _timed(self, cost: float, seconds: float) -> None:
        rate = seconds / max(cost, 1e-9)
        self.seconds_per_cost = rate if self.seconds_per_cost is None else 0.8 * self.seconds_per_cost + 0.2 * rate

    @staticmethod
    def _rows(queue: deque[Pending]) -> int:
        return sum(p.x.shape[0] for p in queue)

    def _run(self, batch: list[Pending]) -> torch.Tensor:
        x = batch[0].x if len(batch) == 1 else torch.cat([p.x for p in batch])
        out = self.run_batch(batch, x)
        if out.shape[0] != x.shape[0]:  # slicing would hand requests other requests' rows, or none
            raise RuntimeError(f"run_batch returned {out.shape[0]} rows for a batch of {x.shape[0]} images")
        return out

    def shutdown(self) -> None:
        """Stop the worker threads (after the running batches)."""
        self.executor.shutdown(wait=True, cancel_futures=True)
