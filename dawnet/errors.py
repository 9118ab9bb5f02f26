"""The errors training raises, and the one-line reason of an exception that dawnet's messages quote."""

from __future__ import annotations

__all__ = ["NonFiniteLossError", "LossError", "first_line"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before the weights were updated."""


class LossError(ValueError):
    """The loss could not be computed from the model's output and the targets."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``str(e)`` (or the exception's class name), to quote in a one-line message."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
