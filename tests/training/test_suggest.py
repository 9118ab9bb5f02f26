"""The suggestion rule on recorded loss-vs-lr curves of real runs (tests/data/lr_curves.json), noisy included.

The curves are LR range tests (lr_find defaults) of three small real tasks -- scikit-learn digits with a CNN,
the MNIST 5k sample with an MLP under SGD and under Adam -- at two seeds, with 100- and 200-step sweeps and
batch-size-8 sweeps (noisy). Next to them is the best fixed lr of a grid (4 per decade, 3 epochs, mean
validation accuracy), written by ``benchmarks/lr_find_vs_grid.py --record``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from dawnet.training import LRFinderResult
from dawnet.training.lr_finder import smooth_curve, suggest_lrs

DATA = json.loads((Path(__file__).resolve().parents[1] / "data" / "lr_curves.json").read_text())
CURVES = DATA["curves"]
IDS = [f"{c['task']}-s{c['seed']}-n{c['num_iter']}-b{c['batch_size']}" for c in CURVES]


def _suggest(lrs, losses):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return suggest_lrs(lrs, losses)


def test_the_set_holds_noisy_and_diverging_curves():
    assert len(CURVES) >= 12 and len({c["task"] for c in CURVES}) >= 3
    assert any(c["batch_size"] <= 8 for c in CURVES)
    assert all(c["stop_reason"] != "completed" for c in CURVES)  # every sweep reached its blow-up


@pytest.mark.parametrize("curve", CURVES, ids=IDS)
def test_max_lr_lands_within_3x_of_the_best_fixed_lr(curve):
    base, top, details = _suggest(curve["lrs"], curve["losses"])
    assert base == pytest.approx(top / 3.5)
    # The claim is for lr_find's default 100-step sweep. A 200-step sweep spends twice the steps at each lr,
    # so the loss falls earlier and the suggestion moves down: measured 0.29x and 0.32x of the best for the
    # Adam task (and within 3x for the SGD tasks); it is held to 3.5x.
    factor = 3.0 if curve["num_iter"] == 100 else 3.5
    assert abs(math.log(top / curve["best_fixed_lr"])) <= math.log(factor), (top, curve["best_fixed_lr"])
    assert details["steepest_lr"] <= top <= details["turn_lr"]  # after the steepest descent, before the turn
    assert top < curve["lrs"][-1]  # below where the sweep blew up


def test_recorded_curves_are_conclusive():
    for curve in CURVES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            suggest_lrs(curve["lrs"], curve["losses"])
        # Batch-64/32 sweeps fall, turn and stand out of their noise. Batch-8 sweeps may be flagged as marginal:
        # measured, the MNIST-SGD seed-1 one falls by 2.6 noise levels (its max_lr is still 0.81x the best).
        if curve["batch_size"] > 8:
            assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("curve", CURVES, ids=IDS)
def test_noise_moves_the_suggestion_little_or_is_reported(curve):
    """Extra per-step noise (5% and 10%) either leaves max_lr within 2x or the rule warns that it is unreliable
    (the curve falls too little for its noise, or no longer falls at all)."""
    _, clean, _ = _suggest(curve["lrs"], curve["losses"])
    g = torch.Generator().manual_seed(0)
    for sigma in (0.05, 0.1):
        for _ in range(3):
            noise = torch.exp(sigma * torch.randn(len(curve["losses"]), generator=g)).tolist()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, noisy, _ = suggest_lrs(curve["lrs"], [v * n for v, n in zip(curve["losses"], noise)])
            unreliable = any("unreliable" in str(w.message) or "never falls" in str(w.message) for w in caught)
            assert unreliable or abs(math.log(noisy / clean)) <= math.log(2), (sigma, noisy, clean)


def test_rule_is_invariant_to_loss_scale_and_moves_with_lr_scale():
    c = CURVES[0]
    _, top, _ = _suggest(c["lrs"], c["losses"])
    assert _suggest(c["lrs"], [3 * v + 1 for v in c["losses"]])[1] == pytest.approx(top)
    assert _suggest([10 * v for v in c["lrs"]], c["losses"])[1] == pytest.approx(10 * top)


def test_smoother_has_no_lag_and_exact_slope_on_a_line():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    line = [2.0 - 0.3 * math.log10(v) for v in lrs]
    values, slopes = smooth_curve(lrs, line)
    assert values == pytest.approx(line, abs=1e-9)
    assert slopes == pytest.approx([-0.3] * 100, abs=1e-9)


def test_warns_when_the_curve_never_falls_or_never_turns():
    lrs = [10 ** (-5 + 5 * i / 59) for i in range(60)]
    with pytest.warns(UserWarning, match="never falls"):
        base, top, _ = suggest_lrs(lrs, [1 + v for v in lrs])
    assert top == lrs[0]
    with pytest.warns(UserWarning, match="not turned"):
        suggest_lrs(lrs, [1 / (1 + 1e4 * v) for v in lrs])


def test_bad_input():
    with pytest.raises(ValueError, match="at least 5"):
        suggest_lrs([1e-3, 1e-2, 1e-1], [1.0, 0.9, float("nan")])
    with pytest.raises(ValueError, match="length"):
        suggest_lrs([1e-3, 1e-2], [1.0])
    with pytest.raises(ValueError, match="divisor"):
        suggest_lrs([1e-3] * 6, [1.0] * 6, divisor=0.5)


def test_metric_curves_rank_higher_as_better():
    lrs = [10 ** (-5 + 5 * i / 79) for i in range(80)]
    acc = [0.1 + 0.85 / (1 + (1e-3 / v) ** 2) - (0.8 if v > 0.2 else 0.0) for v in lrs]  # rises, then collapses
    result = LRFinderResult(lrs=lrs, losses=[1.0] * 80, smoothed=[1.0] * 80, values=acc, ranked_by="accuracy",
                            higher_better=True)
    base, top = result.suggest()
    assert 1e-3 <= top <= 0.2 and result.best_lr() <= 0.2


def test_result_suggests_from_the_raw_curve_not_the_lagging_average():
    c = next(c for c in CURVES if c["batch_size"] <= 8)
    avg, ema = 0.0, []
    for i, v in enumerate(c["losses"]):
        avg = 0.98 * avg + 0.02 * v
        ema.append(avg / (1 - 0.98 ** (i + 1)))
    result = LRFinderResult(lrs=c["lrs"], losses=c["losses"], smoothed=ema)
    assert result.suggest() == pytest.approx(_suggest(c["lrs"], c["losses"])[:2])
    lagged = _suggest(c["lrs"], ema)[1]
    assert result.suggest()[1] < lagged  # the moving average lags towards higher lrs
