"""Callbacks: code that runs at fixed points of ``Agent.fit`` without touching the training loop.

Subclass :class:`Callback` and override the hooks you need; all are no-ops by default. A callback may set
``agent.stop_training = True`` to end ``fit`` after the current step. Callbacks with ``state_dict`` and
``load_state_dict`` have their state saved in checkpoints, keyed by class name.
"""

from __future__ import annotations

import math

__all__ = ["Callback", "EarlyStopping", "keyed_callbacks"]


class Callback:
    """Hooks called by ``Agent.fit``; ``logs`` are the step or epoch record just written to the history."""

    def on_fit_start(self, agent) -> None: ...

    def on_epoch_start(self, agent) -> None: ...

    def on_step_end(self, agent, logs: dict) -> None: ...

    def on_validation_end(self, agent, logs: dict) -> None: ...

    def on_epoch_end(self, agent, logs: dict) -> None: ...

    def on_fit_end(self, agent) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` (an epoch record key, e.g. ``val_loss``) has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "min", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"patience must be at least 1, got {patience}")
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0

    def on_epoch_end(self, agent, logs: dict) -> None:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, which the epoch record does not have "
                           f"(it has {sorted(logs)}); pass val= to fit or monitor another key")
        value = logs[self.monitor]
        better = value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        if better:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                agent.stop_training = True

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]


def keyed_callbacks(callbacks: list[Callback]) -> list[tuple[str, Callback]]:
    """Callbacks keyed for checkpoints: their ``name`` attribute, else class name and rank among that class."""
    seen: dict[str, int] = {}
    out = []
    for cb in callbacks:
        base = getattr(cb, "name", None) or type(cb).__name__
        seen[base] = seen.get(base, -1) + 1
        out.append((base if seen[base] == 0 else f"{base}#{seen[base]}", cb))
    return out
