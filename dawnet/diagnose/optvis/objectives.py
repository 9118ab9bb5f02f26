"""Objectives for feature visualization: what to maximize, composable with ``+ - * /``.

An :class:`Objective` wraps ``fn(T) -> scalar tensor`` where ``T(name)`` returns an activation:
a layer named as in ``model.named_modules()`` (recurrent layers give their output sequence as
``(N, T, F)``), or one of the pseudo-layers ``"image"`` (the parameterized image, before the
robustness transforms), ``"input"`` (what the model receives) and ``"output"`` (the model's
output; a layer literally named ``output`` wins). Objectives are *maximized*; they add and
scale, and print as their formula::

    >>> obj = 0.8 * channel("conv3", 12) - 0.05 * total_variation()
    >>> obj
    0.8 * channel('conv3', 12) - 0.05 * total_variation()
    >>> sorted(obj.layers)   # only these are hooked
    ['conv3', 'image']

Conventions (Lucid, ``lucid/optvis/objectives.py``): activations are averaged over batch and
positions; penalties (``L1``, ``L2``, ``total_variation``, ``blur_input_each_step``,
``diversity``) return a positive amount to be *subtracted*. Unlike Lucid, the penalties are means,
not sums, so their weights do not depend on the image size. Layouts: 4-D activations are
``(N, C, H, W)``, 3-D are ``(N, T, F)`` (features last; ``x`` indexes the time step), 2-D ``(N, F)``.

New objectives are a small closure plus :func:`wrap_objective`, which names them and records
the layer they need (so only that layer is hooked).
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Objective",
    "wrap_objective",
    "as_objective",
    "PSEUDO_LAYERS",
    "neuron",
    "channel",
    "direction",
    "direction_neuron",
    "direction_cossim",
    "deepdream",
    "class_logit",
    "char_logit",
    "ctc_target",
    "activation_match",
    "diversity",
    "channel_interpolate",
    "alignment",
    "L1",
    "L2",
    "total_variation",
    "blur_input_each_step",
]

PSEUDO_LAYERS = ("image", "input", "output")
_ATOM, _PRODUCT, _SUM = 3, 2, 1  # precedence of a formula's top operator, for parentheses in repr


class Objective:
    """A scalar function of activations, to be maximized; combine with ``+ - * /`` and numbers.

    Args:
        fn: ``fn(T) -> 0-d tensor`` where ``T(name)`` returns an activation tensor.
        name: the formula shown by ``repr``.
        layers: the layer / pseudo-layer names ``fn`` reads (only these are hooked).
    """

    def __init__(self, fn: Callable, name: str = "objective", layers: Sequence[str] = (), _prec: int = _ATOM):
        self.fn = fn
        self.name = name
        self.layers = frozenset(layers)
        self._prec = _prec

    def __call__(self, T) -> torch.Tensor:
        return self.fn(T)

    def __repr__(self) -> str:
        return self.name

    @property
    def needs_output(self) -> bool:
        """Whether the model must run to the end (otherwise the forward can stop at the last layer)."""
        return "output" in self.layers

    # -- algebra -----------------------------------------------------------------------------------
    def _bin(self, other, op: str, fn, prec: int, reverse: bool = False) -> Objective:
        other = _lift(other)
        a, b = (other, self) if reverse else (self, other)
        la = _paren(a, prec, right=False, op=op)
        lb = _paren(b, prec, right=True, op=op)
        return Objective(lambda T: fn(a(T), b(T)), f"{la} {op} {lb}", a.layers | b.layers, prec)

    def __add__(self, other):
        return self._bin(other, "+", torch.add, _SUM)

    def __radd__(self, other):
        if isinstance(other, numbers.Number) and other == 0:
            return self  # so that sum([obj1, obj2]) works
        return self._bin(other, "+", torch.add, _SUM, reverse=True)

    def __sub__(self, other):
        return self._bin(other, "-", torch.sub, _SUM)

    def __rsub__(self, other):
        return self._bin(other, "-", torch.sub, _SUM, reverse=True)

    def __mul__(self, other):
        return self._bin(other, "*", torch.mul, _PRODUCT)

    def __rmul__(self, other):
        return self._bin(other, "*", torch.mul, _PRODUCT, reverse=True)

    def __truediv__(self, other):
        return self._bin(other, "/", torch.div, _PRODUCT)

    def __rtruediv__(self, other):
        return self._bin(other, "/", torch.div, _PRODUCT, reverse=True)

    def __neg__(self):
        inner = self.name if self._prec >= _PRODUCT else f"({self.name})"
        return Objective(lambda T: -self(T), f"-{inner}", self.layers, _PRODUCT)

    def __pos__(self):
        return self


def _lift(value) -> Objective:
    if isinstance(value, Objective):
        return value
    if isinstance(value, numbers.Number):
        v = float(value)
        return Objective(
            lambda T: torch.as_tensor(v), f"{value:g}" if isinstance(value, float) else str(value)
        )
    raise TypeError(f"cannot combine an Objective with {type(value).__name__}: use numbers or Objectives")


def _paren(o: Objective, prec: int, right: bool, op: str) -> str:
    # a - (b + c) and a / (b * c) need parentheses on the right; lower precedence always does.
    need = o._prec < prec or (right and op in "-/" and o._prec == prec)
    return f"({o.name})" if need else o.name


def wrap_objective(func: Callable[..., Callable]) -> Callable[..., Objective]:
    """Turn ``func(args) -> inner(T)`` into a factory of named :class:`Objective` s.

    The objective is named ``func(args)`` and needs the layers given as its ``layer`` (or
    ``layer1``, ``layer2``, ...) arguments, defaults included (e.g. ``layer="image"``).
    """
    sig = inspect.signature(func)

    @functools.wraps(func)
    def factory(*args, **kwargs) -> Objective:
        bound = sig.bind(*args, **kwargs)
        shown = ", ".join(_short(v) for v in args)  # as the caller wrote it
        shown_kw = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        bound.apply_defaults()
        # every argument named layer, layer1, layer2, ... names a layer to hook
        layers = [v for k, v in bound.arguments.items() if k.startswith("layer") and isinstance(v, str)]
        name = f"{func.__name__}({', '.join(s for s in (shown, shown_kw) if s)})"
        return Objective(func(*bound.args, **bound.kwargs), name, layers)

    return factory


def _short(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"<tensor {tuple(v.shape)}>" if v.numel() > 4 else repr(v.tolist())
    if isinstance(v, (list, tuple)) and len(v) > 8:
        return f"<{len(v)} values>"
    return repr(v)


def as_objective(obj) -> Objective:
    """An Objective from an Objective, a ``"layer:channel"`` string, or a callable ``fn(T)``."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        layer, sep, n = obj.rpartition(":")
        if not sep or not n.strip().lstrip("-").isdigit():
            raise ValueError(
                f"an objective string must be 'layer:channel' (e.g. 'features.3:12'), got {obj!r}"
            )
        return channel(layer, int(n))
    if callable(obj):
        return Objective(obj, getattr(obj, "__name__", "objective"))
    raise TypeError(
        f"expected an Objective, a 'layer:channel' string or a callable, got {type(obj).__name__}"
    )


