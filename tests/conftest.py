import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures render off-screen in tests
sys.path.insert(0, str(Path(__file__).parent))  # tests/toy.py is importable as `toy`, here and in subprocesses
