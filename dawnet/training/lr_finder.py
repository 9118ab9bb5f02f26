"""The LR range test (Smith 1506.01186, section 3.3): sweep the lr up over a few hundred steps, watch the loss.

:func:`lr_find` runs the agent's own ``learn(batch)``, so it works for any batch structure and task (CTC,
attention, detection), not only ``(x, y)``. The sweep is an ``LRScheduler`` (:class:`RangeSweepLR`) swapped in
for the agent's schedule. Afterwards everything is restored exactly -- weights, BatchNorm statistics,
optimizer state, schedule, RNG, history, counters, gradients and train/eval modes -- also when the test
diverges, raises, or is interrupted (Ctrl-C).

The result ranks lrs by the training loss, a validation loss, or a validation metric (higher or lower is
better), and :meth:`LRFinderResult.suggest` turns the curve into ``(base_lr, max_lr)`` for
:class:`CyclicalLR` or :class:`SuperConvergence` (the rule is documented in :func:`suggest_lrs`). The
bias-corrected moving average of the training loss (``smooth``, fastai's 0.98) is drawn and drives the
divergence test; the suggestion smooths the raw curve without lag, because that average trails the loss
by up to ~50 steps -- several decades of a default sweep -- and would push the suggestion up.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from dawnet.atomic import atomic_write_text
from dawnet.jsonfile import load_json

__all__ = ["lr_find", "LRFinderResult", "RangeSweepLR"]


class RangeSweepLR(LRScheduler):
    """The range test's sweep: lr from ``min_lr`` to ``max_lr`` in ``num_iter`` steps, exponential or linear.

    Like ``ExponentialLR``: ``get_lr`` is chainable (times a constant ratio, or plus a constant step),
    ``_get_closed_form_lr`` computes from the step index. Every param group keeps its ratio to group 0.

    Example:
        >>> # min_lr 1e-4, max_lr 1, num_iter 5, "exp": lr per step 1e-4, 1e-3, 1e-2, 1e-1, 1
        >>> # "linear": 1e-4, 0.250075, 0.50005, 0.750025, 1
    """

    def __init__(self, optimizer: Optimizer, min_lr: float, max_lr: float, num_iter: int, mode: str = "exp",
                 last_epoch: int = -1) -> None:
        _check_range(min_lr, max_lr, num_iter, mode)
        self.min_lr, self.max_lr, self.num_iter, self.mode = float(min_lr), float(max_lr), int(num_iter), mode
        first = optimizer.param_groups[0]["lr"]
        self.scales = [g["lr"] / first if first > 0 else 1.0 for g in optimizer.param_groups]
        for group, scale in zip(optimizer.param_groups, self.scales):
            group["initial_lr"] = self.min_lr * scale
        super().__init__(optimizer, last_epoch)

    def lr_at(self, t: int) -> float:
        """The group-0 lr at sweep index t (clamped to the sweep)."""
        f = min(max(t, 0), self.num_iter - 1) / (self.num_iter - 1)
        if self.mode == "exp":
            return self.min_lr * (self.max_lr / self.min_lr) ** f
        return self.min_lr + (self.max_lr - self.min_lr) * f

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        if self._is_initial or t <= 0 or t >= self.num_iter:
            return self._get_closed_form_lr()
        if self.mode == "exp":
            ratio = (self.max_lr / self.min_lr) ** (1 / (self.num_iter - 1))
            return [g["lr"] * ratio for g in self.optimizer.param_groups]
        delta = (self.max_lr - self.min_lr) / (self.num_iter - 1)
        return [g["lr"] + delta * s for g, s in zip(self.optimizer.param_groups, self.scales)]

    def _get_closed_form_lr(self) -> list[float]:
        lr = self.lr_at(self.last_epoch)
        return [lr * s for s in self.scales]


@dataclass
class LRFinderResult:
    """The range test's record: one entry per optimizer step, plus how the test ended.

    ``lrs`` are the lrs used (group 0); ``losses`` the raw training losses (NaN where non-finite);
    ``smoothed`` their bias-corrected moving average; ``values`` the validation loss or metric per step when
    the test ranked by validation (else None). ``ranked_by`` is ``"train_loss"``, ``"val_loss"`` or the metric
    name; ``stop_reason`` says why it ended (``"completed"``, ``"diverged: ..."``, ``"non-finite loss ..."``,
    ``"data exhausted ..."``).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    values: list[float] | None = None
    ranked_by: str = "train_loss"
    higher_better: bool = False
    stop_reason: str = "completed"
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    # -- ranking ---------------------------------------------------------------------------------

    def curve(self) -> list[float]:
        """The ranking curve, lower is better, unsmoothed: training loss, validation loss, or -metric."""
        if self.values is None:
            return list(self.losses)
        return [-v for v in self.values] if self.higher_better else list(self.values)

    def _usable(self) -> tuple[list[float], list[float]]:
        y = self.curve()
        n = next((i for i, v in enumerate(y) if not math.isfinite(v)), len(y))
        return self.lrs[:n], y[:n]

    def best_lr(self) -> float:
        """The lr at the best point of the (lag-free) smoothed ranking curve: a ceiling, not a training lr."""
        lrs, y = self._usable()
        if not y:
            raise ValueError(f"the range test recorded no usable point ({self.stop_reason}); lower min_lr")
        values, _ = smooth_curve(lrs, y)
        return lrs[min(range(len(values)), key=values.__getitem__)]

    def suggest(self, divisor: float = 3.5) -> tuple[float, float]:
        """``(base_lr, max_lr)`` from the curve; the rule is documented in :func:`suggest_lrs`.

        It smooths the raw curve itself, without lag; ``smoothed`` (the moving average) is for the plot
        and the divergence test only.
        """
        base, top, _ = suggest_lrs(*self._usable(), divisor=divisor)
        return base, top

    # -- output ----------------------------------------------------------------------------------

    def plot(self, ax=None, suggestion: bool = True):
        """Loss (or metric) against lr on a log axis, raw and smoothed, with base_lr and max_lr marked."""
        from dawnet.history_plot import new_figure

        if ax is None:
            fig, (ax,) = new_figure(1, figsize=(7.5, 4.2))
        else:
            fig = ax.figure
        if self.values is None:
            ax.plot(self.lrs, self.losses, color="C0", alpha=0.3, lw=0.8, label="training loss")
            ax.plot(self.lrs, self.smoothed, color="C0", lw=1.6, label=f"smoothed (beta {self.settings.get('smooth')})")
            ax.set_ylabel("training loss")
            finite = [v for v in self.smoothed if math.isfinite(v)]
            if finite:  # keep the diverging tail from flattening the interesting part
                lo, start = min(finite), finite[0]
                ax.set_ylim(lo - 0.05 * (start - lo + 1e-12), max(start, lo) + 0.3 * (start - lo + 1e-12))
        else:
            ax.plot(self.lrs, self.values, "o-", color="C1", ms=2.5, lw=1.2, label=self.ranked_by)
            ax.set_ylabel(self.ranked_by)
        if self.settings.get("mode", "exp") == "exp":
            ax.set_xscale("log")
        if suggestion and len(self._usable()[1]) >= 5:
            base, top = self.suggest()
            ax.axvline(base, color="C2", ls="--", lw=1.2, label=f"base_lr {base:.3g}")
            ax.axvline(top, color="C3", ls="--", lw=1.2, label=f"max_lr {top:.3g}")
        ax.set_xlabel("learning rate")
        ax.set_title(f"LR range test ({self.stop_reason})", fontsize="medium")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize="small")
        return fig

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON (NaN written as NaN); written atomically when a path is given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            atomic_write_text(path, text)
        return text

    save = to_json

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> LRFinderResult:
        """Read a result written by :meth:`to_json` (a path or the JSON text)."""
        data = load_json(path_or_text)
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown or not {"lrs", "losses", "smoothed"} <= set(data):
            raise ValueError(f"not an LRFinderResult JSON: unexpected keys {sorted(unknown)} or missing lrs/losses")
        return cls(**data)

    load = from_json


