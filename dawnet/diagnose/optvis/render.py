"""The render loop: optimize an image parameterization so the model maximizes an objective.

``render`` is the one call with Lucid's defaults (Adam lr 0.05, 512 steps, FFT + decorrelated
colour, standard transforms); :class:`Visualization` is the inner builder for power users
(one ``step()`` at a time, your own schedule or stopping rule). Lucid's ``make_vis_T``/``render_vis``.

What happens around the loop, and why:

- the model runs on its own device and dtype, in eval mode (BatchNorm/dropout frozen); its mode,
  its parameters' ``requires_grad`` (switched off: weight gradients are never needed) and any
  recurrent layer's settings are restored afterwards, also after an exception;
- only the layers the objective reads are hooked, and the hooks are removed on exit; when the
  objective does not read the model's output, the forward pass stops right after the last
  hooked layer ran (later layers would only cost time);
- on CUDA, cuDNN cannot backpropagate through an LSTM/GRU in eval mode, so recurrent layers run
  in train mode with their inter-layer dropout set to 0 for the duration (same numbers);
- nothing is ever resized: the model sees exactly the ``H x W`` of the parameterization.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn

from dawnet.diagnose.forward import eval_mode, param_like
from dawnet.diagnose.optvis import param as param_mod
from dawnet.diagnose.optvis import transform as transform_mod
from dawnet.diagnose.optvis.objectives import PSEUDO_LAYERS, Objective, as_objective
from dawnet.diagnose.probe import primary_tensor, resolve_layers, unwrap

__all__ = ["render", "Visualization", "RenderResult", "model_input_channels", "tensor_to_pil"]

DEFAULT_LR = 0.05
DEFAULT_STEPS = 512
DEFAULT_SIZE = 128


def default_optimizer(params, lr: float = DEFAULT_LR) -> torch.optim.Optimizer:
    """Adam (Lucid's choice), fused into one kernel where torch supports it.

    An unfused Adam step is a dozen tiny ops; on a busy CPU each waits for its threads, which made
    the update cost as much as 15% of a whole visualization step (one kernel: about 1-2%).
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr)


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


def model_input_channels(model: nn.Module) -> int:
    """The number of input channels of the first convolution (or linear layer) of ``model``."""
    for m in unwrap(model).modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return m.in_channels
    raise ValueError(
        f"cannot tell how many input channels {type(model).__name__} takes (no Conv2d found): "
        f"pass channels= or an explicit param="
    )


class _Activations:
    """``T(name)``: what objectives read during one step."""

    def __init__(self):
        self.values: dict[str, torch.Tensor] = {}

    def __call__(self, name: str) -> torch.Tensor:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(
                f"layer {name!r} was not captured in this step (the objective declares "
                f"{sorted(self.values)}); declare the layer when you build a custom Objective"
            ) from None

    __getitem__ = __call__


