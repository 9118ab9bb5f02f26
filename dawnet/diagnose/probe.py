"""Capture the activations (and gradients) of named layers, LSTM tuple outputs included.

``probe`` is a context manager that hooks modules by their dotted ``named_modules`` name and
removes every hook when the block ends, also when it ends with an exception. It unwraps
``DataParallel`` / ``DistributedDataParallel`` so names are the plain model's names.

Example::

    with probe(model, ["cnn.conv3", "rnn"], grad=True) as p:
        out = model(x)
        out.sum().backward()
    p["cnn.conv3"]          # (N, C, H, W) activation, detached
    p.grad("cnn.conv3")     # d out.sum() / d activation
    p.output("rnn")         # the LSTM's full (output, (h, c)) tuple
    p.hidden("rnn")         # (h, c)

Recurrent layers return tuples (and PackedSequences): the *primary* tensor of a layer is the
first tensor of its output (the LSTM/GRU output sequence, padded when packed), which is what
``p[name]`` returns; the whole structure stays available through ``p.output(name)``.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from dawnet.diagnose.forward import eval_mode as eval_block
from dawnet.parallel import unwrap  # the plain model inside DataParallel / DDP / torch.compile wrappers

__all__ = [
    "LayerNotFoundError", "Probe", "probe", "capture", "unwrap", "resolve_layers", "primary_tensor", "layer_names",
]

OUTPUT = "output"  # the name that means "the model's own output" (the root module)


class LayerNotFoundError(KeyError):
    """A layer name that the model does not have; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def layer_names(model: nn.Module) -> list[str]:
    """Every hookable dotted layer name of ``model`` (wrappers unwrapped), in definition order."""
    return [name for name, _ in unwrap(model).named_modules() if name]