BANDWIDTH = 0.3  # decades of lr: the smoother's Gaussian width; curves change on the scale of a decade
SLOWDOWN = 0.5  # max_lr is where the descent has slowed to this fraction of its steepest rate
MIN_DROP = 3.0  # a fall smaller than this many noise levels is not a descent one can trust


def smooth_curve(lrs: list[float], curve: list[float], bandwidth: float = BANDWIDTH) -> tuple[list, list]:
    """Zero-lag smoothing: (values, slopes per decade) of a Gaussian-weighted local linear fit in log10(lr).

    Unlike a moving average it does not shift the curve towards higher lrs (the bias-corrected EMA with
    beta 0.98 lags by up to ~50 steps: several decades of a 100-step sweep over eight decades).
    """
    x = torch.tensor([math.log10(v) for v in lrs], dtype=torch.float64)
    y = torch.tensor(curve, dtype=torch.float64)
    w = torch.exp(-0.5 * ((x[None, :] - x[:, None]) / bandwidth) ** 2)  # (fit point, data point)
    d = x[None, :] - x[:, None]
    s0, s1, s2 = w.sum(1), (w * d).sum(1), (w * d * d).sum(1)
    t0, t1 = (w * y).sum(1), (w * d * y).sum(1)
    det = s0 * s2 - s1 * s1
    flat = det <= 1e-12 * s0 * s0  # a single point in the window: no slope
    value = torch.where(flat, t0 / s0, (s2 * t0 - s1 * t1) / torch.where(flat, 1.0, det))
    slope = torch.where(flat, torch.zeros_like(det), (s0 * t1 - s1 * t0) / torch.where(flat, 1.0, det))
    return value.tolist(), slope.tolist()


