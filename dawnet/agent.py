"""The Agent: everything about learning, held apart from the model.

The model stays a plain ``nn.Module`` whose ``forward`` maps tensors to tensors. The agent holds the optimizer,
LR schedule, loss, metrics, history, callbacks, device, AMP, parallel wrapping, RNG state and checkpoints::

    agent = dawnet.Agent(model, torch.optim.AdamW(model.parameters(), 1e-3), loss=nn.CrossEntropyLoss(),
                         metrics=["accuracy"])
    agent.fit(train_loader, epochs=5, val=val_loader)
    agent.save("run/last.pt")
    agent = dawnet.Agent.load("run/last.pt")   # no user code needed: model, optimizer, schedule rebuilt
    agent.fit(train_loader, epochs=10)         # totals: continues from epoch 5

Task-specific learning (CTC, attention decoding, detection) lives in subclasses that override the task hooks
:meth:`unpack`, :meth:`compute_loss`, :meth:`predict`, :meth:`prepare` and :meth:`postprocess`, and extend
:meth:`config`. Everything that carries gradients runs through the (possibly DDP-wrapped) model's ``forward``,
so gradient synchronization is never skipped.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from dawnet import parallel
from dawnet.agent_state import AgentSnapshot, AgentStateMixin, PendingOptimizer, register_agent_class
from dawnet.batches import CPU, batch_size, describe, run_model, to_device
from dawnet.callbacks import Callback
from dawnet.devices import autocast, resolve_amp, resolve_device
from dawnet.errors import LossError, NonFiniteLossError, first_line
from dawnet.history import History
from dawnet.inputs import ImageInput
from dawnet.metrics import batch_value, resolve_metrics
from dawnet.progress import progress_bar, show_stats
from dawnet.sampling import epoch_loader, eval_loader, num_batches
from dawnet.totals import EvaluationState, add_total, reduce_totals

__all__ = ["Agent", "AgentSnapshot", "EvaluationState", "NonFiniteLossError", "LossError"]


class Agent(AgentStateMixin):
    """Holds learning for a plain ``nn.Module``: optimization, schedule, metrics, history, checkpoints, devices.

    Args:
        model: the ``nn.Module`` to train (a DataParallel wrapper is accepted and kept for its forward).
        optimizer: a ``torch.optim`` optimizer over ``model``'s parameters.
        loss: ``(outputs, targets) -> scalar tensor``, e.g. ``nn.CrossEntropyLoss()``; subclasses may compute
            their own loss instead.
        schedule: an LR scheduler on ``optimizer``, stepped once per optimizer step (None: constant LR).
        metrics: metric names (``"accuracy"``), callables ``(predictions, targets)``, or a dict name -> either.
        device: ``"auto"`` (CUDA when available, else CPU), or any ``torch.device`` spec.
        callbacks: :class:`dawnet.callbacks.Callback` instances.
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        accumulate: micro-batches per optimizer step (gradient accumulation).
        amp: False; True for float16 autocast + GradScaler on CUDA and bfloat16 autocast on CPU; or "fp16"/"bf16".
        seed: seed of the data order (default: ``torch.initial_seed()``); the order of epoch e depends on
            ``(seed, e)`` only, so it resumes exactly.
        input: an :class:`~dawnet.inputs.ImageInput` saying how raw images become model input for ``infer``.
        train_metrics: also compute the metrics on training batches (costs a ``predict`` per step).

    ``kind`` says what the agent's outputs are (``"generic"`` here; ``"ctc"``, ``"attention"``, ``"detection"``
    in dawnet's OCR agents), so callers test ``agent.kind`` rather than class names.
    """

    kind: str = "generic"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for hook in ("predict", "postprocess"):  # overrides written as hook(self, outputs) still work
            fn = cls.__dict__.get(hook)
            if fn is not None and _positional_count(fn) == 2:
                setattr(cls, hook, _ignore_inputs(fn))
        register_agent_class(cls)

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss=None,
        schedule=None,
        metrics=None,
        device: str | torch.device = "auto",
        callbacks: Iterable[Callback] = (),
        *,
        grad_clip: float | None = None,
        accumulate: int = 1,
        amp: bool | str = False,
        seed: int | None = None,
        input: ImageInput | dict | None = None,
        train_metrics: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        pending = isinstance(optimizer, PendingOptimizer)  # Agent.load builds it on first use
        if not pending and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer instance, got {type(optimizer).__name__}; "
                            "build it over model.parameters()")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip}")
        if not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate must be an integer >= 1, got {accumulate!r}")
        self.model = parallel.unwrap(model)
        self._forward_module = model if isinstance(model, nn.DataParallel) else self.model
        if not pending:
            _check_optimizer_owns(optimizer, self.model)
        self.device = resolve_device(device)
        self.model.to(self.device)
        self._pending = optimizer if pending else None
        self._optimizer = None if pending else optimizer
        self._schedule = schedule
        if schedule is not None and getattr(schedule, "optimizer", optimizer) is not optimizer:
            raise ValueError("schedule was built on a different optimizer than the one given to the Agent")
        self.loss = loss
        self.metrics = resolve_metrics(metrics)
        self.callbacks = list(callbacks)
        self.grad_clip = grad_clip
        self.accumulate = accumulate
        self.amp = resolve_amp(amp, self.device)
        self._scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.seed = int(torch.initial_seed() % 2**62) if seed is None else int(seed)
        self.input = ImageInput(**input) if isinstance(input, dict) else input
        self.train_metrics = train_metrics
        self.history = History()
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.batch_in_epoch = 0  # micro-batches consumed in the current epoch
        self.samples = 0  # training samples seen on this rank
        self.elapsed = 0.0  # training seconds, summed over resumed sessions
        self.stop_training = False
        self._micro = 0  # micro-batches accumulated since the last optimizer step
        self._window = [0.0, 0, 0]  # loss sum, micro-batches and samples of the current accumulation window
        self._epoch_len: int | None = None  # micro-batches in the current epoch, when the data has a length
        self._epoch_totals: dict[str, list[float]] = {}  # name -> [total, count] of the epoch so far
        self._ddp: nn.Module | None = None
        self._last_step_end: float | None = None

    # -- task hooks: override these for other tasks ---------------------------------------------

    def unpack(self, batch) -> tuple[tuple, Any]:
        """Split a batch into the model's inputs (a tuple) and the targets. Default: ``(x, y)``."""
        if isinstance(batch, Mapping):
            raise TypeError("the default Agent takes (inputs, targets) batches; for dict batches subclass Agent and "
                            "override unpack(batch) -> ((model inputs...), targets)")
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"the default Agent takes (inputs, targets) batches, got {describe(batch)}; subclass "
                            "Agent and override unpack() for other batch structures")
        return (batch[0],), batch[1]

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        """The scalar loss to minimize. Default: ``self.loss(outputs, targets)``."""
        if self.loss is None:
            raise ValueError("this Agent has no loss: pass loss= (e.g. nn.CrossEntropyLoss()) or override "
                             "compute_loss()")
        return self.loss(outputs, targets)

    def predict(self, outputs, inputs=()):
        """What the metrics compare with the targets (e.g. decoded text). Default: the outputs themselves.

        ``inputs`` is the tuple :meth:`unpack` gave the model (decoders that need image widths read them here).
        """
        return outputs

    def prepare(self, raw) -> tuple:
        """Model inputs from one raw data point: a path, PIL image, numpy array or tensor (see ``input``)."""
        converter = self.input or ImageInput()
        return (converter(raw),)

    def postprocess(self, outputs, inputs=()):
        """The answer ``infer`` returns for the model's outputs (``inputs``: what :meth:`prepare` gave the model).
        Default: the outputs, on the CPU."""
        return to_device(outputs, CPU)

    def config(self) -> dict:
        """JSON-able keyword arguments that rebuild this agent with its model, optimizer and schedule.

        ``type(agent)(model, optimizer, loss=..., schedule=..., metrics=..., **agent.config())`` is how
        ``Agent.load`` rebuilds it; subclasses add their own arguments to this dict.
        """
        return {
            "grad_clip": self.grad_clip,
            "accumulate": self.accumulate,
            "amp": self._amp_arg,
            "seed": self.seed,
            "input": None if self.input is None else self.input.to_dict(),
            "train_metrics": self.train_metrics,
        }

    # -- learning ---------------------------------------------------------------------------------

    def learn(self, batch) -> dict:
        """One micro-batch of learning; an optimizer step (and one schedule step) every ``accumulate`` calls.

        Returns ``{"loss", "lr", "step", "stepped"}`` (``stepped``: whether the optimizer stepped).
        """
        module = self._train_module()
        if not self.model.training:
            self.model.train()
        inputs, targets = self.unpack(to_device(batch, self.device))
        # the last micro-batch of an epoch closes the accumulation window (and syncs gradients under DDP)
        final = self._micro + 1 >= self.accumulate or (
            self._epoch_len is not None and self.batch_in_epoch + 1 >= self._epoch_len)
        if self._ddp is not None and not final:
            with module.no_sync():
                outputs, value = self._forward_backward(module, inputs, targets)
        else:  # the common case enters no context at all: at a millisecond a step, each one shows
            outputs, value = self._forward_backward(module, inputs, targets)
        size = batch_size(inputs)
        self._micro += 1
        window = self._window
        window[0] += value
        window[1] += 1
        window[2] += size
        self.samples += size
        add_total(self._epoch_totals, "loss", value * size, size)
        if self.train_metrics and self.metrics:
            with torch.no_grad():
                self._update_metrics(self.predict(outputs, inputs), targets, size, self._epoch_totals)
        stats = {"loss": value, "lr": self.lr, "step": self.step, "stepped": False}
        if final:
            stats.update(self._optimizer_step())
        return stats

    def _forward_backward(self, module: nn.Module, inputs: tuple, targets) -> tuple[Any, float]:
        if self.amp:
            with self._autocast():
                outputs = run_model(module, inputs)
                loss = self._loss(outputs, targets)
        else:
            outputs = run_model(module, inputs)
            loss = self._loss(outputs, targets)
        value = loss.item()  # the one sync a step needs: the finite check and the history read it
        if not math.isfinite(value):
            self.discard_window()
            raise NonFiniteLossError(
                f"the loss is {value} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch}); "
                "training stopped and the weights were not updated. Lower the learning rate, clip gradients "
                "(grad_clip=1.0), or check the data for NaN/inf values"
            )
        if self.accumulate > 1:
            loss = loss / self.accumulate
        (self._scaler.scale(loss) if self._scaler else loss).backward()
        return outputs, value

    def discard_window(self) -> None:
        """Drop the gradients and loss of an unfinished accumulation window (e.g. after an interrupted step)."""
        self.optimizer.zero_grad(set_to_none=True)
        self._micro, self._window = 0, [0.0, 0, 0]

    def _optimizer_step(self) -> dict:
        stats: dict = {"stepped": True}
        if self.grad_clip is not None:
            if self._scaler:
                self._scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            stats["grad_norm"] = float(norm)
        lr, momentum = self.lr, self.momentum
        if self._scaler:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.schedule is not None:
            self.schedule.step()
        self.step += 1
        loss, samples = self._window[0] / self._window[1], self._window[2]
        self._micro, self._window = 0, [0.0, 0, 0]
        now = time.perf_counter()
        seconds = now - self._last_step_end if self._last_step_end is not None else None
        self._last_step_end = now
        record = self.history.log_step(
            step=self.step,
            epoch=self.epoch,
            loss=loss,
            lr=lr,
            momentum=momentum,
            samples_per_s=samples / seconds if seconds else None,
            time=self.elapsed + (now - self._session_start if self._session_start else 0.0),
            grad_norm=stats.get("grad_norm"),
        )
        stats.update(loss=loss, step=self.step)
        self._call("on_step_end", record)
        return stats

    def fit(self, train, epochs: int | None = None, steps: int | None = None, val=None,
            progress: bool = True) -> History:
        """Train until the agent has completed ``epochs`` epochs or ``steps`` optimizer steps (totals).

        Because both are totals, a loaded agent continues where it stopped. Validation runs on ``val`` at the
        end of each epoch. Under ``torchrun`` the model is wrapped in DistributedDataParallel and the data
        sharded per rank. Returns the history.
        """
        if epochs is None and steps is None:
            raise ValueError("give epochs= or steps= (totals: train until the agent has done that many)")
        n = num_batches(train)
        if n == 0:
            raise ValueError("the training data is empty (0 batches): check the dataset's length, and "
                             "drop_last=True with a batch size larger than the data set")
        if self._done(epochs, steps):
            warnings.warn(f"nothing to do: the agent is at epoch {self.epoch}, step {self.step}, which already "
                          f"reaches epochs={epochs} / steps={steps}; these are totals, so pass larger ones to "
                          "continue", stacklevel=2)
            return self.history
        self._train_module()  # joins the process group and wraps DDP before the first batch
        rank, world = parallel.rank(), parallel.world_size()
        self.stop_training = False
        self._session_start, self._last_step_end = time.perf_counter(), None
        show = progress and parallel.is_main_process()
        self._call("on_fit_start")
        try:
            while not self._done(epochs, steps) and not self.stop_training:
                if self.batch_in_epoch == 0:
                    self._epoch_totals = {}
                    self._call("on_epoch_start")
                data = epoch_loader(train, self.epoch, self.seed, self.batch_in_epoch, rank, world)
                remaining = num_batches(data)
                self._epoch_len = None if remaining is None else self.batch_in_epoch + remaining
                bar = progress_bar(self._epoch_len, self.epoch, self.batch_in_epoch, show)
                for batch in data:
                    stats = self.learn(batch)
                    self.batch_in_epoch += 1
                    if bar is not None:
                        bar.update()
                        show_stats(bar, stats, self.history)
                    if stats["stepped"] and (self._done(None, steps) or self.stop_training):
                        break
                if bar is not None:
                    bar.close()
                if self._epoch_len is None or self.batch_in_epoch >= self._epoch_len:
                    self._end_epoch(val)
        finally:
            if self._session_start is not None:
                self.elapsed += time.perf_counter() - self._session_start
            self._session_start = None
            self._epoch_len = None  # the epoch's length means nothing outside fit (learn() alone, lr_find)
            self._call("on_fit_end")
        return self.history

    def _end_epoch(self, val) -> None:
        if self._micro:  # data without a length: the partial accumulation window still takes its step
            self._optimizer_step()
        values = reduce_totals(self._epoch_totals)
        record = {"epoch": self.epoch + 1, "step": self.step, "time": self.elapsed + time.perf_counter() -
                  self._session_start}
        record.update({f"train_{k}" if k != "loss" else "loss": v for k, v in values.items()})
        self.epoch += 1
        self.batch_in_epoch = 0
        if val is not None:
            results = self.evaluate(val)
            record.update({f"val_{k}": v for k, v in results.items()})
        logged = self.history.log_epoch(**record)
        if val is not None:
            self._call("on_validation_end", logged)
        self._call("on_epoch_end", logged)

    def evaluate(self, data) -> dict:
        """Loss and metrics over ``data``: no gradients, eval mode, the previous mode restored.

        Runs ``state = evaluation_state()``, ``update_evaluation(state, outputs, targets, inputs)`` per batch and
        returns ``finish_evaluation(state)``; agents with metrics that are not sums override those three. Under
        DDP each rank evaluates its share and the sums are all-reduced, so every rank returns the same.
        """
        was_training = self.model.training
        self.model.eval()
        state = self.evaluation_state()
        try:
            with torch.no_grad(), self._autocast():
                for batch in eval_loader(data, parallel.rank(), parallel.world_size()):
                    inputs, targets = self.unpack(to_device(batch, self.device))
                    outputs = run_model(self._forward_module, inputs)
                    state.batches += 1
                    self.update_evaluation(state, outputs, targets, inputs)
        finally:
            self.model.train(was_training)
        if state.batches == 0 and parallel.world_size() == 1:
            raise ValueError("the evaluation data is empty (0 batches)")
        with torch.no_grad():
            return self.finish_evaluation(state)

    def evaluation_state(self) -> EvaluationState:
        """A fresh accumulator for one :meth:`evaluate` (override to add attributes such as a prediction list)."""
        return EvaluationState()

    def update_evaluation(self, state: EvaluationState, outputs, targets, inputs: tuple) -> None:
        """Add one batch to ``state`` (eval mode, no gradients): the loss times the batch size, and each metric's
        ``(total, count)``."""
        size = batch_size(inputs)
        state.samples += size
        if self.loss is not None or type(self).compute_loss is not Agent.compute_loss:
            state.add("loss", float(self._loss(outputs, targets)) * size, size)
        if self.metrics:
            self._update_metrics(self.predict(outputs, inputs), targets, size, state.totals)

    def finish_evaluation(self, state: EvaluationState) -> dict[str, float]:
        """The results of one :meth:`evaluate`, on every rank: ``{name: total / count}`` summed over DDP ranks."""
        return reduce_totals(state.totals)

    @torch.no_grad()
    def infer(self, x):
        """The model's answer for one raw data point (path, PIL image, numpy array, tensor).

        ``prepare`` turns it into inputs, the model runs in eval mode (its mode is restored) and
        ``postprocess`` turns the outputs into the answer.
        """
        inputs = to_device(self.prepare(x), self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                outputs = run_model(self._forward_module, inputs)
        finally:
            self.model.train(was_training)
        return self.postprocess(outputs, inputs)

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def momentum(self) -> float | None:
        """Momentum (SGD) or beta1 (Adam family) of the first parameter group, when the optimizer has one."""
        group = self.optimizer.param_groups[0]
        if "betas" in group:
            return float(group["betas"][0])
        return float(group["momentum"]) if "momentum" in group else None

    # -- internals --------------------------------------------------------------------------------

    _session_start: float | None = None
    _single_process = False

    @property
    def _amp_arg(self):
        return self.amp or False

    def _train_module(self) -> nn.Module:
        if self._ddp is None and not self._single_process and parallel.init_distributed(self.device):
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self._ddp is None:
            self._single_process = True  # WORLD_SIZE is fixed for the life of a process: ask once
            return self._forward_module
        return self._ddp

    def _autocast(self):
        return autocast(self.amp, self.device)

    def _loss(self, outputs, targets) -> torch.Tensor:
        try:
            loss = self.compute_loss(outputs, targets)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            if isinstance(e, (LossError, NonFiniteLossError)) or "has no loss" in str(e):
                raise
            name = type(self.loss).__name__ if self.loss is not None else f"{type(self).__name__}.compute_loss"
            raise LossError(
                f"{name} failed on model output {describe(outputs)} and targets {describe(targets)}: "
                f"{first_line(e)}. The model's output must "
                "fit the loss (e.g. CrossEntropyLoss takes (N, C) scores and (N,) class indices)"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise LossError(f"the loss must be a scalar tensor, got {describe(loss)}; reduce it (e.g. mean)")
        return loss.reshape(()) if loss.dim() else loss

    def _update_metrics(self, predictions, targets, size: int, totals: dict) -> None:
        for name, metric in self.metrics.items():
            total, count = batch_value(metric, predictions, targets, size)
            add_total(totals, name, total, count)

    def _done(self, epochs: int | None, steps: int | None) -> bool:
        return (epochs is not None and self.epoch >= epochs) or (steps is not None and self.step >= steps)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def __repr__(self) -> str:
        optimizer = self._pending.name if self._pending is not None else type(self._optimizer).__name__
        return (f"{type(self).__name__}(model={type(self.model).__name__}, optimizer={optimizer}, "
                f"device={self.device}, epoch={self.epoch}, step={self.step})")


# -- helpers ----------------------------------------------------------------------------------------


def _check_optimizer_owns(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    own = {id(p) for p in model.parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in own:
                raise ValueError("the optimizer holds parameters that are not the model's: build the optimizer over "
                                 "model.parameters() of this model (after any rebuilding or surgery)")


def _positional_count(fn) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return -1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return -1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def _ignore_inputs(fn):
    """Adapt a ``hook(self, outputs)`` override to the ``hook(self, outputs, inputs)`` the Agent calls."""

    @functools.wraps(fn)
    def hook(self, outputs, inputs=()):
        return fn(self, outputs)

    return hook


register_agent_class(Agent)
