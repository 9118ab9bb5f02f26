"""Subcommands of the ``dawnet`` command, one module each, found by ``dawnet.cli``.

A module here defines ``register(subparsers)``: it adds its parser (``help=`` and a description in
full sentences) and ``set_defaults(func=run)``; ``run(args)`` returns an exit code. Modules stay cheap to
import (``dawnet --help`` imports them all): torch and the library are imported inside ``run``. Option ranges
use the argparse types of :mod:`dawnet.commands._types`.
"""

from __future__ import annotations


class CommandError(Exception):
    """A user-facing failure: the CLI prints the message (no traceback) and exits 2."""


def set_threads(threads: int | None) -> None:
    """Apply a ``--threads N`` option (PyTorch's intra-op threads; None leaves PyTorch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise CommandError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