# -- helpers -------------------------------------------------------------------------------------------
def _select(a: torch.Tensor, batch) -> torch.Tensor:
    if batch is None:
        return a
    if isinstance(batch, int):
        if not -a.shape[0] <= batch < a.shape[0]:
            raise IndexError(f"batch index {batch} out of range for a batch of {a.shape[0]}")
        return a[batch : batch + 1]
    return a[list(batch)]


def _channels_last(a: torch.Tensor, layer: str) -> torch.Tensor:
    """``(N, positions..., C)`` view of a ``(N, C, H, W)``, ``(N, T, F)`` or ``(N, F)`` activation."""
    if a.ndim == 4:
        return a.permute(0, 2, 3, 1)
    _cdim(a, layer)
    return a if a.ndim == 3 else a[:, None, :]


def _cdim(a: torch.Tensor, layer: str) -> int:
    """The channel dimension: 1 for ``(N, C, H, W)``, last for ``(N, T, F)`` and ``(N, F)``.

    Objectives reduce over it in place rather than permuting to channels-last: the gradient of a
    permuted view is channels-last in memory, which sends the whole backward pass through slower
    convolution kernels (measured 10-15% of a step on CPU).
    """
    if a.ndim == 4:
        return 1
    if a.ndim in (2, 3):
        return a.ndim - 1
    raise ValueError(
        f"layer {layer!r} gives a {a.ndim}-D activation {tuple(a.shape)}; objectives handle "
        f"(N, C, H, W), (N, T, F) and (N, F)"
    )


def _check_channel(a: torch.Tensor, c: int, layer: str) -> None:
    n = a.shape[_cdim(a, layer)]
    if not -n <= c < n:
        raise IndexError(f"channel {c} out of range: layer {layer!r} has {n} channels")


