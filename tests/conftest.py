"""Test-suite settings."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run torch on one thread: on a loaded 2-core machine, torch's spinning OpenMP threads
    make the tiny forward passes of the tests 10x slower, for no gain at these sizes."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
