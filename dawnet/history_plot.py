"""draw_history: a run's loss and metrics above its learning rate (and momentum), on linked x axes.

Re-exported as ``dawnet.history.draw_history``. Takes a :class:`~dawnet.history.History`, an Agent, an
agent state dict or a checkpoint path, and returns a matplotlib ``Figure`` (it renders inline in Jupyter).
Steps where a snapshot was saved (a ``snapshot`` key in the step record, written by
``dawnet.training.SnapshotAtMinimum``) are marked with dotted vertical lines on every panel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

__all__ = ["draw_history", "new_figure"]

# Keys that describe the run rather than measure the model: never drawn as a curve by default.
_BOOKKEEPING = {"step", "epoch", "time", "samples_per_s", "lr", "momentum", "beta1", "snapshot", "batch"}
_PANEL_HEIGHT = 2.4  # inches per loss/metric panel; the lr panel is half that
_WIDTH = 9.0


def draw_history(history_or_checkpoint, keys: Sequence[str] | None = None, lr: bool = True,
                 smooth: float = 0.9, marks: Sequence[int] | None = None, figsize=None):
    """Draw loss and metrics against optimizer steps, with the lr (and momentum) on a linked panel below.

    Args:
        history_or_checkpoint: a ``History``, an object with ``.history`` (an Agent), a state dict with a
            ``"history"`` entry, or the path of a dawnet checkpoint.
        keys: what to draw (default: the step ``loss`` and every epoch-level loss or metric, e.g.
            ``val_loss``, ``val_accuracy``). Keys with "loss" in the name share the top panel; the others
            share a metrics panel.
        lr: draw the learning rate panel (log scale when it spans more than two decades), and the momentum
            (or beta1) on a right axis when the history has it.
        smooth: factor of the bias-corrected moving average drawn over noisy step curves (0 to switch it off).
        marks: extra steps to mark (e.g. ``schedule.minima()``), besides the saved snapshots.
        figsize: ``(width, height)`` in inches; default 9 wide and 2.4 per panel.

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    history = _as_history(history_or_checkpoint)
    if not history.steps and not history.epochs:
        raise ValueError("the history is empty: nothing to draw (train for at least one step first)")
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    series = _collect(history, keys)
    losses = {k: v for k, v in series.items() if "loss" in k}
    metrics = {k: v for k, v in series.items() if "loss" not in k}
    lr_xs, lr_ys = history.series("lr") if lr else ([], [])
    panels = [name for name, present in (("loss", losses), ("metrics", metrics)) if present]
    if lr and lr_ys:
        panels.append("lr")
    if not panels:
        raise ValueError(f"none of the keys {list(keys or [])} is in the history; it has step keys "
                         f"{history.keys('step')} and epoch keys {history.keys('epoch')}")
    ratios = [1 if p == "lr" else 2 for p in panels]
    height = sum(_PANEL_HEIGHT * r / 2 for r in ratios) + 0.6
    fig, axes = new_figure(len(panels), height_ratios=ratios, figsize=figsize or (_WIDTH, height))
    by_name = dict(zip(panels, axes))
    for name, group in (("loss", losses), ("metrics", metrics)):
        if name in by_name:
            _draw_curves(by_name[name], group, smooth)
            by_name[name].set_ylabel("loss" if name == "loss" else "metric")
    if "lr" in by_name:
        _draw_lr(by_name["lr"], history, lr_xs, lr_ys)
    snapshots = [r["step"] for r in history.steps if r.get("snapshot") and "step" in r]
    for ax in axes:
        for i, step in enumerate(snapshots):
            ax.axvline(step, color="C3", ls=":", lw=1, label="snapshot" if i == 0 and ax is axes[0] else None)
        for i, step in enumerate(marks or ()):
            ax.axvline(step, color="0.5", ls="--", lw=0.8, label="mark" if i == 0 and ax is axes[0] else None)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    if len(axes) > 1 and "metrics" in by_name:
        by_name["metrics"].legend(loc="best", fontsize="small")
    axes[-1].set_xlabel("optimizer step")
    return fig


