import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")  # figures render off-screen in tests
sys.path.insert(0, str(Path(__file__).parent))  # tests/toy.py is importable as `toy`, here and in subprocesses
torch.set_num_threads(1)  # tests use tiny tensors: one thread is faster and never oversubscribes the cores


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, also after a test (or a CLI call with --threads) changed it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