def suggest_lrs(lrs: list[float], curve: list[float], divisor: float = 3.5) -> tuple[float, float, dict]:
    """The suggestion rule; returns ``(base_lr, max_lr, details)``. ``curve`` is lower-is-better.

    1. The curve is cut at its first non-finite point; the diverging tail before it stays in, so lrs
       close to a blow-up pull the fit up and are not chosen.
    2. The curve is smoothed without lag by a local linear fit against log10(lr) (Gaussian weights,
       bandwidth 0.3 decade); the fit's slope is the loss change per decade of lr.
    3. The turn is the smoothed minimum. The steepest descent is the most negative slope before it.
    4. ``max_lr`` is the first lr after the steepest descent where the descent has slowed to half its
       steepest rate: the last lr before the curve turns at which the lr still helps a lot.
    5. ``base_lr = max_lr / divisor``; Smith (1708.07120) divides by 3 to 4; the default is 3.5.

    The bandwidth and the half-rate threshold were chosen on the curves in ``tests/data/lr_curves.json``;
    ``benchmarks/lr_find_vs_grid.py`` checks the rule against a grid of fixed lrs on fresh seeds.
    Warnings say when the curve never falls (the sweep started too high), never turns (it ended too low),
    or falls by less than three times its step-to-step noise (robust estimate): then the suggestion is
    unreliable -- a strong per-step noise can hide a short descent and put the turn on the noisy plateau.
    """
    import warnings

    if len(lrs) != len(curve):
        raise ValueError(f"lrs and curve differ in length ({len(lrs)} and {len(curve)})")
    if not divisor >= 1:
        raise ValueError(f"divisor must be >= 1 (base_lr = max_lr / divisor), got {divisor}")
    n = next((i for i, v in enumerate(curve) if not math.isfinite(v)), len(curve))
    if n < 5:
        raise ValueError(f"the range test has {n} usable points; at least 5 are needed: lower min_lr, raise "
                         "num_iter, or check why the loss is not finite from the start")
    lrs, y = list(lrs[:n]), list(curve[:n])
    values, slopes = smooth_curve(lrs, y)
    turn = min(range(n), key=values.__getitem__)
    steep = min(range(turn + 1), key=slopes.__getitem__)
    # How far the curve falls, in units of its step-to-step noise (robust: median absolute residual).
    residuals = sorted(abs(a - b) for a, b in zip(y[: turn + 1], values[: turn + 1]))
    noise = 1.4826 * residuals[len(residuals) // 2]
    start = sorted(values[: max(1, n // 10)])[max(1, n // 10) // 2]
    drop = (start - values[turn]) / noise if noise > 0 else math.inf
    details = {"turn_lr": lrs[turn], "steepest_lr": lrs[steep], "steepest_slope": slopes[steep],
               "drop_in_noise_units": drop}
    if slopes[steep] < 0 and turn > 0 and drop < MIN_DROP:
        warnings.warn(f"the curve falls by only {drop:.1f} times its step-to-step noise: the suggestion is "
                      "unreliable. Use larger batches or more steps (num_iter), or rank by validation (val=)",
                      stacklevel=3)
    if slopes[steep] >= 0 or turn == 0:
        warnings.warn("the range test's curve never falls: the sweep started above the useful lrs; "
                      "lower min_lr (the suggestion is the lowest lr tried)", stacklevel=3)
        top = lrs[0]
    else:
        i = steep
        while i < turn and slopes[i] < SLOWDOWN * slopes[steep]:
            i += 1
        top = lrs[i]
        if turn >= n - 2:
            warnings.warn("the range test's curve has not turned upwards by the end of the sweep: raise max_lr "
                          "to see where the loss stops falling (the suggestion may be low)", stacklevel=3)
    details["max_lr"] = top
    return top / divisor, top, details


def lr_find(agent, data, min_lr: float = 1e-7, max_lr: float = 10.0, num_iter: int = 100, mode: str = "exp",
            smooth: float = 0.98, diverge: float = 4.0, val=None, metric: str | None = None,
            higher_better: bool = False, progress: bool = True) -> LRFinderResult:
    """LR range test with ``agent``'s own learning step; everything is restored afterwards.

    Args:
        agent: a :class:`dawnet.Agent` (any subclass: the batches go through its ``learn``).
        data: training batches (a DataLoader or any iterable); re-read from the start when it runs out.
        min_lr, max_lr: the sweep's ends (defaults 1e-7 and 10, as torch-lr-finder and fastai).
        num_iter: optimizer steps in the sweep (each is ``agent.accumulate`` batches).
        mode: ``"exp"`` (equal steps per decade; the default) or ``"linear"``.
        smooth: factor of the bias-corrected moving average of the training loss (0 switches it off).
        diverge: stop when the smoothed loss exceeds ``diverge`` times its best (or is NaN/inf).
        val: validation data; when given, ``agent.evaluate(val)`` runs after every step and ranks the lrs by
            its loss (or ``metric``). Keep it small: it runs ``num_iter`` times.
        metric: rank by this key of ``agent.evaluate(val)`` (e.g. ``"accuracy"``) instead of the loss.
        higher_better: True for metrics where higher is better (accuracy).
        progress: show a tqdm bar.

    Returns:
        An :class:`LRFinderResult`; ``result.suggest()`` gives ``(base_lr, max_lr)``.
    """
    _check_range(min_lr, max_lr, num_iter, mode)
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1) (0: no smoothing), got {smooth}")
    if not diverge > 1:
        raise ValueError(f"diverge must be > 1 (a multiple of the best loss), got {diverge}")
    if metric is not None and val is None:
        raise ValueError(f"ranking by metric {metric!r} needs validation data: pass val= (a few batches)")
    if metric is not None and metric not in agent.metrics and metric != "loss":
        raise ValueError(f"metric {metric!r} is not one of the agent's metrics {sorted(agent.metrics)}; "
                         "pass metrics= to the Agent or choose one of these")
    from dawnet import parallel
    from dawnet.agent import NonFiniteLossError
    from dawnet.sampling import epoch_loader

    saved = agent.snapshot()
    sweep_schedule = None
    lrs, losses, smoothed, values = [], [], [], ([] if val is not None else None)
    stop_reason = "completed"
    started = time.perf_counter()
    bar = None
    if progress and parallel.is_main_process():
        from tqdm.auto import tqdm

        bar = tqdm(total=num_iter, desc="lr_find", unit="step", dynamic_ncols=True, leave=False)
    try:
        agent.callbacks = []  # snapshot/checkpoint callbacks must not fire during the test
        sweep_schedule = RangeSweepLR(agent.optimizer, min_lr, max_lr, num_iter, mode)
        agent.schedule = sweep_schedule
        rank, world = parallel.rank(), parallel.world_size()
        batches = _cycle(lambda k: epoch_loader(data, agent.epoch + k, agent.seed, 0, rank, world))
        avg, best = 0.0, math.inf
        for i in range(num_iter):
            lr = agent.lr
            try:
                stats = None
                while stats is None or not stats["stepped"]:
                    batch = next(batches)
                    stats = agent.learn(batch)
                loss = stats["loss"]
            except NonFiniteLossError:
                loss = math.nan
            except StopIteration:
                stop_reason = f"data exhausted after {i} steps: pass a DataLoader or a list (it is re-read)"
                break
            if world > 1:  # every rank must take the same decisions
                total, count = parallel.all_reduce_sum([loss, 1.0])
                loss = total / count
            lrs.append(lr)
            losses.append(loss)
            if not math.isfinite(loss):
                smoothed.append(math.nan)
                if values is not None:
                    values.append(math.nan)
                stop_reason = f"non-finite loss ({loss}) at lr {lr:.3g}"
                break
            avg = smooth * avg + (1 - smooth) * loss
            smooth_loss = avg / (1 - smooth ** (i + 1)) if smooth else loss
            smoothed.append(smooth_loss)
            if values is not None:
                results = agent.evaluate(val)
                values.append(float(results[metric or "loss"]))
            if bar is not None:
                bar.update()
                bar.set_postfix(lr=f"{lr:.2e}", loss=f"{smooth_loss:.4g}", refresh=False)
            best = min(best, smooth_loss)
            if smooth_loss > diverge * best and best > 0:
                stop_reason = f"diverged: smoothed loss {smooth_loss:.4g} > {diverge} x best {best:.4g} at lr {lr:.3g}"
                break
            if values is not None and not math.isfinite(values[-1]):
                stop_reason = f"non-finite {metric or 'val_loss'} at lr {lr:.3g}"
                break
    finally:
        if bar is not None:
            bar.close()
        agent.restore(saved)
    return LRFinderResult(
        lrs=lrs, losses=losses, smoothed=smoothed, values=values,
        ranked_by="train_loss" if val is None else (metric if metric not in (None, "loss") else "val_loss"),
        higher_better=bool(higher_better and metric is not None), stop_reason=stop_reason,
        settings={"min_lr": min_lr, "max_lr": max_lr, "num_iter": num_iter, "mode": mode, "smooth": smooth,
                  "diverge": diverge},
        seconds=time.perf_counter() - started,
    )


def _cycle(make):
    """Batches from ``make(0)``, then ``make(1)``, ... (a new pass each time one runs out)."""
    k = 0
    while True:
        empty = True
        for batch in make(k):
            empty = False
            yield batch
        if empty:
            return
        k += 1


def _check_range(min_lr, max_lr, num_iter, mode) -> None:
    if not (isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float))):
        raise ValueError(f"min_lr and max_lr must be numbers, got {min_lr!r} and {max_lr!r}")
    if not (0 < min_lr < max_lr) or not math.isfinite(max_lr):
        raise ValueError(f"need 0 < min_lr < max_lr (finite), got min_lr={min_lr}, max_lr={max_lr}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise ValueError(f"num_iter must be an integer >= 2, got {num_iter!r}")
    if mode not in ("exp", "linear"):
        raise ValueError(f"mode must be 'exp' or 'linear', got {mode!r}")
