"""Metrics the Agent aggregates over an epoch: each gives ``(total, count)`` per batch, so averages are exact.

A metric is a callable ``(predictions, targets) -> float | (total, count)``. A float is taken as a mean over the
batch and weighted by its size; a ``(total, count)`` pair is summed as it is, which keeps ratios such as character
error rate exact (total edits over total characters), also when summed over DDP ranks.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence

import torch

__all__ = ["accuracy", "mean_absolute_error", "mean_squared_error", "resolve_metrics", "metric_names", "lookup_metric",
           "METRICS", "TASK_METRICS"]

Metric = Callable[..., "float | tuple[float, float]"]


def accuracy(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Fraction of correct class predictions; ``predictions`` are (N, C) scores or (N,) class indices."""
    labels = predictions.argmax(dim=1) if predictions.dim() == targets.dim() + 1 else predictions
    if labels.shape != targets.shape:
        raise ValueError(f"accuracy needs predictions of shape (N, C) or (N,) for targets {tuple(targets.shape)}, "
                         f"got {tuple(predictions.shape)}")
    return float((labels == targets).sum()), float(targets.numel())


def mean_absolute_error(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean absolute error over all elements."""
    return float((predictions.detach() - targets).abs().sum()), float(targets.numel())


def mean_squared_error(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean squared error over all elements."""
    return float(((predictions.detach() - targets) ** 2).sum()), float(targets.numel())


METRICS: dict[str, Metric] = {  # name -> metric; names are what checkpoints store
    "accuracy": accuracy,
    "mae": mean_absolute_error,
    "mse": mean_squared_error,
}


TASK_METRICS: dict[str, str] = {  # name -> "module:function" of the task metrics dawnet defines (imported on demand)
    "cer": "dawnet.ocr.metrics:batch_cer",
    "wer": "dawnet.ocr.metrics:batch_wer",
    "line_accuracy": "dawnet.ocr.metrics:batch_line_accuracy",
}
_FORMER_LOCATIONS = {  # where checkpoints of earlier versions found task metrics -> their table name
    "dawnet.ocr.agents:cer": "cer", "dawnet.ocr.agents:wer": "wer", "dawnet.ocr.agents:line_accuracy": "line_accuracy",
}


def lookup_metric(name: str) -> Metric | None:
    """The metric a checkpoint names: a name of :data:`METRICS` or :data:`TASK_METRICS`, or the
    ``module:function`` location of one of those; None for anything else (nothing else is imported)."""
    if name in METRICS:
        return METRICS[name]
    location = TASK_METRICS.get(_FORMER_LOCATIONS.get(name, name))
    if location is None and name in TASK_METRICS.values():
        location = name
    if location is None:
        return None
    module, _, attr = location.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_metrics(metrics: None | str | Sequence | Mapping) -> dict[str, Metric]:
    """Turn ``None``, a name, a list of names/callables or a dict into ``{name: callable}``."""
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, Mapping):
        metrics = {m if isinstance(m, str) else getattr(m, "__name__", type(m).__name__): m for m in metrics}
    out = {}
    for name, metric in metrics.items():
        if isinstance(metric, str):
            metric = _lookup(metric)
        if not callable(metric):
            raise TypeError(f"metric {name!r} must be a callable (predictions, targets) or a metric name, "
                            f"got {type(metric).__name__}")
        out[str(name)] = metric
    return out


def metric_names(metrics: Mapping[str, Metric]) -> dict[str, str | None]:
    """How each metric is stored in a checkpoint: its table name, else ``module:qualname`` (None if neither).

    Only table names load back without ``trust_code``; a ``module:qualname`` of the user's code needs it.
    """
    builtin = {id(f): n for n, f in METRICS.items()}
    task = {location: n for n, location in TASK_METRICS.items()}
    out = {}
    for name, metric in metrics.items():
        location = f"{getattr(metric, '__module__', None)}:{getattr(metric, '__qualname__', '<')}"
        if id(metric) in builtin:
            out[name] = builtin[id(metric)]
        elif location in task:
            out[name] = task[location]
        elif getattr(metric, "__module__", None) and "<" not in getattr(metric, "__qualname__", "<"):
            out[name] = location
        else:
            out[name] = None
    return out


def _lookup(name: str) -> Metric:
    found = lookup_metric(name)
    if found is None:
        raise ValueError(f"unknown metric {name!r}; metric names: {', '.join([*METRICS, *TASK_METRICS])}. Pass a "
                         "callable (predictions, targets) -> float or (total, count) instead")
    return found


def batch_value(metric: Metric, predictions, targets, batch_size: int) -> tuple[float, float]:
    """Run a metric on one batch and return ``(total, count)``."""
    value = metric(predictions, targets)
    if isinstance(value, tuple):
        total, count = value
        return float(total), float(count)
    return float(value) * batch_size, float(batch_size)