def new_figure(rows: int, height_ratios: list[float] | None = None, figsize: tuple[float, float] | None = None):
    """A Figure with ``rows`` panels sharing the x axis (no pyplot state: safe in servers and tests)."""
    from matplotlib.figure import Figure

    figsize = figsize or (_WIDTH, _PANEL_HEIGHT * rows + 0.6)
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": height_ratios})
    return fig, list(axes[:, 0])


def _as_history(obj):
    from dawnet.history import History

    if isinstance(obj, History):
        return obj
    if isinstance(getattr(obj, "history", None), History):
        return obj.history
    if isinstance(obj, (str, os.PathLike)):
        from dawnet.checkpoint import load_checkpoint

        obj = load_checkpoint(obj, map_location="cpu")
    if isinstance(obj, dict):
        state = obj.get("history")
        if isinstance(state, History):
            return state
        if isinstance(state, dict):
            return History(state.get("steps", []), state.get("epochs", []))
        if "steps" in obj or "epochs" in obj:
            return History(obj.get("steps", []), obj.get("epochs", []))
        raise ValueError("the checkpoint or state dict has no 'history' entry; pass a History, an Agent, or a "
                         "checkpoint written by Agent.save")
    raise TypeError(f"draw_history takes a History, an Agent, a state dict or a checkpoint path, "
                    f"got {type(obj).__name__}")


def _epoch_steps(history) -> dict[int, int]:
    """Epoch number -> the last step of that epoch, for epoch records that do not carry ``step``."""
    ends: dict[int, int] = {}
    for r in history.steps:
        if "epoch" in r and "step" in r:
            ends[int(r["epoch"])] = max(ends.get(int(r["epoch"]), 0), int(r["step"]))
    return ends


def _collect(history, keys) -> dict[str, tuple[list, list, str]]:
    """key -> (steps, values, level) for every key to draw; epoch records are placed at their last step."""
    step_keys, epoch_keys = history.keys("step"), history.keys("epoch")
    if keys is None:
        wanted = [k for k in step_keys if k == "loss"]
        wanted += [k for k in epoch_keys if k not in _BOOKKEEPING and k not in wanted]
    else:
        missing = [k for k in keys if k not in step_keys and k not in epoch_keys]
        if missing:
            raise ValueError(f"keys {missing} are not in the history; it has step keys {step_keys} and "
                             f"epoch keys {epoch_keys}")
        wanted = list(keys)
    ends = _epoch_steps(history)
    out = {}
    for key in wanted:
        if key in step_keys:
            xs, ys = history.series(key, "step")
            out[key] = (xs, ys, "step")
        if key in epoch_keys:
            pairs = []
            for r in history.epochs:
                if key not in r:
                    continue
                x = r.get("step", ends.get(int(r.get("epoch", -1)), None))
                if x is not None:
                    pairs.append((x, r[key]))
            label = key if key not in out else f"{key} (epoch)"
            out[label] = ([p[0] for p in pairs], [p[1] for p in pairs], "epoch")
    return out


def _ema(values: list[float], beta: float) -> list[float]:
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def _draw_curves(ax, group: dict, smooth: float) -> None:
    for i, (key, (xs, ys, level)) in enumerate(group.items()):
        color = f"C{i}"
        if level == "epoch":
            ax.plot(xs, ys, "o-", color=color, ms=4, lw=1.2, label=key)
        elif smooth and len(ys) > 20 and all(math.isfinite(v) for v in ys):
            ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
            ax.plot(xs, _ema(ys, smooth), color=color, lw=1.5, label=f"{key} (smoothed)")
        else:
            ax.plot(xs, ys, color=color, lw=1.2, label=key)


def _draw_lr(ax, history, xs: list, ys: list) -> None:
    ax.plot(xs, ys, color="C0", lw=1.3, label="lr")
    positive = [y for y in ys if y > 0]
    if positive and max(positive) / min(positive) > 100:
        ax.set_yscale("log")
    ax.set_ylabel("lr")
    key = next((k for k in ("momentum", "beta1") if k in history.keys("step")), None)
    if key is not None:
        mx, my = history.series(key)
        twin = ax.twinx()
        twin.plot(mx, my, color="C2", lw=1.0, alpha=0.8)
        twin.set_ylabel(key, color="C2")
        twin.tick_params(axis="y", colors="C2")
