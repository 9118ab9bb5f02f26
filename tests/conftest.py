import sys
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # figures render off-screen in tests
sys.path.insert(0, str(Path(__file__).parent))  # tests/toy.py is importable as `toy`, here and in subprocesses
torch.set_num_threads(1)  # tests use tiny tensors: one thread is faster and never oversubscribes the cores
