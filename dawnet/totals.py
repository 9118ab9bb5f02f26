"""Running ``(total, count)`` sums of losses and metrics, and their mean over every DDP rank."""

from __future__ import annotations

from dawnet import parallel

__all__ = ["EvaluationState", "add_total", "reduce_totals"]


def add_total(totals: dict[str, list[float]], name: str, total: float, count: float) -> None:
    """Add ``total`` over ``count`` items to ``totals[name]`` (a ``[total, count]`` list, created on first use)."""
    entry = totals.get(name)
    if entry is None:
        totals[name] = [float(total), float(count)]
    else:
        entry[0] += total
        entry[1] += count


def reduce_totals(totals: dict[str, list[float]]) -> dict[str, float]:
    """``{name: total / count}`` with the sums of every DDP rank (NaN where the count is 0); the same on every rank."""
    names = sorted(totals)
    flat = parallel.all_reduce_sum([x for n in names for x in totals[n]])
    return {n: (flat[2 * i] / flat[2 * i + 1] if flat[2 * i + 1] else float("nan")) for i, n in enumerate(names)}


class EvaluationState:
    """What one ``Agent.evaluate`` accumulates: ``totals`` (name -> ``[total, count]``), ``batches``, ``samples``.

    Agents whose metrics are not sums (detection mAP) keep their own accumulators as extra attributes
    (``state.preds = []`` in ``evaluation_state``) and turn them into numbers in ``finish_evaluation``.
    """

    def __init__(self):
        self.totals: dict[str, list[float]] = {}
        self.batches = 0
        self.samples = 0

    def add(self, name: str, total: float, count: float) -> None:
        """Add ``total`` over ``count`` items to the running sum of ``name``."""
        add_total(self.totals, name, total, count)
