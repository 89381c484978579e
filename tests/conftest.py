"""Settings shared by the whole test suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """One torch thread: the test models are tiny, and on a small shared machine OpenMP's spinning
    workers made multi-threaded runs 10-100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