def resolve_layers(model: nn.Module, layers: str | Iterable[str]) -> dict[str, nn.Module]:
    """Map dotted layer names to modules; unknown names raise ``KeyError`` with close matches.

    ``"output"`` (or ``""``) names the model itself, i.e. its final output.
    """
    if isinstance(layers, str):
        layers = [layers]
    plain = unwrap(model)
    modules = dict(plain.named_modules())
    out: dict[str, nn.Module] = {}
    for name in layers:
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings (dotted names from named_modules()), got {name!r}")
        if name == "" or (name == OUTPUT and name not in modules):
            out[name] = plain
            continue
        # Accept names copied from a wrapped model ("module.cnn.0") too.
        key = name[len("module."):] if name not in modules and name.startswith("module.") else name
        if key not in modules:
            close = difflib.get_close_matches(key, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise LayerNotFoundError(
                f"no layer named {name!r} in {type(plain).__name__}.{hint} "
                f"List the names with dawnet.diagnose.probe.layer_names(model) (or `dawnet diagnose layers`)."
            )
        out[name] = modules[key]
    return out


def _map(obj: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a nested tuple/list/dict/PackedSequence, keeping the structure."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, PackedSequence):
        return obj._replace(data=fn(obj.data))
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map(o, fn) for o in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors of a nested output, depth first (PackedSequence yields its ``data``)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, PackedSequence):
        yield obj.data
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def primary_tensor(output: Any, module: nn.Module | None = None) -> torch.Tensor:
    """The tensor that stands for a layer's output: the first tensor (an RNN's output sequence).

    A PackedSequence is padded back to ``(N, T, C)`` (``batch_first``) or ``(T, N, C)``.
    """
    first = output
    while isinstance(first, (tuple, list)) and first and not isinstance(first, PackedSequence):
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    if isinstance(first, PackedSequence):
        batch_first = bool(getattr(module, "batch_first", False))
        return pad_packed_sequence(first, batch_first=batch_first)[0]
    if isinstance(first, torch.Tensor):
        return first
    raise TypeError(f"layer output of type {type(output).__name__} holds no tensor to probe")


def _batch_dims(module: nn.Module, output: Any) -> Any:
    """Per-tensor batch dimension of an output structure, for gathering DataParallel replicas."""
    if isinstance(module, nn.RNNBase) and isinstance(output, tuple) and len(output) == 2:
        out_dim = 0 if module.batch_first else 1
        return (out_dim, _map(output[1], lambda t: 1))  # h, c are (layers*dirs, N, H)
    return _map(output, lambda t: 0)


class Probe:
    """Activations (and gradients) captured from named layers; see :func:`probe`.

    Attributes:
        layers: the requested names, in order.
        calls: how many times each layer ran inside the block.
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str], grad: bool = False,
                 detach: bool = True, cpu: bool = False, keep: str = "last"):
        if keep not in ("last", "all"):
            raise ValueError(f"keep must be 'last' or 'all', got {keep!r}")
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.layers = list(self.modules)
        self.grad_enabled = grad
        self.detach = detach
        self.cpu = cpu
        self.keep = keep
        self.calls: dict[str, int] = {n: 0 for n in self.layers}
        self._outputs: dict[str, list[Any]] = {n: [] for n in self.layers}
        self._grads: dict[str, list[Any]] = {n: [] for n in self.layers}
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self._replicas: dict[str, list[tuple[int, Any]]] = {}
        self._multi_device = isinstance(model, nn.DataParallel) and len(model.device_ids or []) > 1
        if self._multi_device and grad:
            # Replica outputs are gathered into new tensors that the loss never sees, so no gradient would
            # reach them; refuse instead of returning nothing.
            raise ValueError("gradient capture through a multi-GPU DataParallel is not supported: probe the "
                             "plain module (model.module) on one device, or use DistributedDataParallel")

    # -- hooking ---------------------------------------------------------------------------------
    def attach(self) -> Probe:
        """Register the hooks (``with probe(...)`` does this for you)."""
        if self._handles:
            return self
        try:
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name, module)))
            if self._multi_device:
                self._handles.append(self.model.register_forward_pre_hook(self._new_forward))
                self._handles.append(self.model.register_forward_hook(self._gather))
        except BaseException:
            self.detach_hooks()
            raise
        return self

    def detach_hooks(self) -> None:
        """Remove every hook this probe registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    close = detach_hooks

    def __enter__(self) -> Probe:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach_hooks()

    def _hook(self, name: str, module: nn.Module):
        def hook(mod, args, output):
            if self._multi_device:  # a replica's slice: gathered after the wrapper's forward
                dev = next((t.device.index or 0 for t in _tensors(output)), 0)
                with self._lock:
                    self._replicas.setdefault(name, []).append((dev, output))
                return None
            self._store(name, module, output)
            return None

        return hook

    def _new_forward(self, mod, args):
        self._replicas = {}

    def _gather(self, mod, args, output):
        for name, parts in self._replicas.items():
            parts.sort(key=lambda p: p[0])
            outs = [p[1] for p in parts]
            module = self.modules[name]
            if len(outs) == 1:
                merged = outs[0]
            else:
                dims = _batch_dims(module, outs[0])
                merged = _cat_structs(outs, dims)
            self._store(name, module, merged)
        self._replicas = {}

    def _store(self, name: str, module: nn.Module, output: Any) -> None:
        grads: list[Any] = [None]
        if self.grad_enabled:
            grads = [_map(output, lambda t: None)]
            self._register_grad_hooks(output, grads)
        # Copy: a later in-place op (ReLU(inplace=True)) would otherwise rewrite what was captured.
        # Without detach the copy is differentiable, so gradients still flow to the input.
        kept = _map(output, (lambda t: t.detach().clone()) if self.detach else (lambda t: t.clone()))
        if self.cpu:
            kept = _map(kept, lambda t: t.cpu())
        with self._lock:
            self.calls[name] += 1
            if self.keep == "last":
                self._outputs[name] = [kept]
                self._grads[name] = grads
            else:
                self._outputs[name].append(kept)
                self._grads[name].append(grads[0])

    def _register_grad_hooks(self, output: Any, box: list[Any]) -> None:
        """Tensor hooks that store each output tensor's gradient in the same nested position."""
        paths: list[tuple[torch.Tensor, tuple]] = []

        def walk(obj, path):
            if isinstance(obj, torch.Tensor):
                paths.append((obj, path))
            elif isinstance(obj, PackedSequence):
                paths.append((obj.data, path + ("data",)))
            elif isinstance(obj, (tuple, list)):
                for i, o in enumerate(obj):
                    walk(o, path + (i,))
            elif isinstance(obj, dict):
                for k, o in obj.items():
                    walk(o, path + (k,))

        walk(output, ())
        for tensor, path in paths:
            if tensor.requires_grad:
                tensor.register_hook(self._grad_hook(box, path))

    def _grad_hook(self, box: list[Any], path: tuple):
        def hook(g):
            g = g.detach().cpu() if self.cpu else g.detach()
            box[0] = _set_path(box[0], path, g)

        return hook

    # -- access ----------------------------------------------------------------------------------
    def _check(self, name: str) -> None:
        if name not in self._outputs:
            raise KeyError(f"{name!r} was not probed; probed layers: {self.layers}")
        if not self._outputs[name]:
            raise RuntimeError(
                f"layer {name!r} did not run inside the probe block: run the model's forward inside "
                f"`with probe(...)`, and check that this layer is on the forward path."
            )

    def output(self, name: str) -> Any:
        """The layer's full output structure (e.g. an LSTM's ``(output, (h, c))``), last call."""
        self._check(name)
        return self._outputs[name][-1]

    def outputs(self, name: str) -> list[Any]:
        """Every call's output structure (``keep='all'``; a single item with ``keep='last'``)."""
        self._check(name)
        return list(self._outputs[name])

    def __getitem__(self, name: str) -> torch.Tensor:
        """The layer's primary output tensor (the sequence output for an RNN), last call."""
        return primary_tensor(self.output(name), self.modules[name])

    def __contains__(self, name: str) -> bool:
        return name in self._outputs and bool(self._outputs[name])

    def hidden(self, name: str) -> Any:
        """The final hidden state of a recurrent layer: ``(h, c)`` for an LSTM, ``h`` for a GRU/RNN."""
        out = self.output(name)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"layer {name!r} ({type(self.modules[name]).__name__}) returns no hidden state")
        return out[1]

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        """Primary tensor of every probed layer that ran, by name."""
        return {n: self[n] for n in self.layers if self._outputs[n]}

    def grad(self, name: str) -> torch.Tensor:
        """The gradient that reached the layer's primary output in the last backward pass."""
        full = self.grad_output(name)
        g = primary_tensor(full, self.modules[name]) if full is not None else None
        if g is None:
            raise RuntimeError(
                f"no gradient reached layer {name!r}: open the probe with grad=True, make sure the "
                f"input or parameters require grad, and call backward() inside or after the block."
            )
        return g

    def grad_output(self, name: str) -> Any:
        """The gradient structure mirroring :meth:`output` (``None`` where no gradient arrived)."""
        if not self.grad_enabled:
            raise RuntimeError("gradients were not captured: open the probe with grad=True")
        self._check(name)
        return self._grads[name][-1]

    def clear(self) -> None:
        """Forget captured values (hooks stay), e.g. between batches in a loop."""
        for n in self.layers:
            self._outputs[n] = []
            self._grads[n] = []
            self.calls[n] = 0

    def __repr__(self) -> str:
        shapes = {n: tuple(self[n].shape) for n in self.layers if self._outputs[n]}
        return f"Probe(layers={self.layers}, captured={shapes}, hooks={len(self._handles)})"