class Visualization:
    """One feature visualization being optimized: hooks, parameterization, transforms, optimizer.

    Use as a context manager (hooks and model state are restored on exit)::

        with Visualization(model, channel("conv3", 5), image(64, channels=1)) as vis:
            for _ in range(100):
                vis.step()
            img = vis.image()

    Args:
        model: the network (any ``nn.Module`` taking one image tensor).
        objective: an Objective (or ``"layer:channel"``); it is maximized.
        param: an :class:`~dawnet.diagnose.optvis.param.ImageParam`; moved to the model's device.
        transforms: a transform / list of transforms (composed, size kept), or None for none.
        optimizer: None (Adam, lr 0.05), a factory ``params -> Optimizer``, or an Optimizer.
        preprocess: applied after the transforms, before the model (e.g. mean/std normalization).
        generator: RNG for the transforms.
    """

    def __init__(
        self,
        model: nn.Module,
        objective,
        param: param_mod.ImageParam,
        transforms=None,
        optimizer=None,
        preprocess: Callable | None = None,
        generator: torch.Generator | None = None,
    ):
        self.model = unwrap(model)
        self.objective: Objective = as_objective(objective)
        self.device, self.dtype = param_like(self.model)
        pdtype = self.dtype if self.dtype in (torch.float32, torch.float64) else torch.float32  # no half FFT
        self.param = param.to(device=self.device, dtype=pdtype)
        if isinstance(transforms, (list, tuple)):
            transforms = transform_mod.compose(transforms) if transforms else None
        self.transforms = transforms
        self.preprocess = preprocess
        self.generator = generator
        params = list(self.param.parameters())
        if optimizer is None:
            self.optimizer = default_optimizer(params)
        elif isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
        elif callable(optimizer):
            self.optimizer = optimizer(params)
        else:
            raise TypeError(
                f"optimizer must be None, an Optimizer or a factory params -> Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        layers = [n for n in self.objective.layers if n not in PSEUDO_LAYERS or n == "output"]
        modules = resolve_layers(self.model, [n for n in layers if n != "output"])
        if "output" in layers and "output" in dict(self.model.named_modules()):
            modules["output"] = dict(self.model.named_modules())["output"]
        self._modules = modules
        # Stop the forward early unless the objective reads the model's own output.
        self._stop_early = not ("output" in layers and "output" not in modules)
        self._acts = _Activations()
        self._handles: list = []
        self._stack: ExitStack | None = None
        self.history: list[torch.Tensor] = []
        self.steps_done = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> Visualization:
        """Put the model in eval mode and hook the needed layers (``with`` does this)."""
        if self._stack is not None:
            return self
        stack = ExitStack()
        try:
            stack.enter_context(eval_mode(self.model, freeze=True, backprop_rnn=True))
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name, module)))
            stack.callback(self._remove_hooks)
        except BaseException:
            self._remove_hooks()
            stack.close()
            raise
        self._stack = stack
        return self

    def close(self) -> None:
        """Remove the hooks and restore the model (idempotent)."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def _remove_hooks(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> Visualization:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _hook(self, name: str, module: nn.Module):
        def hook(mod, args, output):
            t = primary_tensor(output, mod)
            if isinstance(mod, nn.RNNBase) and not mod.batch_first:
                t = t.transpose(0, 1)  # objectives see sequences as (N, T, F)
            self._acts.values[name] = t
            if self._stop_early and len(self._acts.values) - 2 == len(self._modules):
                raise _StopForward

        return hook

    # -- one step --------------------------------------------------------------------------------
    def forward(self) -> torch.Tensor:
        """Build the image, transform it, run the model and return the objective (with its graph)."""
        if self._stack is None:
            raise RuntimeError(
                "open the visualization first: `with Visualization(...) as vis:` or vis.open()"
            )
        acts = self._acts.values
        acts.clear()
        img = self.param()
        x = self.transforms(img, self.generator) if self.transforms is not None else img
        if self.preprocess is not None:
            x = self.preprocess(x)
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        acts["image"], acts["input"] = img, x
        if not self._modules and self._stop_early:
            pass  # the objective reads only the image: no forward pass at all
        else:
            try:
                out = self.model(x)
            except _StopForward:
                pass
            else:
                if "output" not in self._modules:
                    acts["output"] = primary_tensor(out)
        value = self.objective(self._acts)
        if value.numel() != 1:
            raise ValueError(
                f"objective {self.objective!r} returned shape {tuple(value.shape)}, not a scalar"
            )
        return value.reshape(())

    def step(self) -> torch.Tensor:
        """One optimization step; returns the objective's value before the step (a detached tensor)."""
        self.optimizer.zero_grad(set_to_none=True)
        value = self.forward()
        (-value).backward()
        self.optimizer.step()
        value = value.detach()
        self.history.append(value)
        self.steps_done += 1
        return value

    @torch.no_grad()
    def evaluate(self) -> tuple[float, dict[str, torch.Tensor]]:
        """Objective value and captured activations for the current image *without* transforms.

        This is what the model makes of the image itself (used to check a target is reached).
        """
        transforms, self.transforms = self.transforms, None
        try:
            value = self.forward()
        finally:
            self.transforms = transforms
        return float(value), {k: v.detach() for k, v in self._acts.values.items()}

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        """The current image ``(N, C, H, W)`` in ``[0, 1]``, detached, on the CPU in float32."""
        return self.param().detach().float().cpu()


