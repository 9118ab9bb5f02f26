"""``CostReport``: what ``dawnet.cost.count`` found, as totals, a per-module table, a dict and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["CostReport", "ModuleCost", "OpStats", "format_count"]

_UNITS = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_count(n: float, digits: int = 2) -> str:
    """A count with a decimal unit: 1234 -> '1.23 K', 5.6e9 -> '5.60 G', 12 -> '12'."""
    for scale, unit in _UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{int(n)}" if float(n).is_integer() else f"{n:.{digits}f}"


@dataclass
class OpStats:
    """Calls and cost of one aten op (all overloads) in one phase."""

    calls: int = 0
    macs: int = 0
    elementwise_flops: int = 0


@dataclass
class ModuleCost:
    """One module's share: its own parameters and every op that ran inside it (children included)."""

    name: str
    type: str
    depth: int
    params: int
    trainable_params: int
    calls: int = 0
    macs: int = 0
    elementwise_flops: int = 0
    flops: int = 0
    backward_macs: int = 0
    backward_elementwise_flops: int = 0
    backward_flops: int = 0


@dataclass
class CostReport:
    """Cost of one forward (and optionally backward) pass of a model on the inputs given.

    ``macs`` counts multiply-accumulates of conv, linear, the matmul family, RNN gate products and
    attention products. ``flops`` is ``2 * macs``, plus ``elementwise_flops`` when the count was made
    with ``elementwise=True``. ``backward_*`` are the same for the backward ops autograd ran (zero
    unless ``backward=True``). Parameters are counted once even when shared.
    """

    model: str
    inputs: list[str]
    device: str
    elementwise: bool
    macs: int
    elementwise_flops: int
    flops: int
    backward_macs: int
    backward_elementwise_flops: int
    backward_flops: int
    params: int
    trainable_params: int
    frozen_params: int
    buffers: int
    modules: list[ModuleCost] = field(default_factory=list)
    by_operator: dict[str, OpStats] = field(default_factory=dict)
    backward_by_operator: dict[str, OpStats] = field(default_factory=dict)
    unknown_ops: dict[str, int] = field(default_factory=dict)

    @property
    def total_flops(self) -> int:
        """Forward plus backward flops: the cost of one training step's compute (without the optimizer)."""
        return self.flops + self.backward_flops

    @property
    def per_module(self) -> dict[str, dict]:
        """Per-module rows keyed by qualified name ('' is the whole model)."""
        return {m.name: asdict(m) for m in self.modules}

    def module(self, name: str) -> ModuleCost:
        """The row of the module with qualified name ``name`` ('' for the whole model)."""
        for m in self.modules:
            if m.name == name:
                return m
        names = ", ".join(repr(m.name) for m in self.modules[:12])
        raise KeyError(f"no module named {name!r} in the report; names start with: {names}")

    def to_dict(self) -> dict:
        """Everything as plain Python types (JSON-able)."""
        d = asdict(self)
        del d["modules"]  # keyed by name instead, in module order
        d["per_module"] = self.per_module
        d["total_flops"] = self.total_flops
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, depth: int | None = 2, units: bool = True) -> str:
        """A per-module table down to ``depth`` (0: whole model only, None: every module)."""
        fmt = format_count if units else (lambda n: str(int(n)))
        has_bwd = self.backward_flops > 0
        headers = ["Module", "Type", "Params", "MACs", "FLOPs"] + (["Bwd FLOPs"] if has_bwd else []) + ["% FLOPs"]
        rows = []
        for m in self.modules:
            if depth is not None and m.depth > depth:
                continue
            label = ("  " * m.depth) + (m.name.rsplit(".", 1)[-1] if m.name else "(model)")
            share = 100.0 * m.flops / self.flops if self.flops else 0.0
            row = [label, m.type, fmt(m.params), fmt(m.macs), fmt(m.flops)]
            if has_bwd:
                row.append(fmt(m.backward_flops))
            row.append(f"{share:.1f}")
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

        def line(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        conv = "flops = 2 x MACs" + (" + element-wise" if self.elementwise else "")
        title = f"Cost of {self.model} on {', '.join(self.inputs) or 'no tensor input'} ({self.device}; {conv})"
        out = [title, line(headers), "  ".join("-" * w for w in widths), *map(line, rows)]
        out.append(
            f"total: {fmt(self.macs)} MACs, {fmt(self.flops)} FLOPs forward"
            + (f", {fmt(self.backward_flops)} FLOPs backward" if has_bwd else "")
            + f"; params {fmt(self.params)} ({fmt(self.trainable_params)} trainable, "
            f"{fmt(self.frozen_params)} frozen), buffers {fmt(self.buffers)}"
        )
        if self.unknown_ops:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(self.unknown_ops.items()))
            out.append(f"NOT COUNTED (no formula for these ops): {listed}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()