def _set_path(obj: Any, path: tuple, value: torch.Tensor) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, PackedSequence):
        return obj._replace(data=_set_path(obj.data, rest, value)) if head == "data" else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        items = list(obj)
        items[head] = _set_path(items[head], rest, value)
        return type(obj)(*items)
    if isinstance(obj, (tuple, list)):
        items = list(obj)
        items[head] = _set_path(items[head], rest, value)
        return type(obj)(items)
    if isinstance(obj, dict):
        obj = dict(obj)
        obj[head] = _set_path(obj[head], rest, value)
        return obj
    return value


def _cat_structs(outs: list[Any], dims: Any) -> Any:
    """Concatenate same-shaped nested structures along their batch dimensions, on the first device."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([o.to(first.device) for o in outs], dim=dims)
    if isinstance(first, (tuple, list)):
        return type(first)(_cat_structs([o[i] for o in outs], dims[i]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: _cat_structs([o[k] for o in outs], dims[k]) for k in first}
    return first


@contextmanager
def probe(model: nn.Module, layers: str | Iterable[str], grad: bool = False, *, detach: bool = True,
          cpu: bool = False, keep: str = "last") -> Iterator[Probe]:
    """Capture named layers' outputs while the block runs; every hook is removed on exit.

    Args:
        model: any ``nn.Module``; ``DataParallel``/``DDP`` wrappers are unwrapped for naming and
            the forward may go through the wrapper (a multi-GPU DataParallel's replica slices are
            gathered in device order; gradient capture there needs DDP or the plain module).
        layers: one dotted name or several (``"output"`` means the model's own output).
        grad: also capture the gradient that reaches each output in ``backward()``.
        detach: store detached tensors (default); ``False`` keeps the autograd graph, which lets
            you differentiate a captured activation with respect to the input.
        cpu: move captured tensors to the CPU (saves GPU memory over long loops).
        keep: ``"last"`` keeps the last call of each layer; ``"all"`` keeps every call
            (shared modules, loops over batches).

    Yields:
        a :class:`Probe`: ``p[name]`` (primary tensor), ``p.output(name)``, ``p.hidden(name)``,
        ``p.grad(name)``, ``p.activations``.
    """
    p = Probe(model, layers, grad=grad, detach=detach, cpu=cpu, keep=keep)
    p.attach()
    try:
        yield p
    finally:
        p.detach_hooks()


def capture(model: nn.Module, layers: str | Iterable[str], *inputs: Any, eval_mode: bool = True,
            **kwargs: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Run ``model(*inputs)`` once without gradients and return ``(activations, model output)``.

    The model is put in eval mode for the pass (``eval_mode=True``); every submodule's mode is restored.
    """
    with (eval_block(model) if eval_mode else contextlib.nullcontext()), torch.no_grad(), \
            probe(model, layers, **kwargs) as p:
        out = model(*inputs)
    return {n: p[n] for n in p.layers}, out
