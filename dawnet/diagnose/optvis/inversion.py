"""Optimize an input until the model gives a target result (activation maximization, inversion).

Nguyen, Yosinski & Clune (2016) and Simonyan et al. (2014) optimize an image until a classifier
says a class; Mahendran & Vedaldi (2015) until a layer's activations match those of another
image (feature inversion). Here a :class:`Target` says what the model should give and how to
check it on the untransformed image; :func:`optimize_input` starts from noise or a real image
(a photo, a handwritten line), optimizes with regularizers that keep the image natural (total
variation, closeness to the start, small random jitter) and stops once the target is met. The
result reports the model's final output and how far the input moved.

Example::

    tgt = text_target(charset.encode("hello"), decode=charset.decode)
    res = optimize_input(recognizer, tgt, init=line_image, steps=500)
    res.prediction, res.satisfied, res.distance     # ['hello'], True, {'rms': ..., 'psnr_db': ...}
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from dawnet.diagnose.optvis import objectives as obj
from dawnet.diagnose.optvis import param as param_mod
from dawnet.diagnose.optvis import transform as transform_mod
from dawnet.diagnose.optvis.objectives import Objective
from dawnet.diagnose.optvis.render import (
    Visualization,
    _cell_size,
    _generator,
    _progress,
    default_optimizer,
    model_input_channels,
    tensor_to_pil,
)
from dawnet.ocr.decode import ctc_greedy  # the one CTC best-path decoder (re-exported here)

__all__ = [
    "Target",
    "class_target",
    "text_target",
    "activation_target",
    "optimize_input",
    "invert_features",
    "InversionResult",
    "ctc_greedy",
]


@dataclass
class Target:
    """What the model should give: an objective to maximize and a check on clean activations.

    Attributes:
        objective: maximized during optimization.
        check: ``check(acts) -> (satisfied, prediction)`` where ``acts`` maps the objective's layers
            (and "output") to activations of the untransformed image; ``prediction`` has one entry
            per image in the batch.
        description: shown in reports.
        jitter: whether the default transforms may shift the image; False for pixel-aligned
            targets such as an activation pattern (a shifted image cannot match it).
    """

    objective: Objective
    check: Callable[[dict[str, torch.Tensor]], tuple[bool, list]]
    description: str
    jitter: bool = True


def class_target(label: int, layer: str = "output", margin: float = 0.0) -> Target:
    """The model's top class is ``label`` (by at least ``margin`` in log-probability over the runner-up).

    The objective is the class's log-softmax (not the raw logit: raising the logit alone can also
    raise every other class).
    """

    @obj.wrap_objective
    def class_log_prob(label: int, layer: str = "output"):
        def inner(T):
            out = T(layer)
            if out.ndim != 2:
                raise ValueError(
                    f"class_target needs a (N, classes) output, {layer!r} gives {tuple(out.shape)}"
                )
            return torch.log_softmax(out.float(), dim=1)[:, label].mean()

        return inner

    def check(acts):
        logp = torch.log_softmax(acts[layer].float(), dim=1)
        top2 = logp.topk(min(2, logp.shape[1]), dim=1)
        pred = top2.indices[:, 0]
        ok = pred == label
        if margin > 0 and logp.shape[1] > 1:
            ok &= (top2.values[:, 0] - top2.values[:, 1]) >= margin
        return bool(ok.all()), pred.tolist()

    return Target(class_log_prob(label, layer), check, f"class {label}")


def text_target(
    target: Sequence[int],
    blank: int = 0,
    layer: str = "output",
    layout: str = "NTC",
    decode: Callable[[list[int]], str] | None = None,
) -> Target:
    """A recognizer reads ``target`` (character indices) by greedy CTC decoding.

    ``decode`` turns indices back into text for the report (e.g. ``charset.decode``).
    """
    target = [int(c) for c in target]

    def check(acts):
        out = acts[layer]
        out = out.transpose(0, 1) if layout == "TNC" else out
        read = ctc_greedy(out, blank=blank)
        pred = [decode(r) for r in read] if decode else read
        return all(r == target for r in read), pred

    shown = decode(target) if decode else target
    return Target(obj.ctc_target(target, layer=layer, blank=blank, layout=layout), check, f"read {shown!r}")


def activation_target(layer: str, activations: torch.Tensor, tol: float = 0.05) -> Target:
    """Layer ``layer`` gives ``activations`` (relative squared error at most ``tol``): feature inversion."""
    target = activations.detach()

    def check(acts):
        a = acts[layer]
        t = target.to(a)
        err = ((a - t) ** 2).flatten(1).sum(1) / t.pow(2).flatten(1).sum(1).clamp(min=1e-12)
        return bool((err <= tol).all()), [round(float(e), 6) for e in err]

    return Target(
        obj.activation_match(layer, target), check, f"match {layer!r} (rel. error <= {tol:g})", jitter=False
    )


@dataclass
class InversionResult:
    """What :func:`optimize_input` returns.

    Attributes:
        image: the optimized input ``(N, C, H, W)`` in [0, 1] (CPU).
        start: the input it started from (the real image, or the initial noise).
        output: the model's output on ``image`` (no transforms), CPU.
        prediction: per image, what the target's check reads (class, text, relative error).
        satisfied: whether the target is met on ``image``.
        steps: optimization steps taken.
        history: objective value (target minus penalties) per step.
        distance: how far the input moved: ``rms``, ``mean_abs``, ``max_abs`` (in [0, 1] units)
            and ``psnr_db`` of ``image`` against ``start``.
        target: the target's description; ``objective``: the full formula optimized.
    """

    image: torch.Tensor
    start: torch.Tensor
    output: torch.Tensor | None
    prediction: list
    satisfied: bool
    steps: int
    history: list[float]
    distance: dict[str, float]
    target: str
    objective: str
    param: param_mod.ImageParam | None = field(default=None, repr=False)

    @functools.cached_property
    def images(self) -> list:
        """The optimized images as PIL images."""
        return [tensor_to_pil(x) for x in self.image]

    @functools.cached_property
    def figure(self):
        """Start, result and their difference for each image, and the objective curve."""
        from matplotlib.figure import Figure

        n = self.image.shape[0]
        cell_w, cell_h = _cell_size(*self.image.shape[-2:])
        fig = Figure(figsize=(3 * cell_w + 2.6, cell_h * n + 0.8), layout="constrained")
        axes = fig.subplots(n, 4, squeeze=False)
        for i in range(n):
            diff = (self.image[i] - self.start[i]).abs().amax(0)
            for j, (im, title) in enumerate(
                ((self.start[i], "start"), (self.image[i], f"read: {self.prediction[i]}"), (None, "|change|"))
            ):
                ax = axes[i][j]
                if im is None:
                    ax.imshow(diff.numpy(), cmap="magma", vmin=0, vmax=max(float(diff.max()), 1e-6))
                elif im.shape[0] == 3:
                    ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
                else:
                    ax.imshow(im[0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_title(title, fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
            if i == 0:
                axes[i][3].plot(range(1, len(self.history) + 1), self.history)
                axes[i][3].set_xlabel("step")
                axes[i][3].set_title("objective", fontsize=9)
            else:
                axes[i][3].axis("off")
        state = "met" if self.satisfied else "NOT met"
        fig.suptitle(
            f"{self.target}: {state} after {self.steps} steps, rms change {self.distance['rms']:.3f}",
            fontsize=9,
        )
        return fig


def _distance(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = (a - b).float()
    mse = float(d.pow(2).mean())
    return {
        "rms": math.sqrt(mse),
        "mean_abs": float(d.abs().mean()),
        "max_abs": float(d.abs().max()),
        "psnr_db": float("inf") if mse == 0 else 10 * math.log10(1.0 / mse),
    }


def optimize_input(
    model: nn.Module,
    target: Target,
    init=None,
    *,
    steps: int = 1000,
    lr: float = 0.05,
    penalty: Objective | str | None = "default",
    transforms="default",
    optimizer=None,
    check_every: int = 10,
    stop: bool = True,
    seed: int | None = None,
    progress: bool = True,
    preprocess: Callable | None = None,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    batch: int = 1,
    fft: bool | None = None,
    decorrelate: bool | None = None,
    valid: str | None = None,
) -> InversionResult:
    """Optimize an input, from noise or a real image, until ``model`` gives ``target``.

    Args:
        model: the network (eval mode during the run, restored afterwards).
        target: from :func:`class_target`, :func:`text_target`, :func:`activation_target`, or your own.
        init: None for noise (then give ``size``), or a real image (PIL, numpy, tensor in [0, 1]),
            whose size is used as is.
        steps: at most this many steps; with ``stop`` the run ends once the target is met.
        lr: Adam learning rate (ignored when ``optimizer`` is given).
        penalty: subtracted from the target's objective to keep the image natural. "default":
            ``0.05 * total_variation()``, plus ``1.0 * L2(image, start)`` from a real image (stay
            close to it); None for none; or any Objective.
        transforms: "default" (a random shift by up to 1 pixel, none for pixel-aligned targets
            such as activation patterns), None for none, or transforms.
        check_every: steps between checks of the target on the untransformed image.
        seed, progress, preprocess: as in :func:`~dawnet.diagnose.optvis.render.render`.
        size, channels, batch: the image to create when starting from noise.
        fft: Fourier parameterization; default True from noise (smooth, natural images) and False
            from a real image (pixel edits stay local, so the image stays recognizable).
        decorrelate: colour decorrelation (default: for RGB).
        valid: "sigmoid" or "clamp"; default "clamp" from a real image (its black and white pixels
            would sit where a sigmoid has no gradient, and the start image is kept exactly),
            "sigmoid" from noise.
    """
    if steps < 1 or check_every < 1:
        raise ValueError(f"steps and check_every must be >= 1, got {steps} and {check_every}")
    g = _generator(seed)
    channels = channels or model_input_channels(model)
    if init is None or (isinstance(init, str) and init == "noise"):
        if size is None:
            raise ValueError("starting from noise needs size=(H, W) (or pass init=an image)")
        h, w = (size, size) if isinstance(size, int) else size
        start_img = None
    else:
        start_img = param_mod.to_tensor_image(init, channels)
        if size is not None:
            param_mod.to_tensor_image(
                start_img, channels, size=(size, size) if isinstance(size, int) else size
            )
        batch = max(batch, start_img.shape[0])
        h, w = start_img.shape[-2:]
    if valid is None:
        valid = "sigmoid" if start_img is None else "clamp"
    if fft is None:
        fft = start_img is None
    p = param_mod.image(
        h,
        w,
        batch=batch,
        channels=channels,
        fft=fft,
        decorrelate=decorrelate,
        generator=g,
        init=start_img,
        valid=valid,
    )
    start = p().detach().float().cpu()
    if penalty == "default":
        penalty = 0.05 * obj.total_variation()
        if start_img is not None:
            penalty = penalty + 1.0 * obj.L2("image", constant=start)
    objective = target.objective - penalty if penalty is not None else target.objective
    if isinstance(transforms, str) and transforms == "default":
        transforms = transform_mod.compose([transform_mod.jitter(2)]) if target.jitter else None
    if optimizer is None:
        optimizer = functools.partial(default_optimizer, lr=lr)

    # The check reads the output too, so the forward pass always runs to the end.
    objective_full = objective + 0 * _touch_output()
    satisfied, prediction, acts = False, [], {}
    with Visualization(model, objective_full, p, transforms, optimizer, preprocess, g) as vis:
        bar = _progress(steps, progress, target.description)
        try:
            for i in range(1, steps + 1):
                vis.step()
                if bar is not None:
                    bar.update(1)
                if i % check_every == 0 or i == steps:
                    _, acts = vis.evaluate()
                    satisfied, prediction = target.check(acts)
                    if bar is not None:
                        bar.set_postfix(met=satisfied, read=str(prediction[:2])[:40], refresh=False)
                    if satisfied and stop:
                        break
        finally:
            if bar is not None:
                bar.close()
        history = torch.stack(vis.history).float().cpu().tolist()
        image = vis.image()
        taken = vis.steps_done
    out = acts.get("output")
    return InversionResult(
        image=image,
        start=start,
        output=None if out is None else out.float().cpu(),
        prediction=prediction,
        satisfied=satisfied,
        steps=taken,
        history=history,
        distance=_distance(image, start),
        target=target.description,
        objective=repr(objective),
        param=p,
    )


def _touch_output() -> Objective:
    return Objective(lambda T: T("output").sum() * 0, "output", ["output"])


def invert_features(
    model: nn.Module,
    image,
    layer: str,
    *,
    tol: float = 0.05,
    steps: int = 1000,
    preprocess: Callable | None = None,
    **kwargs,
) -> InversionResult:
    """Feature inversion: from noise, find an input whose ``layer`` activations match those of ``image``.

    What survives in the result is what the layer keeps of the image (Mahendran & Vedaldi 2015).
    """
    from dawnet.diagnose.probe import capture

    channels = kwargs.pop("channels", None) or model_input_channels(model)
    x = param_mod.to_tensor_image(image, channels)
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
    x = x.to(device=device, dtype=dtype)
    if preprocess is not None:
        x = preprocess(x)
    acts, _ = capture(model, [layer], x)
    a = acts[layer]
    module = dict(model.named_modules()).get(layer)
    if isinstance(module, nn.RNNBase) and not module.batch_first:
        a = a.transpose(0, 1)
    return optimize_input(
        model,
        activation_target(layer, a, tol),
        None,
        steps=steps,
        preprocess=preprocess,
        size=tuple(x.shape[-2:]),
        channels=channels,
        batch=x.shape[0],
        **kwargs,
    )
