"""``count``: exact MACs/FLOPs of a model, seen at the aten dispatch level and attributed to modules.

Counting happens in a ``TorchDispatchMode``, so every op the model runs is seen -- functional calls,
``@``, einsum, in-place ops -- including PyTorch's fused kernels (``mkldnn_rnn_layer``, the SDPA
variants, the fused multi-head-attention and encoder fast paths), which have their own formulas in
``dawnet.cost.handles``. Module hooks (forward) and gradient hooks (backward) say which modules
were running when each op ran.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping

import torch
from torch import nn
from torch.autograd.graph import register_multi_grad_hook
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from dawnet.cost.handles import Handle, classify
from dawnet.cost.report import CostReport, ModuleCost, OpStats

__all__ = ["count", "param_counts", "preserve_state"]


class _ModuleTracker:
    """Which modules are running: a stack in forward, a set in backward (grad hooks).

    The forward hooks are global ones (removed by ``close``) that react only to the counted model's
    modules: hooks attached to a module would switch off PyTorch's fused fast paths (the encoder
    layer checks for them), and the count must see the path the model really takes.
    """

    def __init__(self, model: nn.Module, backward: bool) -> None:
        self.active: tuple[str, ...] = ()
        self.backward = backward
        self._names = {id(m): name for name, m in model.named_modules()}
        self._modules = list(model.modules())  # keep ids valid while counting
        self._bw: dict[str, int] = {}
        self._grad_handles: list = []
        self._out_hooks: dict[int, list] = {}  # id(output tensor) -> [(module name, hook handle)]
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]

    def _pre(self, module, args):
        name = self._names.get(id(module))
        if name is None:
            return
        self.active = (*self.active, name)
        if self.backward:
            self._watch(args, lambda *_: self._bw_exit(name))

    def _post(self, module, args, output):
        name = self._names.get(id(module))
        if name is None:
            return
        if self.active and self.active[-1] == name:
            self.active = self.active[:-1]
        elif name in self.active:  # unbalanced (a child raised): drop it and what it left behind
            self.active = self.active[: self.active.index(name)]
        if self.backward:
            handle, tensors = self._watch(output, lambda *_: self._bw_enter(name))
            for t in tensors:
                self._out_hooks.setdefault(id(t), []).append((name, handle))

    def _watch(self, value, fn):
        tensors = [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor) and t.requires_grad]
        if not tensors or not torch.is_grad_enabled():
            return None, []
        handle = register_multi_grad_hook(tensors, fn)
        self._grad_handles.append(handle)
        return handle, tensors

    # backward: a module's backward starts when its outputs' grads are ready and ends with its inputs'
    def _bw_enter(self, name: str) -> None:
        self._bw[name] = self._bw.get(name, 0) + 1
        self.active = tuple(self._bw)

    def _bw_exit(self, name: str) -> None:
        if name in self._bw:
            self._bw[name] -= 1
            if self._bw[name] <= 0:
                del self._bw[name]
        self.active = tuple(self._bw)

    def start_backward(self, outputs: list[torch.Tensor]) -> None:
        """Backward starts at the model's outputs: the modules that produced them are running.

        Gradient hooks do not fire for the tensors backward starts from, so those modules are
        entered here and their hooks removed.
        """
        self._bw, self.active = {}, ()
        for t in outputs:
            for name, handle in self._out_hooks.pop(id(t), []):
                if handle is not None:
                    handle.remove()
                    self._bw_enter(name)

    def close(self) -> None:
        for h in self._handles + self._grad_handles:
            h.remove()
        self._handles.clear()
        self._grad_handles.clear()
        self.active = ()


class _CountingMode(TorchDispatchMode):
    """Runs every op and records its cost under (phase, active modules, op name)."""

    def __init__(self, tracker: _ModuleTracker, overrides: Mapping[str, Handle | None] | None) -> None:
        super().__init__()
        self.tracker = tracker
        self.overrides = dict(overrides or {})
        self.phase = "forward"
        self.recording = True
        self.records: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.unknown: Counter[str] = Counter()
        self._cache: dict = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps __torch_dispatch__ in torch._disable_dynamo by default, which imports dynamo (8 s
        # on first use); counting runs eagerly, never inside torch.compile, so the wrapper is not needed.
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.recording:
            entry = self._cache.get(func)
            if entry is None:
                entry = self._cache[func] = classify(func, self.overrides)
            kind, handle = entry
            name = func._schema.name.removeprefix("aten::")
            if kind == "unknown":
                self.unknown[name] += 1
                return out
            cost = None
            if handle is not None:
                try:
                    cost = handle(args, kwargs, out)
                except Exception as e:  # noqa: BLE001 - a formula that cannot read this call is reported
                    self.unknown[f"{name} (formula failed: {type(e).__name__}: {e})"] += 1
                    return out
            rec = self.records[(self.phase, self.tracker.active, name)]
            rec[0] += 1
            if cost is not None:
                rec[1] += int(cost.macs)
                rec[2] += int(cost.elementwise)
        return out


@contextlib.contextmanager
def preserve_state(model: nn.Module):
    """Run a block and put back what it may change: train/eval flags, buffers (BatchNorm running
    statistics) and the CPU/CUDA RNG state -- also when the block raises."""
    modes = [(m, m.training) for m in model.modules()]
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers() if b.device.type != "meta"]
    rng_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            yield
    finally:
        with torch.no_grad():
            for buf, saved in saved_buffers:
                if buf.shape == saved.shape:
                    buf.copy_(saved)
        for m, training in modes:
            m.train(training)


def param_counts(model: nn.Module) -> dict[str, int]:
    """All, trainable and frozen parameter elements (shared tensors once) and buffer elements."""
    params = list(model.parameters())  # parameters() already skips shared duplicates
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {"params": total, "trainable_params": trainable, "frozen_params": total - trainable,
            "buffers": sum(b.numel() for b in model.buffers())}


@contextlib.contextmanager
def _outside_inference_mode():
    """Run under no_grad instead of inference_mode: kernels of inference tensors skip the counting mode."""
    if not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def count(model: nn.Module, *inputs, backward: bool = False, elementwise: bool = False,
          device: str | None = None, handles: Mapping[str, Handle | None] | None = None,
          warn_unknown: bool = True, **kwargs) -> CostReport:
    """Count the MACs, FLOPs and parameters of ``model(*inputs, **kwargs)``.

    Convention: ``macs`` are the multiply-accumulates of convolutions, linear layers, the matmul
    family (mm, bmm, addmm, baddbmm, matmul, einsum), RNN/LSTM/GRU gate products and attention
    products (Q K^T and P V, dense even when causal). ``flops = 2 * macs``; with
    ``elementwise=True`` it also includes element-wise work: bias adds, element-wise ops and
    activations (1 per element), normalization, softmax, pooling and interpolation (constants in
    ``dawnet.cost.handles``). Both are exact integers for the batch actually given.

    The model runs once, in its current mode and under the caller's grad mode (so eval + no_grad
    counts PyTorch's fast paths, which have their own formulas). ``backward=True`` also runs autograd
    from every floating output (gradient of ones) and counts the backward ops it really runs into
    ``backward_macs`` / ``backward_flops``; ``.grad`` of the parameters is put back as it was.

    Nothing changes: train/eval flags, buffers (BatchNorm running statistics), parameters, gradients
    and the RNG state are as before, also when the model raises. ``device="meta"`` counts a meta copy
    of the model (no real compute, no memory for activations) where every op has a meta kernel.
    Ops with no formula are listed in ``report.unknown_ops`` with their call counts (and warned
    about), never counted as zero silently. ``handles`` adds or replaces per-op formulas
    (``{"aten::my_op": fn}``; None ignores an op on purpose).

    Example::

        >>> report = count(nn.Linear(8, 4), torch.randn(3, 8))
        >>> report.macs, report.flops  # 3 x 8 x 4
        (96, 192)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count() needs an nn.Module, got {type(model).__name__}")
    if device not in (None, "meta"):
        raise ValueError(f"device={device!r} is not supported: use None (count where the model is) or "
                         "'meta'; to count on another device, move the model and inputs there first")
    target = _meta_copy(model) if device == "meta" else model
    if device == "meta":
        inputs, kwargs = tree_map(_to_meta, (inputs, kwargs))
    tracker = _ModuleTracker(target, backward)
    mode = _CountingMode(tracker, handles)
    try:
        with preserve_state(model), _outside_inference_mode(), mode:
            with torch.enable_grad() if backward else contextlib.nullcontext():
                output = target(*inputs, **kwargs)
            if backward:
                _run_backward(target, inputs, kwargs, output, mode)
    except (RuntimeError, NotImplementedError) as e:
        if device != "meta":
            raise
        raise RuntimeError(f"{type(model).__name__} cannot run on the meta device ({e}); it needs real data "
                           "(e.g. .item() or data-dependent shapes): count with device=None") from e
    finally:
        tracker.close()
    report = _build_report(model, inputs, kwargs, mode, elementwise, device)
    if warn_unknown and report.unknown_ops:
        listed = ", ".join(f"{k} (x{v})" for k, v in sorted(report.unknown_ops.items()))
        warnings.warn(f"dawnet.cost.count: no formula for {listed}; these ops are NOT in the totals. "
                      "Pass handles={'aten::name': fn} to count them, or None to ignore them.", stacklevel=2)
    return report


