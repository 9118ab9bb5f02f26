"""Subcommands of the ``dawnet`` command, one module each, found by ``dawnet.cli``.

A module here defines ``register(subparsers)``: it adds its parser (``help=`` and a description in
full sentences) and ``set_defaults(func=run)``; ``run(args)`` returns an exit code.
"""


class CommandError(Exception):
    """A user-facing failure: the CLI prints the message (no traceback) and exits 2."""