def tensor_to_pil(img: torch.Tensor):
    """A ``(C, H, W)`` tensor in [0, 1] as a PIL image (L: 1 channel, RGB: 3, else the channels in a row)."""
    from PIL import Image

    img = img.detach().float().clamp(0, 1).cpu()
    arr = (img * 255 + 0.5).to(torch.uint8)
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), mode="L")
    if arr.shape[0] == 3:
        return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")
    return Image.fromarray(torch.cat(list(arr), dim=1).numpy(), mode="L")  # N-channel: channels side by side


@dataclass
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        tensors: threshold -> images ``(N, C, H, W)`` in [0, 1] (CPU float32).
        history: objective value after each step's forward pass (before its update).
        objective: the objective's formula.
        param: the optimized parameterization (keep optimizing it, or read ``param()``).
    """

    tensors: dict[int, torch.Tensor]
    history: list[float]
    objective: str
    param: param_mod.ImageParam | None = field(default=None, repr=False)

    @property
    def final(self) -> torch.Tensor:
        """Images at the last threshold."""
        return self.tensors[max(self.tensors)]

    @functools.cached_property
    def images(self) -> dict[int, list]:
        """threshold -> list of PIL images (one per batch item)."""
        return {t: [tensor_to_pil(im) for im in x] for t, x in self.tensors.items()}

    @functools.cached_property
    def figure(self):
        """A matplotlib Figure: one row per image in the batch, one column per threshold, and the curve."""
        from matplotlib.figure import Figure

        thresholds = sorted(self.tensors)
        n = self.final.shape[0]
        h, w = self.final.shape[-2:]
        cell_w, cell_h = _cell_size(h, w)
        fig = Figure(figsize=(cell_w * len(thresholds) + 2.6, cell_h * n + 0.6), layout="constrained")
        axes = fig.subplots(n, len(thresholds) + 1, squeeze=False)
        for i in range(n):
            for j, t in enumerate(thresholds):
                ax = axes[i][j]
                im = self.tensors[t][i]
                if im.shape[0] == 3:
                    ax.imshow(im.permute(1, 2, 0).clamp(0, 1).numpy())
                else:
                    shown = im[0] if im.shape[0] == 1 else torch.cat(list(im), dim=1)
                    ax.imshow(shown.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"step {t}", fontsize=9)
            curve = axes[i][-1]
            if i == 0:
                curve.plot(range(1, len(self.history) + 1), self.history)
                curve.set_xlabel("step")
                curve.set_title("objective", fontsize=9)
            else:
                curve.axis("off")
        fig.suptitle(self.objective, fontsize=9)
        return fig

    def save(self, path: str, threshold: int | None = None) -> None:
        """Write the images at ``threshold`` (default: last) as one PNG, batch side by side; atomic."""
        from dawnet.atomic import atomic_write

        x = self.tensors[max(self.tensors) if threshold is None else threshold]
        strip = torch.cat(list(x), dim=-1)  # (C, H, N*W)
        img = tensor_to_pil(strip)
        with atomic_write(path) as f:
            img.save(f, format="PNG")


def _cell_size(h: int, w: int) -> tuple[float, float]:
    """Inches for one image in a figure: 2.2 on the short side, the aspect kept (text lines are wide)."""
    if w >= h:
        return min(2.2 * w / h, 9.0), 2.2
    return 2.2, min(2.2 * h / w, 9.0)


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator()
    # Without a seed, draw one from torch's global RNG so torch.manual_seed() still makes runs repeatable.
    g.manual_seed(int(torch.randint(0, 2**62, ())) if seed is None else int(seed))
    return g


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def render(
    model: nn.Module,
    objective,
    param: param_mod.ImageParam | None = None,
    transforms=None,
    optimizer=None,
    steps: int = DEFAULT_STEPS,
    thresholds: Iterable[int] | None = None,
    seed: int | None = None,
    progress: bool = True,
    *,
    preprocess: Callable | None = None,
    size: int | Sequence[int] = DEFAULT_SIZE,
    channels: int | None = None,
    batch: int = 1,
    init=None,
) -> RenderResult:
    """Optimize an image so that ``model`` maximizes ``objective`` (Lucid's ``render_vis``).

    Args:
        model: the network; it runs on its own device and dtype, in eval mode, restored afterwards.
        objective: an :class:`Objective`, or ``"layer:channel"``.
        param: the image parameterization; default ``param.image(size, channels=...)`` (FFT, and
            decorrelated colour for 3 channels), created on the model's device.
        transforms: default (None) Lucid's standard transforms; ``[]`` or False for none; or a
            transform / list of transforms (composed, size kept).
        optimizer: None (Adam, lr 0.05), a factory ``params -> Optimizer``, or an Optimizer.
        steps: optimization steps (512).
        thresholds: steps after which to keep the images (default: only the last).
        seed: makes the initialization and the transforms repeatable.
        progress: show a tqdm progress bar.
        preprocess: applied after the transforms (e.g. normalization the model expects).
        size: ``H`` or ``(H, W)`` of the default parameterization (128).
        channels: channels of the default parameterization (default: the first conv's in_channels).
        batch: images of the default parameterization (e.g. 4 with a diversity objective).
        init: start the default parameterization from a real image (PIL, numpy, tensor in [0, 1]),
            e.g. DeepDream from a photo or a handwritten line; its size is used as is.

    Returns:
        a :class:`RenderResult`: ``tensors`` and ``images`` (PIL) at each threshold, ``figure``, ``history``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    thresholds = sorted({int(t) for t in (thresholds or (steps,))})
    if thresholds[0] < 0 or thresholds[-1] > steps:
        raise ValueError(f"thresholds must lie in 0..steps={steps}, got {thresholds}")
    g = _generator(seed)
    if param is None:
        channels = channels or model_input_channels(model)
        if init is not None:
            init = param_mod.to_tensor_image(init, channels)
            (h, w), batch = init.shape[-2:], max(batch, init.shape[0])
        else:
            h, w = _size(size)
        param = param_mod.image(h, w, batch=batch, channels=channels, generator=g, init=init)
    elif init is not None:
        raise ValueError("pass init= or param=, not both: use param.set_image(init) on your parameterization")
    if transforms is None:
        transforms = transform_mod.standard_transforms()
    elif transforms is False:
        transforms = None
    tensors: dict[int, torch.Tensor] = {}
    with Visualization(model, objective, param, transforms, optimizer, preprocess, g) as vis:
        if 0 in thresholds:
            tensors[0] = vis.image()
        bar = _progress(steps, progress, str(vis.objective))
        try:
            for i in range(1, steps + 1):
                value = vis.step()
                if bar is not None:
                    bar.update(1)
                    if i % 16 == 0 or i == steps:
                        bar.set_postfix(objective=f"{float(value):.4g}", refresh=False)
                if i in thresholds:
                    tensors[i] = vis.image()
        finally:
            if bar is not None:
                bar.close()
        history = torch.stack(vis.history).float().cpu().tolist() if vis.history else []
    if any(not math.isfinite(v) for v in history):
        bad = next(i for i, v in enumerate(history, 1) if not math.isfinite(v))
        raise FloatingPointError(
            f"the objective became {history[bad - 1]} at step {bad}: lower the learning "
            f"rate, add penalties (L2, total_variation) or check the objective"
        )
    return RenderResult(tensors=tensors, history=history, objective=repr(vis.objective), param=vis.param)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"render {desc[:40]}", leave=False)