def _run_backward(model: nn.Module, inputs, kwargs, output, mode: _CountingMode) -> None:
    outs = [t for t in tree_flatten(output)[0]
            if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
    leaves = [p for p in model.parameters() if p.requires_grad]
    leaves += [t for t in tree_flatten((inputs, kwargs))[0] if isinstance(t, torch.Tensor) and t.requires_grad]
    if not outs or not leaves:
        raise ValueError("backward=True needs an output that requires grad and parameters (or inputs) with "
                         "requires_grad=True; unfreeze some parameters or pass inputs that require grad")
    mode.recording = False  # the gradient seeds are not part of the model's cost
    grads = [torch.ones_like(t) for t in outs]
    mode.recording = True
    mode.phase = "backward"
    mode.tracker.start_backward(outs)
    # backward() rather than autograd.grad(): gradient hooks on leaf inputs (module attribution) work
    # only there. The leaves' .grad are swapped out and put back, so nothing accumulates into them.
    saved = [leaf.grad for leaf in leaves]
    try:
        for leaf in leaves:
            leaf.grad = None
        with torch.enable_grad():
            torch.autograd.backward(outs, grads, inputs=leaves)
    finally:
        for leaf, grad in zip(leaves, saved):
            leaf.grad = grad


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        t = torch.empty_like(x, device="meta")
        return t.requires_grad_(x.requires_grad) if t.is_floating_point() else t
    return x


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers live on the meta device (no data is copied)."""
    memo: dict = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    try:
        return copy.deepcopy(model, memo)
    except Exception as e:  # noqa: BLE001 - any failure means the model cannot be copied
        raise ValueError(f"device='meta' needs a deep-copyable model ({type(e).__name__}: {e}); "
                         "count on the model's own device instead (device=None)") from e


def _shape_str(x) -> str:
    return "x".join(str(s) for s in x.shape) if not x.is_nested else "nested"


def _build_report(model, inputs, kwargs, mode: _CountingMode, elementwise: bool, device) -> CostReport:
    names = {name: m for name, m in model.named_modules()}
    fwd: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    bwd: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    by_op: dict[str, OpStats] = defaultdict(OpStats)
    bwd_by_op: dict[str, OpStats] = defaultdict(OpStats)
    for (phase, active, op), (calls, macs, el) in mode.records.items():
        per_module, per_op = (fwd, by_op) if phase == "forward" else (bwd, bwd_by_op)
        s = per_op[op]
        s.calls, s.macs, s.elementwise_flops = s.calls + calls, s.macs + macs, s.elementwise_flops + el
        for name in dict.fromkeys(active):  # a module re-entered (recursion) counts once per op
            acc = per_module[name]
            acc[0], acc[1], acc[2] = acc[0] + calls, acc[1] + macs, acc[2] + el
        if not active:  # ops outside any module (should not happen: the model itself is a module)
            acc = per_module[""]
            acc[0], acc[1], acc[2] = acc[0] + calls, acc[1] + macs, acc[2] + el

    def flops(macs: int, el: int) -> int:
        return 2 * macs + (el if elementwise else 0)

    modules = []
    for name, m in names.items():
        own = param_counts(m)
        c, b = fwd.get(name, [0, 0, 0]), bwd.get(name, [0, 0, 0])
        modules.append(ModuleCost(
            name=name, type=type(m).__name__, depth=0 if not name else name.count(".") + 1,
            params=own["params"], trainable_params=own["trainable_params"], calls=c[0],
            macs=c[1], elementwise_flops=c[2], flops=flops(c[1], c[2]),
            backward_macs=b[1], backward_elementwise_flops=b[2], backward_flops=flops(b[1], b[2]),
        ))
    total_macs = sum(s.macs for s in by_op.values())
    total_el = sum(s.elementwise_flops for s in by_op.values())
    b_macs = sum(s.macs for s in bwd_by_op.values())
    b_el = sum(s.elementwise_flops for s in bwd_by_op.values())
    tensors = [t for t in tree_flatten((inputs, kwargs))[0] if isinstance(t, torch.Tensor)]
    dev = device or (str(tensors[0].device) if tensors else str(next(model.parameters(), torch.empty(0)).device))
    counts = param_counts(model)
    return CostReport(
        model=type(model).__name__, inputs=[_shape_str(t) for t in tensors], device=dev,
        elementwise=elementwise, macs=total_macs, elementwise_flops=total_el, flops=flops(total_macs, total_el),
        backward_macs=b_macs, backward_elementwise_flops=b_el, backward_flops=flops(b_macs, b_el),
        modules=modules, by_operator=dict(by_op), backward_by_operator=dict(bwd_by_op),
        unknown_ops=dict(mode.unknown), **counts,
    )
