import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: with two OpenMP threads on a busy 2-core machine every small op waits at a barrier for a
    descheduled thread (a 4-step test took 18 s instead of 2 s); one thread avoids that."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