def _at(a: torch.Tensor, y, x, layer: str) -> torch.Tensor:
    """Activation ``(N, C)`` at one position (default: the centre); ``x`` is the time step of a sequence."""
    if a.ndim == 4:  # (N, C, H, W)
        h, w = a.shape[2:]
        y = h // 2 if y is None else y
        x = w // 2 if x is None else x
        if not (0 <= y < h and 0 <= x < w):
            raise IndexError(f"position (y={y}, x={x}) outside layer {layer!r} of size {h}x{w}")
        return a[:, :, y, x]
    if a.ndim == 3:  # (N, T, F)
        if y is not None:
            raise ValueError(f"layer {layer!r} is a sequence (N, T, F): give the time step as x, not y")
        t = a.shape[1] // 2 if x is None else x
        if not -a.shape[1] <= t < a.shape[1]:
            raise IndexError(f"time step {t} outside layer {layer!r} with {a.shape[1]} steps")
        return a[:, t]
    _cdim(a, layer)
    return a


def _along(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``v`` shaped to broadcast along ``a``'s channel dimension."""
    return v.view(1, -1, 1, 1) if a.ndim == 4 else v


def _vec(vec, like: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(vec, dtype=like.dtype, device=like.device).flatten()
    n = like.shape[1] if like.ndim == 4 else like.shape[-1]
    if v.numel() != n:
        raise ValueError(f"direction has {v.numel()} values but the layer has {n} channels")
    return v


def _const(c, like: torch.Tensor):
    """A number, or a tensor (e.g. a start image to stay close to) moved to the activation's device."""
    return c.to(device=like.device, dtype=like.dtype) if isinstance(c, torch.Tensor) else c


def _dot_cossim(a: torch.Tensor, v: torch.Tensor, cossim_pow: float) -> torch.Tensor:
    """Lucid's ``_dot_cossim``: mean of ``a.v``, times ``max(0.1, cos)**cossim_pow`` when that is > 0."""
    cd = 1 if a.ndim == 4 else -1
    dot = (a * _along(v, a)).sum(cd)
    if cossim_pow == 0:
        return dot.mean()
    eps = 1e-4
    cos = dot / (eps + a.norm(dim=cd)) / (eps + v.norm())
    return (dot * cos.clamp(min=0.1) ** cossim_pow).mean()


def _seq_layout(out: torch.Tensor, layout: str, layer: str) -> torch.Tensor:
    """Model output as ``(N, T, C)``."""
    if out.ndim != 3:
        raise ValueError(
            f"{layer!r} gives shape {tuple(out.shape)}; a recognizer's output must be 3-D "
            f"(N, T, C) or (T, N, C) (set layout=)"
        )
    if layout == "NTC":
        return out
    if layout == "TNC":
        return out.transpose(0, 1)
    raise ValueError(f"layout must be 'NTC' or 'TNC', got {layout!r}")


# -- activation objectives -----------------------------------------------------------------------------
@wrap_objective
def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None, batch=None):
    """One unit: ``channel`` at position ``(y, x)`` (default: the centre; for sequences ``x`` = time step)."""

    def inner(T):
        a = _select(T(layer), batch)
        _check_channel(a, channel, layer)
        return _at(a, y, x, layer)[:, channel].mean()

    return inner


@wrap_objective
def channel(layer: str, channel: int, batch=None):
    """A whole channel (feature map), averaged over positions."""

    def inner(T):
        a = _select(T(layer), batch)
        _check_channel(a, channel, layer)
        return a.select(_cdim(a, layer), channel).mean()

    return inner


@wrap_objective
def direction(layer: str, vec, batch=None, cossim_pow: float = 0):
    """A direction in channel space (e.g. a concept vector), dotted with the activation at every position."""

    def inner(T):
        a = _select(T(layer), batch)
        _cdim(a, layer)
        return _dot_cossim(a, _vec(vec, a), cossim_pow)

    return inner


@wrap_objective
def direction_neuron(
    layer: str, vec, y: int | None = None, x: int | None = None, batch=None, cossim_pow: float = 0
):
    """A direction at one position (default: the centre)."""

    def inner(T):
        a = _select(T(layer), batch)
        return _dot_cossim(_at(a, y, x, layer), _vec(vec, a), cossim_pow)

    return inner


@wrap_objective
def direction_cossim(layer: str, vec, batch=None):
    """Mean cosine similarity between the activation at each position and ``vec`` (scale-free)."""

    def inner(T):
        a = _select(T(layer), batch)
        cd = _cdim(a, layer)
        v = _vec(vec, a)
        cos = (a * _along(v, a)).sum(cd) / (a.norm(dim=cd) * v.norm() + 1e-8)
        return cos.mean()

    return inner


@wrap_objective
def deepdream(layer: str, batch=None):
    """DeepDream: the mean squared activation of a whole layer (Mordvintsev et al. 2015)."""

    def inner(T):
        return _select(T(layer), batch).pow(2).mean()

    return inner


@wrap_objective
def class_logit(label: int, layer: str = "output", batch=None):
    """The logit of class ``label`` in a ``(N, classes)`` output (maximize before the softmax)."""

    def inner(T):
        out = _select(T(layer), batch)
        if out.ndim != 2:
            raise ValueError(
                f"class_logit needs a (N, classes) output, {layer!r} gives {tuple(out.shape)}; "
                f"for recognizers use char_logit or ctc_target"
            )
        _check_channel(out, label, layer)
        return out[:, label].mean()

    return inner


@wrap_objective
def char_logit(char: int, t: int, layer: str = "output", batch=None, layout: str = "NTC"):
    """Score of character index ``char`` at time step ``t`` of a recognizer's ``(N, T, C)`` output."""

    def inner(T):
        out = _seq_layout(_select_seq(T(layer), batch, layout), layout, layer)
        _check_channel(out, char, layer)
        if not -out.shape[1] <= t < out.shape[1]:
            raise IndexError(f"time step {t} outside the output's {out.shape[1]} steps")
        return out[:, t, char].mean()

    return inner


def _select_seq(out: torch.Tensor, batch, layout: str) -> torch.Tensor:
    if layout == "TNC" and batch is not None:
        return _select(out.transpose(0, 1), batch).transpose(0, 1)
    return _select(out, batch)


@wrap_objective
def ctc_target(target: Sequence[int], layer: str = "output", blank: int = 0, batch=None, layout: str = "NTC"):
    """CTC log-probability of reading ``target`` (character indices, no blanks): maximize to make a
    recognizer read that string. The output is log-softmaxed first, so logits and log-probs both work.
    """
    target = [int(c) for c in target]
    if not target:
        raise ValueError("ctc_target needs at least one character")
    if blank in target:
        raise ValueError(f"the target contains the blank index {blank}: encode text without blanks")
    # CTC needs one extra step between repeated characters: a path exists only if T >= this.
    min_steps = len(target) + sum(a == b for a, b in zip(target, target[1:]))

    def inner(T):
        out = _seq_layout(_select_seq(T(layer), batch, layout), layout, layer)
        n, steps, classes = out.shape
        if steps < min_steps:
            raise ValueError(
                f"the output has {steps} time steps, too few to read {len(target)} characters "
                f"(CTC needs {min_steps}): use a wider image"
            )
        if max(target) >= classes:
            raise IndexError(f"target index {max(target)} out of range for {classes} output classes")
        logp = F.log_softmax(out.float(), dim=-1).transpose(0, 1)  # (T, N, C) as F.ctc_loss wants
        tgt = torch.tensor(target, device=out.device).repeat(n, 1)
        nll = F.ctc_loss(
            logp,
            tgt,
            torch.full((n,), steps, dtype=torch.long, device=out.device),
            torch.full((n,), len(target), dtype=torch.long, device=out.device),
            blank=blank,
            reduction="none",
            zero_infinity=False,
        )
        return (-nll).mean().to(out.dtype)

    return inner


@wrap_objective
def activation_match(layer: str, target: torch.Tensor, batch=None):
    """Feature inversion (Mahendran & Vedaldi 2015): minus the relative squared error to ``target``.

    0 is a perfect match; -1 is as far as an all-zero activation.
    """

    def inner(T):
        a = _select(T(layer), batch)
        tgt = target.to(device=a.device, dtype=a.dtype)
        if tgt.shape[1:] != a.shape[1:]:
            raise ValueError(
                f"target activation has shape {tuple(tgt.shape)} but layer {layer!r} gives {tuple(a.shape)}"
            )
        return -((a - tgt) ** 2).sum() / (tgt.pow(2).sum().clamp(min=1e-12) * a.shape[0] / tgt.shape[0])

    return inner


@wrap_objective
def diversity(layer: str):
    """Similarity of the batch's images (Lucid): mean over pairs of normalized Gram-matrix dot products.

    Subtract it (e.g. ``channel(...) - 1e2 * diversity(layer)``) to make a batch show different facets.
    """

    def inner(T):
        a = T(layer)
        n = a.shape[0]
        if n < 2:
            raise ValueError("diversity needs a batch of at least 2 images: use image(..., batch=4)")
        flat = _channels_last(a, layer).reshape(n, -1, a.shape[1] if a.ndim == 4 else a.shape[-1])
        grams = flat.transpose(1, 2) @ flat  # (N, C, C)
        grams = grams / grams.flatten(1).norm(dim=1).clamp(min=1e-10)[:, None, None]
        sims = torch.einsum("icd,jcd->ij", grams, grams)
        return (sims.sum() - sims.diagonal().sum()) / n

    return inner


@wrap_objective
def channel_interpolate(layer1: str, channel1: int, layer2: str, channel2: int):
    """Lucid's interpolation across a batch: image ``i`` of ``N`` maximizes
    ``(1 - i/(N-1)) * channel1 + i/(N-1) * channel2``, so the batch morphs from one feature to the other.

    Combine with ``alignment`` to keep neighbouring images alike.
    """

    def inner(T):
        a = T(layer1)
        b = T(layer2)
        _check_channel(a, channel1, layer1)
        _check_channel(b, channel2, layer2)
        n = a.shape[0]
        if n < 2:
            raise ValueError(
                "channel_interpolate needs a batch of at least 2 images: use image(..., batch=5)"
            )
        w = torch.linspace(0, 1, n, device=a.device, dtype=a.dtype)
        ma = a.select(_cdim(a, layer1), channel1).flatten(1).mean(1)
        mb = b.select(_cdim(b, layer2), channel2).flatten(1).mean(1)
        return ((1 - w) * ma + w * mb).sum()

    return inner


@wrap_objective
def alignment(layer: str, decay_ratio: float = 2.0):
    """Lucid's alignment: minus the mean squared difference between images 1-4 apart in the batch,
    weighted ``decay_ratio ** -distance``. Already negative, as in Lucid: *add* it (e.g. to
    ``channel_interpolate``) to make neighbouring images share their layout.
    """

    def inner(T):
        a = T(layer)
        n = a.shape[0]
        total = a.new_zeros(())
        for d in (1, 2, 3, 4):
            if d < n:
                total = total + (a[d:] - a[:-d]).pow(2).flatten(1).mean(1).sum() / decay_ratio**d
        return -total

    return inner


# -- penalties (subtract them) -----------------------------------------------------------------------
@wrap_objective
def L1(layer: str = "image", constant: float | torch.Tensor = 0.0, batch=None):
    """Mean absolute value of ``layer - constant`` (sparsity; on the image, pulls towards ``constant``).

    ``constant`` may be a tensor, e.g. the start image, to penalize moving away from it."""

    def inner(T):
        a = _select(T(layer), batch)
        return (a - _const(constant, a)).abs().mean()

    return inner


@wrap_objective
def L2(layer: str = "image", constant: float | torch.Tensor = 0.0, epsilon: float = 1e-6, batch=None):
    """Root mean square of ``layer - constant`` (``constant`` may be a tensor, as for :func:`L1`)."""

    def inner(T):
        a = _select(T(layer), batch)
        return ((a - _const(constant, a)).pow(2).mean() + epsilon).sqrt()

    return inner


@wrap_objective
def total_variation(layer: str = "image", batch=None):
    """Mean absolute difference between neighbouring pixels (Mahendran & Vedaldi's TV, beta = 1)."""

    def inner(T):
        a = _select(T(layer), batch)
        if a.ndim == 4:
            return (a[..., 1:, :] - a[..., :-1, :]).abs().mean() + (
                a[..., :, 1:] - a[..., :, :-1]
            ).abs().mean()
        if a.ndim == 3:  # a sequence: differences along time
            return (a[:, 1:] - a[:, :-1]).abs().mean()
        raise ValueError(f"total_variation needs an image or a sequence, {layer!r} gives {tuple(a.shape)}")

    return inner


@wrap_objective
def blur_input_each_step(layer: str = "image"):
    """Half the mean squared distance to a (constant) 3x3 blur of itself (Lucid).

    Subtracting ``k * blur_input_each_step()`` pulls the image towards its blur a little each step.
    """

    def inner(T):
        a = T(layer)
        if a.ndim != 4:
            raise ValueError(
                f"blur_input_each_step needs an (N, C, H, W) image, {layer!r} gives {tuple(a.shape)}"
            )
        with torch.no_grad():
            c = a.shape[1]
            k = torch.tensor(
                [[0.5, 1.0, 0.5], [1.0, 1.0, 1.0], [0.5, 1.0, 0.5]], dtype=a.dtype, device=a.device
            )
            k = k.expand(c, 1, 3, 3)
            blurred = F.conv2d(a, k, padding=1, groups=c) / F.conv2d(
                torch.ones_like(a), k, padding=1, groups=c
            )
        return 0.5 * (a - blurred).pow(2).mean()

    return inner
