"""The batcher's worker order: a cheap batch overtakes a costly one that became ready at about the same time,
but not one that has waited longer than the cheap batch takes (no starvation)."""

from __future__ import annotations

import asyncio
import threading
import time

import torch

from slimkern.serving.batcher import DynamicBatcher

SECONDS_PER_COST = 0.05  # the fake model's time for one image at full compute


def order_of_service(gap_s: float, warm: bool = True) -> list[str]:
    """One worker, busy with a held batch; a full-width request, then ``gap_s`` later a 1 %-compute request."""
    ran: list[str] = []
    release = threading.Event()

    def run_batch(items, x):
        name = items[0].tag
        if name == "held":
            release.wait(5)
        else:
            time.sleep(SECONDS_PER_COST * sum(p.x.shape[0] * p.cost for p in items))
        ran.append(name)
        return x

    async def scenario() -> None:
        batcher = DynamicBatcher(run_batch, max_batch=4, max_wait_ms=0, workers=1)
        try:
            x = torch.randn(1, 3)
            if warm:  # times one batch: seconds per unit of cost
                await batcher.submit("warm", x, tag="warm", cost=1.0)
            held = asyncio.create_task(batcher.submit("held", x, tag="held"))
            await asyncio.sleep(0.02)
            full = asyncio.create_task(batcher.submit("full", x, tag="full", cost=1.0))
            await asyncio.sleep(gap_s)
            cheap = asyncio.create_task(batcher.submit("cheap", x, tag="cheap", cost=0.01))
            await asyncio.sleep(0.02)
            release.set()
            await asyncio.gather(held, full, cheap)
        finally:
            release.set()
            batcher.shutdown()

    asyncio.run(scenario())
    return ran


def test_cheap_batch_overtakes_a_costly_one_ready_at_the_same_time():
    assert order_of_service(gap_s=0.0) == ["warm", "held", "cheap", "full"]


def test_cheap_batch_does_not_overtake_one_that_waited_longer_than_it_takes():
    # the full-width batch's estimated finish (arrival + ~0.05 s) is long past when the cheap one arrives
    assert order_of_service(gap_s=0.3) == ["warm", "held", "full", "cheap"]


def test_first_come_first_served_before_any_batch_is_timed():
    assert order_of_service(gap_s=0.0, warm=False) == ["held", "full", "cheap"]


def test_rows_go_back_to_their_requests_and_failures_never_hang():
    """Merged batches hand each request its own rows; a failing on_batch or a run_batch returning the wrong row
    count fails the requests of the batch (and those queued behind it) instead of leaving them waiting forever."""

    async def scenario(run_batch, on_batch=None):
        batcher = DynamicBatcher(run_batch, max_batch=8, max_wait_ms=50, on_batch=on_batch)
        try:
            xs = [torch.full((1 + i % 2, 3), float(i)) for i in range(4)]
            return xs, await asyncio.wait_for(
                asyncio.gather(*(batcher.submit("k", x) for x in xs), return_exceptions=True), 5)
        finally:
            batcher.shutdown()

    xs, outs = asyncio.run(scenario(lambda items, x: x * 2))
    assert all(torch.equal(out, x * 2) for x, out in zip(xs, outs, strict=True))

    def broken_metrics(size):
        raise ValueError("metrics backend down")

    _, outs = asyncio.run(scenario(lambda items, x: x, on_batch=broken_metrics))
    assert all(isinstance(out, ValueError) for out in outs)
    _, outs = asyncio.run(scenario(lambda items, x: x[:1]))
    assert all(isinstance(out, RuntimeError) and "returned 1 rows for a batch of 6" in str(out) for out in outs)
