"""Cyclical learning-rate schedules: CLR (Smith 2015) and super-convergence (Smith and Topin 2017).

Both are ``torch.optim.lr_scheduler.LRScheduler`` subclasses, stepped once per optimizer step. They follow
torch's contract: attributes are set before ``super().__init__``; ``get_lr`` is the chainable form (it scales
each group's current lr by the ratio of the closed form at this step and the previous one, so another
scheduler's multiplicative change survives); ``_get_closed_form_lr`` computes from the step index alone.

What they add to torch's ``CyclicLR`` / ``OneCycleLR``:

- ``state_dict``/``load_state_dict`` write the saved lr (and momentum) back into the optimizer, so a resume
  is exact whether the optimizer or the schedule is loaded first (``OneCycleLR`` runs one step at the
  constructor's lr when built after ``optimizer.load_state_dict``);
- a super-convergence schedule does not refuse to run past its end (it stays at its final lr) and a resumed
  one can be extended with more cycles (:meth:`SuperConvergence.extend`);
- every schedule knows its LR minima (:meth:`minima`, :meth:`at_minimum`), where snapshot ensembles save;
- :meth:`plot` draws the lr (and momentum) before any training.

Step conventions: ``lr_at(t)`` is the lr that optimizer step ``t + 1`` uses (``t`` is ``last_epoch``; the
constructor sets ``t = 0``). ``minima()`` lists *step counts* ``n`` (``agent.step``): after ``n`` optimizer
steps, the last one used the lowest lr of a cycle, so the weights sit at that minimum.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CyclicalLR", "SuperConvergence"]

_MODES = ("triangular", "triangular2", "exp_range")


class _CyclicSchedule(LRScheduler):
    """Shared machinery: per-group bounds, chainable lr, momentum cycling, exact resume, minima, plot."""

    # subclasses set: base_lrs_ (list), max_lrs (list), momentum (tuple | None), use_beta1 (bool)

    def _setup_bounds(self, optimizer: Optimizer, base_lr, max_lr, momentum) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.base_lrs_ = _per_group("base_lr", optimizer, base_lr)
        self.max_lrs = _per_group("max_lr", optimizer, max_lr)
        for i, (lo, hi) in enumerate(zip(self.base_lrs_, self.max_lrs)):
            if lo < 0:
                raise ValueError(f"base_lr must be >= 0, got {lo} (param group {i})")
            if lo > hi:
                raise ValueError(
                    f"base_lr ({lo}) is above max_lr ({hi}) for param group {i}: base_lr is the low end of the "
                    "cycle; swap them, or run dawnet.training.lr_find to choose both"
                )
        self.momentum = None
        self.use_beta1 = False
        if momentum is not None:
            if (not isinstance(momentum, Sequence) or len(momentum) != 2
                    or not all(isinstance(m, numbers.Real) and 0 <= m < 1 for m in momentum)):
                raise ValueError(
                    "momentum must be None or a pair (momentum at base_lr, momentum at max_lr) of numbers in "
                    f"[0, 1), e.g. (0.95, 0.85); got {momentum!r}"
                )
            if "momentum" in optimizer.defaults:
                self.use_beta1 = False
            elif "betas" in optimizer.defaults:
                self.use_beta1 = True
            else:
                raise ValueError(
                    f"{type(optimizer).__name__} has neither 'momentum' nor 'betas' to cycle; "
                    "pass momentum=None"
                )
            self.momentum = (float(momentum[0]), float(momentum[1]))
        # The schedule defines each group's starting lr; a resume (last_epoch >= 0) needs no prior
        # 'initial_lr' in the optimizer because the bounds are given here.
        for group, lo in zip(optimizer.param_groups, self.base_lrs_):
            group["initial_lr"] = lo

    # -- the two formulas ------------------------------------------------------------------------

    def lr_at(self, t: int) -> list[float]:
        """The closed-form lr of every param group at schedule index ``t`` (used by optimizer step t + 1)."""
        raise NotImplementedError

    def _fraction_at(self, t: int) -> float:
        """Where the lr sits between base_lr (0) and max_lr (1) at index t; drives the momentum."""
        raise NotImplementedError

    def momentum_at(self, t: int) -> float | None:
        """The momentum (or Adam's beta1) at index ``t``: high at base_lr, low at max_lr; None when not cycled."""
        if self.momentum is None:
            return None
        hi, lo = self.momentum
        return hi - (hi - lo) * self._fraction_at(t)

    def get_lr(self) -> list[float]:
        """Chainable form: each group's current lr times ``lr_at(t) / lr_at(t - 1)``."""
        if not self._get_lr_called_within_step:
            warnings.warn("To get the last learning rate computed by the scheduler, please use `get_last_lr()`.",
                          UserWarning, stacklevel=2)
        t = self.last_epoch
        if self._is_initial or t <= 0:
            return self.lr_at(t)  # fresh start or rebuilt with last_epoch: the closed form is exact
        previous, current = self.lr_at(t - 1), self.lr_at(t)
        return [
            group["lr"] * (cur / prev) if prev != 0 else cur
            for group, prev, cur in zip(self.optimizer.param_groups, previous, current)
        ]

    def _get_closed_form_lr(self) -> list[float]:
        return self.lr_at(self.last_epoch)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        self._apply_momentum()

    def _apply_momentum(self) -> None:
        m = self.momentum_at(self.last_epoch)
        if m is None:
            return
        for group in self.optimizer.param_groups:
            if self.use_beta1:
                group["betas"] = (m, *group["betas"][1:])
            else:
                group["momentum"] = m

    # -- exact resume ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything but the optimizer (plain numbers and lists: safe for ``torch.load(weights_only=True)``)."""
        return copy.deepcopy(super().state_dict())

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the schedule and write its lr and momentum into the optimizer.

        Writing them back makes the resume exact in either loading order: loading the optimizer afterwards
        sets the same values again, and loading it before (then building this schedule, whose constructor
        resets the lr) is repaired here.
        """
        unknown = {"base_lrs_", "max_lrs", "last_epoch"} - set(state_dict)
        if unknown:
            raise ValueError(
                f"not a {type(self).__name__} state dict: missing {sorted(unknown)}; pass the dict that "
                f"{type(self).__name__}.state_dict() returned"
            )
        super().load_state_dict(copy.deepcopy(state_dict))
        if len(self._last_lr) != len(self.optimizer.param_groups):
            raise ValueError(
                f"the saved schedule has {len(self._last_lr)} param groups but the optimizer has "
                f"{len(self.optimizer.param_groups)}; load it into an optimizer built the same way"
            )
        for group, lr, lo in zip(self.optimizer.param_groups, self._last_lr, self.base_lrs_):
            group["lr"] = lr
            group["initial_lr"] = lo
        self._apply_momentum()

    # -- minima and plotting ---------------------------------------------------------------------

    def _is_minimum_index(self, t: int) -> bool:
        raise NotImplementedError

    def _minimum_indices(self, until: int) -> list[int]:
        raise NotImplementedError

    def _default_until(self) -> int:
        raise NotImplementedError

    def minima(self, until: int | None = None) -> list[int]:
        """Step counts ``n`` (as in ``agent.step``) after which the weights sit at an LR minimum.

        The n-th optimizer step used ``lr_at(n - 1)``, the lowest lr of its cycle (the end of a flat base,
        or the end of the final annihilation). ``until`` bounds the list (default: see the subclass).
        """
        until = self._default_until() if until is None else int(until)
        return [t + 1 for t in self._minimum_indices(until - 1)]

    def at_minimum(self) -> bool:
        """True right after the optimizer step that used a minimum lr (``last_epoch`` is in :meth:`minima`)."""
        return self._is_minimum_index(self.last_epoch - 1)

    def plot(self, steps: int | None = None, ax=None):
        """Draw the lr (and momentum, on a linked panel below) over ``steps`` optimizer steps; returns a Figure.

        Computed from the closed form, so it touches neither the optimizer nor the schedule's position.
        Minima are marked with dots.
        """
        from dawnet.history_plot import new_figure

        steps = self._default_until() if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        xs = list(range(1, steps + 1))
        lrs = [self.lr_at(n - 1) for n in xs]
        with_momentum = self.momentum is not None
        if ax is None:
            fig, axes = new_figure(2 if with_momentum else 1, height_ratios=[2, 1] if with_momentum else None)
            ax = axes[0]
        else:
            fig, axes = ax.figure, [ax]
        for g in range(len(lrs[0])):
            label = f"lr (group {g})" if len(lrs[0]) > 1 else "lr"
            ax.plot(xs, [row[g] for row in lrs], label=label, lw=1.5)
        marks = self.minima(steps)
        if marks:
            ax.plot(marks, [lrs[n - 1][0] for n in marks], "o", ms=4, color="C3", label="minimum (snapshot)")
        ax.set_ylabel("learning rate")
        ax.set_title(type(self).__name__)
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
        if with_momentum and len(axes) > 1:
            axes[1].plot(xs, [self.momentum_at(n - 1) for n in xs], color="C2", lw=1.5)
            axes[1].set_ylabel("beta1" if self.use_beta1 else "momentum")
            axes[1].grid(alpha=0.3)
        axes[-1].set_xlabel("optimizer step")
        return fig


class CyclicalLR(_CyclicSchedule):
    """Cyclical learning rate (Smith, "Cyclical Learning Rates for Training Neural Networks", 1506.01186).

    The lr climbs linearly from ``base_lr`` to ``max_lr`` over ``step_size`` optimizer steps and back down
    over the next ``step_size``, forever. ``step_size`` is in iterations; the paper recommends 2-10x the
    iterations of an epoch. Changes from outside the scheduler (another scheduler's factor) are kept.

    Args:
        optimizer: the wrapped optimizer.
        base_lr: low end of the cycle, a float or one per param group (run ``lr_find`` to choose).
        max_lr: high end of the cycle, a float or one per param group; must be >= base_lr.
        step_size: optimizer steps in half a cycle (>= 1).
        mode: ``"triangular"`` (constant amplitude), ``"triangular2"`` (amplitude halves every cycle) or
            ``"exp_range"`` (amplitude times ``gamma ** t``).
        gamma: decay of ``exp_range`` per optimizer step, in (0, 1] (default 1.0).
        momentum: None (default), or ``(at base_lr, at max_lr)``, e.g. ``(0.95, 0.85)``, cycled inversely.
        last_epoch: index of the last step when rebuilding for a resume (default -1: a fresh start).

    Example:
        >>> # lr per optimizer step 1..9: 0.1, 0.55, 1.0, 0.55, 0.1, 0.55, 1.0, 0.55, 0.1
        >>> # minima() -> [5, 9]: after 5 and 9 steps the last step used base_lr
        >>> sched = CyclicalLR(opt, base_lr=0.1, max_lr=1.0, step_size=2)
        >>> for batch in data:
        >>>     train_step(batch)   # optimizer.step() inside
        >>>     sched.step()
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        step_size: int,
        mode: str = "triangular",
        gamma: float = 1.0,
        momentum: tuple[float, float] | None = None,
        last_epoch: int = -1,
    ) -> None:
        _check_int("step_size", step_size, minimum=1)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not isinstance(gamma, numbers.Real) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (the exp_range decay per step), got {gamma!r}")
        self.step_size = int(step_size)
        self.mode = mode
        self.gamma = float(gamma)
        self._setup_bounds(optimizer, base_lr, max_lr, momentum)
        super().__init__(optimizer, last_epoch)

    def _fraction_at(self, t: int) -> float:
        t = max(int(t), 0)
        period = 2 * self.step_size
        r = t % period
        x = r / self.step_size if r <= self.step_size else (period - r) / self.step_size
        if self.mode == "triangular2":
            x /= 2.0 ** (t // period)
        elif self.mode == "exp_range":
            x *= self.gamma**t
        return x

    def lr_at(self, t: int) -> list[float]:
        x = self._fraction_at(t)
        return [lo + (hi - lo) * x for lo, hi in zip(self.base_lrs_, self.max_lrs)]

    def _is_minimum_index(self, t: int) -> bool:
        return t >= 1 and t % (2 * self.step_size) == 0

    def _minimum_indices(self, until: int) -> list[int]:
        return list(range(2 * self.step_size, until + 1, 2 * self.step_size))

    def _default_until(self) -> int:
        """Through the end of the cycle in progress (at least three cycles, so a fresh plot shows the shape)."""
        period = 2 * self.step_size
        return max(self.last_epoch // period + 1, 3) * period + 1


class SuperConvergence(_CyclicSchedule):
    """Super-convergence (Smith and Topin 1708.07120; Smith 1803.09820): cycles, then annihilation.

    ``cycles`` triangular cycles between ``base_lr`` and ``max_lr`` (``step_size`` steps up, ``step_size``
    down), with ``flat_steps`` at ``base_lr`` between peaks (the flat-base variant, each flat ending at a
    snapshot), then a final phase of ``annihilate_steps`` that takes the lr from ``base_lr`` down to
    ``annihilate_to``, several orders of magnitude lower, where it stays (the schedule never refuses to
    step past its end). Momentum, when given, is cycled inversely to the lr and held at its high value on
    flats and during annihilation. ``cycles=1`` with no flat is the "1cycle" policy.

    Args:
        optimizer: the wrapped optimizer.
        base_lr: low end of the cycles, a float or one per param group (``lr_find``: max_lr / 3 to / 4).
        max_lr: peak lr, a float or one per param group; must be >= base_lr.
        step_size: optimizer steps in half a cycle (>= 1).
        cycles: number of triangular cycles (default 1).
        flat_steps: steps held at base_lr between peaks (default 0).
        annihilate_steps: length of the final phase (default: ``step_size``; 0 ends at base_lr).
        annihilate_to: final lr (default ``base_lr / 1000``); must be <= base_lr.
        annihilate_mode: ``"linear"`` (the paper) or ``"exp"`` (equal time per decade).
        momentum: ``(at base_lr, at max_lr)`` (default ``(0.95, 0.85)``), or None to leave it alone.
        last_epoch: index of the last step when rebuilding for a resume (default -1: a fresh start).

    Example:
        >>> # base 0.1, max 1.0, step_size 2, cycles 2, flat 1, annihilate 2 steps to 0.001:
        >>> # lr per optimizer step 1..11: 0.1, 0.55, 1.0, 0.55, 0.1, 0.1, 0.55, 1.0, 0.55, 0.0505, 0.001
        >>> # minima() -> [6, 11]: the end of the flat base, and the end of annihilation
        >>> sched = SuperConvergence(opt, 0.1, 1.0, step_size=2, cycles=2, flat_steps=1,
        >>>                          annihilate_steps=2, annihilate_to=0.001)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        step_size: int,
        cycles: int = 1,
        flat_steps: int = 0,
        annihilate_steps: int | None = None,
        annihilate_to: float | Sequence[float] | None = None,
        annihilate_mode: str = "linear",
        momentum: tuple[float, float] | None = (0.95, 0.85),
        last_epoch: int = -1,
    ) -> None:
        _check_int("step_size", step_size, minimum=1)
        _check_int("cycles", cycles, minimum=1)
        _check_int("flat_steps", flat_steps, minimum=0)
        annihilate_steps = step_size if annihilate_steps is None else annihilate_steps
        _check_int("annihilate_steps", annihilate_steps, minimum=0)
        if annihilate_mode not in ("linear", "exp"):
            raise ValueError(f"annihilate_mode must be 'linear' or 'exp', got {annihilate_mode!r}")
        self.step_size = int(step_size)
        self.flat_steps = int(flat_steps)
        self.annihilate_steps = int(annihilate_steps)
        self.annihilate_mode = annihilate_mode
        # [start index, cycles] per run of cycles + annihilation; extend() appends or grows the last one.
        self.segments: list[list[int]] = [[0, int(cycles)]]
        self._setup_bounds(optimizer, base_lr, max_lr, momentum)
        if annihilate_to is None:
            self.annihilate_lrs = [lo / 1000.0 for lo in self.base_lrs_]
        else:
            self.annihilate_lrs = _per_group("annihilate_to", optimizer, annihilate_to)
        for i, (to, lo) in enumerate(zip(self.annihilate_lrs, self.base_lrs_)):
            if not 0 <= to <= lo:
                raise ValueError(
                    f"annihilate_to must be in [0, base_lr] (the final phase goes below base_lr); got {to} "
                    f"with base_lr {lo} (param group {i})"
                )
            if annihilate_mode == "exp" and (to <= 0 or lo <= 0):
                raise ValueError("annihilate_mode='exp' needs base_lr > 0 and annihilate_to > 0; "
                                 "use annihilate_mode='linear' to end at 0")
        super().__init__(optimizer, last_epoch)

    # -- geometry --------------------------------------------------------------------------------

    def _cycle_length(self) -> int:
        return 2 * self.step_size + self.flat_steps

    def _phase_length(self, cycles: int) -> int:
        return cycles * 2 * self.step_size + (cycles - 1) * self.flat_steps

    def _locate(self, t: int) -> tuple[int, int, int, int | None]:
        """(segment index, u = t - start, cycles, next segment start or None) for index t."""
        k = 0
        for i, (start, _) in enumerate(self.segments):
            if start <= t:
                k = i
        start, cycles = self.segments[k]
        nxt = self.segments[k + 1][0] if k + 1 < len(self.segments) else None
        return k, t - start, cycles, nxt

    def _shape(self, t: int) -> tuple[str, float]:
        """("cycle", fraction of the way to max_lr) or ("annihilate", fraction of the way to annihilate_to)."""
        _, u, cycles, _ = self._locate(max(int(t), 0))
        phase = self._phase_length(cycles)
        if u < phase:
            r = u % self._cycle_length()
            s = self.step_size
            x = r / s if r <= s else ((2 * s - r) / s if r < 2 * s else 0.0)
            return "cycle", x
        if self.annihilate_steps == 0:
            return "cycle", 0.0
        return "annihilate", min((u - phase + 1) / self.annihilate_steps, 1.0)

    def _fraction_at(self, t: int) -> float:
        kind, x = self._shape(t)
        return x if kind == "cycle" else 0.0

    def lr_at(self, t: int) -> list[float]:
        kind, x = self._shape(t)
        if kind == "cycle":
            return [lo + (hi - lo) * x for lo, hi in zip(self.base_lrs_, self.max_lrs)]
        if self.annihilate_mode == "exp":
            return [lo * (to / lo) ** x for lo, to in zip(self.base_lrs_, self.annihilate_lrs)]
        return [lo + (to - lo) * x for lo, to in zip(self.base_lrs_, self.annihilate_lrs)]

    @property
    def total_steps(self) -> int:
        """Optimizer steps until the lr reaches its final value (it stays there afterwards)."""
        start, cycles = self.segments[-1]
        return start + self._phase_length(cycles) + max(self.annihilate_steps, 1)

    def _segment_minima(self, k: int) -> list[int]:
        start, cycles = self.segments[k]
        cycle, phase = self._cycle_length(), self._phase_length(cycles)
        ends = [start + j * cycle for j in range(1, cycles)]
        ends.append(start + phase + self.annihilate_steps - 1 if self.annihilate_steps else start + phase)
        if k + 1 < len(self.segments):
            ends = [t for t in ends if t < self.segments[k + 1][0]]
        return ends

    def _is_minimum_index(self, t: int) -> bool:
        if t < 1:
            return False
        k, _, _, _ = self._locate(t)
        return t in self._segment_minima(k)

    def _minimum_indices(self, until: int) -> list[int]:
        return [t for k in range(len(self.segments)) for t in self._segment_minima(k) if t <= until]

    def _default_until(self) -> int:
        return max(self.total_steps, self.last_epoch)

    def extend(self, cycles: int) -> None:
        """Add ``cycles`` more cycles, e.g. to a schedule resumed from a checkpoint.

        While the cycles are still running, they are appended and the annihilation moves later. Once the
        annihilation has begun (or ended), a new run starts at the next step: ``cycles`` cycles from
        base_lr, then another annihilation. Steps already taken keep their lr.
        """
        _check_int("cycles", cycles, minimum=1)
        start, current = self.segments[-1]
        nxt = self.last_epoch + 1
        if nxt - start < self._phase_length(current):
            self.segments[-1][1] = current + int(cycles)
        else:
            self.segments.append([nxt, int(cycles)])


def _per_group(name: str, optimizer: Optimizer, value) -> list[float]:
    """One float per param group from a number or a sequence; ValueError on length or type mismatch."""
    n = len(optimizer.param_groups)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        values = [float(value)] * n
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values but the optimizer has {n} param groups")
        values = [float(v) for v in value]
    else:
        raise ValueError(f"{name} must be a number or one number per param group, got {value!r}")
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    return values


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
