"""What a model costs: exact MACs/FLOPs (RNNs and attention included), parameters, hardware use.

``count(model, *inputs)`` runs the model once and returns a ``CostReport`` (per-module table,
dict, JSON); ``peak_flops`` and ``utilization`` relate measured step times to the machine's limit.
"""

from dawnet.cost.counter import count, param_counts
from dawnet.cost.handles import HANDLES, OpCost
from dawnet.cost.hardware import peak_flops, utilization
from dawnet.cost.report import CostReport, ModuleCost, OpStats, format_count

__all__ = [
    "count",
    "param_counts",
    "CostReport",
    "ModuleCost",
    "OpStats",
    "OpCost",
    "HANDLES",
    "format_count",
    "peak_flops",
    "utilization",
]
