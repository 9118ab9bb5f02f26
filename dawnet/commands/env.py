"""``dawnet env``: a block of versions and hardware facts to paste into a bug report."""

from __future__ import annotations

import argparse
import json
import os
import platform


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "env",
        help="Print versions and hardware facts for a bug report.",
        description="Print dawnet, Python, PyTorch and hardware versions, ready to paste into an issue.",
    )
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    p.set_defaults(func=run)


def environment() -> dict:
    """Versions and hardware facts that matter when reproducing a result."""
    import numpy
    import PIL
    import torch

    import dawnet

    info = {
        "dawnet": dawnet.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def run(args: argparse.Namespace) -> int:
    info = environment()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Copy-and-paste the text below in your issue.\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    return 0
