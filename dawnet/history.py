"""History: every step and epoch scalar of a training run, kept in checkpoints, exported to CSV/JSON.

A record is a flat dict of scalars. Step records carry at least ``step``, ``epoch``, ``loss``, ``lr``,
``samples_per_s`` and ``time`` (seconds since the run began, summed over resumed sessions); epoch records
carry the epoch's averages, the validation results prefixed ``val_`` and the wall time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable

from dawnet.atomic import atomic_write_text
from dawnet.jsonfile import load_json

__all__ = ["History", "draw_history"]  # noqa: F822 (draw_history is loaded lazily below)


class History:
    """Step and epoch records of a run; plain data, so it lives in a ``weights_only`` checkpoint."""

    def __init__(self, steps: Iterable[dict] = (), epochs: Iterable[dict] = ()):
        self.steps: list[dict] = [dict(r) for r in steps]
        self.epochs: list[dict] = [dict(r) for r in epochs]

    def log_step(self, **values: float) -> dict:
        """Append one step record (floats and ints only) and return it."""
        record = _clean(values)
        self.steps.append(record)
        return record

    def log_epoch(self, **values: float) -> dict:
        """Append one epoch record and return it."""
        record = _clean(values)
        self.epochs.append(record)
        return record

    def keys(self, level: str = "step") -> list[str]:
        """Every key that appears in the step (or epoch) records, in first-seen order."""
        seen: dict[str, None] = {}
        for record in self._records(level):
            seen.update(dict.fromkeys(record))
        return list(seen)

    def series(self, key: str, level: str = "step", x: str | None = None) -> tuple[list, list]:
        """``(xs, ys)`` for records that hold ``key``; x defaults to ``step`` (steps) or ``epoch`` (epochs)."""
        x = x or ("step" if level == "step" else "epoch")
        pairs = [(r.get(x), r[key]) for r in self._records(level) if key in r]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def last(self, key: str, level: str = "step", default: float | None = None) -> float | None:
        """The latest value of ``key`` (None, or ``default``, when it was never logged)."""
        for record in reversed(self._records(level)):
            if key in record:
                return record[key]
        return default

    def truncate(self, step: int) -> None:
        """Drop step records after ``step`` (used when a run resumes from an earlier checkpoint)."""
        self.steps = [r for r in self.steps if r.get("step", 0) <= step]

    # -- serialization ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"steps": [dict(r) for r in self.steps], "epochs": [dict(r) for r in self.epochs]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = [dict(r) for r in state.get("steps", [])]
        self.epochs = [dict(r) for r in state.get("epochs", [])]

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The history as JSON (``{"steps": [...], "epochs": [...]}``); written atomically when a path is given."""
        text = json.dumps(self.state_dict(), indent=1, allow_nan=True)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_csv(self, path: str | os.PathLike | None = None, level: str = "step") -> str:
        """Step (or epoch) records as CSV with one column per key; missing values are empty cells."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.keys(level), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._records(level))
        if path is not None:
            atomic_write_text(path, buffer.getvalue())
        return buffer.getvalue()

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> History:
        """Read a history written by :meth:`to_json` (a path or the JSON text itself)."""
        state = load_json(path_or_text)
        return cls(state.get("steps", []), state.get("epochs", []))

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"History({len(self.steps)} steps, {len(self.epochs)} epochs, keys={self.keys()})"

    def _records(self, level: str) -> list[dict]:
        if level not in ("step", "epoch"):
            raise ValueError(f"level must be 'step' or 'epoch', got {level!r}")
        return self.steps if level == "step" else self.epochs


def _clean(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if type(value) is float or type(value) is int:  # the usual case, without the checks below
            out[key] = value
            continue
        if hasattr(value, "item"):  # 0-d tensors and numpy scalars
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"history values must be numbers; {key}={value!r} is {type(value).__name__}")
        out[key] = value if isinstance(value, int) or math.isfinite(value) else float(value)
    return out


def __getattr__(name: str):
    # draw_history needs matplotlib; it is imported only when asked for, so the Agent imports fast.
    if name == "draw_history":
        from dawnet.history_plot import draw_history

        return draw_history
    raise AttributeError(f"module 'dawnet.history' has no attribute {name!r}")
