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

import contextlib
import functools
import importlib
import inspect
import math
import random
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import dawnet
from dawnet import parallel
from dawnet.callbacks import Callback
from dawnet.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, load_model_weights, save_checkpoint
from dawnet.history import History
from dawnet.inputs import ImageInput
from dawnet.metrics import batch_value, metric_names, resolve_metrics
from dawnet.registry import build_model, check_json_spec, model_spec
from dawnet.sampling import epoch_loader, eval_loader, num_batches

__all__ = ["Agent", "NonFiniteLossError", "LossError"]

_AGENT_CLASSES: dict[str, type] = {}  # "module.QualName" -> Agent subclass, filled as subclasses are defined


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before the weights were updated."""


class LossError(ValueError):
    """The loss could not be computed from the model's output and the targets."""


class Agent:
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
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _AGENT_CLASSES[f"{cls.__module__}.{cls.__qualname__}"] = cls

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
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer instance, got {type(optimizer).__name__}; "
                            "build it over model.parameters()")
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip}")
        if not isinstance(accumulate, int) or accumulate < 1:
            raise ValueError(f"accumulate must be an integer >= 1, got {accumulate!r}")
        self.model = parallel.unwrap(model)
        self._forward_module = model if isinstance(model, nn.DataParallel) else self.model
        _check_optimizer_owns(optimizer, self.model)
        self.device = _resolve_device(device)
        self.model.to(self.device)
        self.optimizer = optimizer
        self.schedule = schedule
        if schedule is not None and getattr(schedule, "optimizer", optimizer) is not optimizer:
            raise ValueError("schedule was built on a different optimizer than the one given to the Agent")
        self.loss = loss
        self.metrics = resolve_metrics(metrics)
        self.callbacks = list(callbacks)
        self.grad_clip = grad_clip
        self.accumulate = accumulate
        self.amp = _resolve_amp(amp, self.device)
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
            raise TypeError(f"the default Agent takes (inputs, targets) batches, got {_describe(batch)}; subclass "
                            "Agent and override unpack() for other batch structures")
        return (batch[0],), batch[1]

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        """The scalar loss to minimize. Default: ``self.loss(outputs, targets)``."""
        if self.loss is None:
            raise ValueError("this Agent has no loss: pass loss= (e.g. nn.CrossEntropyLoss()) or override "
                             "compute_loss()")
        return self.loss(outputs, targets)

    def predict(self, outputs):
        """What the metrics compare with the targets (e.g. decoded text). Default: the outputs themselves."""
        return outputs

    def prepare(self, raw) -> tuple:
        """Model inputs from one raw data point: a path, PIL image, numpy array or tensor (see ``input``)."""
        converter = self.input or ImageInput()
        return (converter(raw),)

    def postprocess(self, outputs):
        """The answer ``infer`` returns for the model's outputs. Default: the outputs, on the CPU."""
        return _to_device(outputs, torch.device("cpu"))

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
        inputs, targets = self.unpack(_to_device(batch, self.device))
        # the last micro-batch of an epoch closes the accumulation window (and syncs gradients under DDP)
        final = self._micro + 1 >= self.accumulate or (
            self._epoch_len is not None and self.batch_in_epoch + 1 >= self._epoch_len)
        sync = contextlib.nullcontext() if final or self._ddp is None else module.no_sync()
        with sync:
            with self._autocast():
                outputs = _run_model(module, inputs)
                loss = self._loss(outputs, targets)
            value = float(loss.detach())
            if not math.isfinite(value):
                self.discard_window()
                raise NonFiniteLossError(
                    f"the loss is {value} at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch}); "
                    "training stopped and the weights were not updated. Lower the learning rate, clip gradients "
                    "(grad_clip=1.0), or check the data for NaN/inf values"
                )
            scaled = loss / self.accumulate
            (self._scaler.scale(scaled) if self._scaler else scaled).backward()
        size = _batch_size(inputs)
        self._micro += 1
        self._window[0] += value
        self._window[1] += 1
        self._window[2] += size
        self.samples += size
        self._add_total("loss", value * size, size)
        if self.train_metrics and self.metrics:
            with torch.no_grad():
                self._update_metrics(self.predict(outputs), targets, size, prefix="")
        stats = {"loss": value, "lr": self.lr, "step": self.step, "stepped": False}
        if final:
            stats.update(self._optimizer_step())
        return stats

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
                bar = _progress(self._epoch_len, self.epoch, self.batch_in_epoch, show)
                for batch in data:
                    stats = self.learn(batch)
                    self.batch_in_epoch += 1
                    if bar is not None:
                        bar.update()
                        _show_stats(bar, stats, self.history)
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
            self._call("on_fit_end")
        return self.history

    def _end_epoch(self, val) -> None:
        if self._micro:  # data without a length: the partial accumulation window still takes its step
            self._optimizer_step()
        values = self._reduce_totals(self._epoch_totals)
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

        Under DDP each rank evaluates its share and the sums are all-reduced, so every rank returns the same.
        """
        was_training = self.model.training
        self.model.eval()
        totals: dict[str, list[float]] = {}
        batches = 0
        try:
            with torch.no_grad(), self._autocast():
                for batch in eval_loader(data, parallel.rank(), parallel.world_size()):
                    inputs, targets = self.unpack(_to_device(batch, self.device))
                    outputs = _run_model(self._forward_module, inputs)
                    size = _batch_size(inputs)
                    batches += 1
                    if self.loss is not None or type(self).compute_loss is not Agent.compute_loss:
                        loss = self._loss(outputs, targets)
                        _add(totals, "loss", float(loss) * size, size)
                    if self.metrics:
                        self._update_metrics(self.predict(outputs), targets, size, totals=totals)
        finally:
            self.model.train(was_training)
        if batches == 0 and parallel.world_size() == 1:
            raise ValueError("the evaluation data is empty (0 batches)")
        return self._reduce_totals(totals)

    @torch.no_grad()
    def infer(self, x):
        """The model's answer for one raw data point (path, PIL image, numpy array, tensor).

        ``prepare`` turns it into inputs, the model runs in eval mode (its mode is restored) and
        ``postprocess`` turns the outputs into the answer.
        """
        inputs = _to_device(self.prepare(x), self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                outputs = _run_model(self._forward_module, inputs)
        finally:
            self.model.train(was_training)
        return self.postprocess(outputs)

    # -- state and checkpoints ---------------------------------------------------------------------

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

    def state_dict(self) -> dict:
        """Everything needed to resume or infer, as tensors and plain data (the checkpoint's content).

        Tensors are the live ones (as ``nn.Module.state_dict``): deep-copy the result to keep a snapshot.
        """
        spec = model_spec(self.model)
        if spec is not None:
            check_json_spec(spec)
        return {
            "format": FORMAT,
            "version": VERSION,
            "dawnet_version": dawnet.__version__,
            "agent": {"class": _qualname(type(self)), "config": self.config()},
            "model": {"spec": spec, "class": _qualname(type(self.model)), "state_dict": self.model.state_dict()},
            "optimizer": _optimizer_state(self.optimizer, self.model),
            "schedule": None if self.schedule is None else {
                "class": _qualname(type(self.schedule)), "state_dict": _plain(self.schedule.state_dict())},
            "scaler": None if self._scaler is None else self._scaler.state_dict(),
            "loss": _loss_spec(self.loss),
            "metrics": metric_names(self.metrics),
            "history": self.history.state_dict(),
            "progress": {
                "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
                "samples": self.samples, "elapsed": self.elapsed,
                "epoch_totals": {k: list(v) for k, v in self._epoch_totals.items()},
            },
            "rng": _rng_state(),
            "callbacks": {key: cb.state_dict() for key, cb in self._keyed_callbacks() if hasattr(cb, "state_dict")},
        }

    def load_state_dict(self, state: dict, *, restore_rng: bool = True) -> None:
        """Restore a state from :meth:`state_dict` into this agent (weights, optimizer, schedule, progress, RNG)."""
        if self._micro:
            raise RuntimeError("cannot load a state in the middle of a gradient-accumulation window")
        load_model_weights(self.model, state["model"]["state_dict"], source="the checkpoint")
        self.optimizer.load_state_dict(state["optimizer"]["state_dict"])
        if self.schedule is not None and state.get("schedule"):
            self.schedule.load_state_dict(state["schedule"]["state_dict"])
        if self._scaler is not None and state.get("scaler"):
            self._scaler.load_state_dict(state["scaler"])
        self.history.load_state_dict(state["history"])
        progress = state["progress"]
        self.epoch, self.step = progress["epoch"], progress["step"]
        self.batch_in_epoch, self.samples = progress["batch_in_epoch"], progress["samples"]
        self.elapsed = progress["elapsed"]
        self._epoch_totals = {k: list(v) for k, v in progress.get("epoch_totals", {}).items()}
        for key, cb in self._keyed_callbacks():
            saved = state.get("callbacks", {}).get(key)
            if saved is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(saved)
        if restore_rng:
            _set_rng_state(state["rng"])

    def save(self, path: str | Path) -> Path | None:
        """Write a checkpoint atomically. Under DDP only rank 0 writes (returns None elsewhere).

        Non-finite weights are refused, so a diverged run never overwrites a good checkpoint.
        """
        if not parallel.is_main_process():
            return None
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLossError(f"refusing to save: parameter {name!r} holds NaN/inf values; the previous "
                                         f"checkpoint at {path} is kept")
        return save_checkpoint(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, map_location=None, *, model: nn.Module | None = None, loss=None,
             metrics=None, callbacks: Iterable[Callback] = (), trust_code: bool = False,
             restore_rng: bool = True) -> Agent:
        """Rebuild an agent from a checkpoint: model (from the registry), optimizer, schedule, history, progress.

        ``map_location`` is the device to load onto (default: ``"auto"``). Pass ``model=`` to load the weights
        into a model you built, and ``loss=``/``metrics=`` when the checkpoint could not store yours. Code that
        the checkpoint names outside dawnet and torch is imported only with ``trust_code=True``.
        """
        state = load_checkpoint(path, map_location="cpu")
        agent_cls = _agent_class(state["agent"]["class"], cls, trust_code)
        if model is None:
            spec = state["model"]["spec"]
            if spec is None:
                raise CheckpointError(
                    f"checkpoint {path} cannot rebuild its model: {state['model']['class']} was not built by a "
                    "registered constructor. Register it with @dawnet.register_model, or pass model= to Agent.load"
                )
            model = build_model(spec, trust_code=trust_code)
        load_model_weights(parallel.unwrap(model), state["model"]["state_dict"], source=str(path))
        optimizer = _build_optimizer(state["optimizer"], parallel.unwrap(model), trust_code)
        schedule = _build_schedule(state["schedule"], optimizer, trust_code, path)
        if loss is None:
            loss = _build_loss(state["loss"], path)
        if metrics is None:
            metrics = _build_metrics(state["metrics"], path)
        device = "auto" if map_location is None else map_location
        agent = agent_cls(model, optimizer, loss=loss, schedule=None, metrics=metrics, device=device,
                          callbacks=callbacks, **state["agent"]["config"])
        agent.schedule = schedule
        agent.load_state_dict(state, restore_rng=restore_rng)
        return agent

    # -- internals --------------------------------------------------------------------------------

    _session_start: float | None = None

    @property
    def _amp_arg(self):
        return self.amp or False

    def _train_module(self) -> nn.Module:
        if self._ddp is None and parallel.init_distributed(self.device):
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return self._ddp if self._ddp is not None else self._forward_module

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype)

    def _loss(self, outputs, targets) -> torch.Tensor:
        try:
            loss = self.compute_loss(outputs, targets)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            if isinstance(e, (LossError, NonFiniteLossError)) or "has no loss" in str(e):
                raise
            name = type(self.loss).__name__ if self.loss is not None else f"{type(self).__name__}.compute_loss"
            raise LossError(
                f"{name} failed on model output {_describe(outputs)} and targets {_describe(targets)}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}. The model's output must "
                "fit the loss (e.g. CrossEntropyLoss takes (N, C) scores and (N,) class indices)"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise LossError(f"the loss must be a scalar tensor, got {_describe(loss)}; reduce it (e.g. mean)")
        return loss.reshape(())

    def _update_metrics(self, predictions, targets, size: int, prefix: str = "", totals=None) -> None:
        for name, metric in self.metrics.items():
            total, count = batch_value(metric, predictions, targets, size)
            if totals is None:
                self._add_total(f"{prefix}{name}", total, count)
            else:
                _add(totals, name, total, count)

    def _add_total(self, name: str, total: float, count: float) -> None:
        _add(self._epoch_totals, name, total, count)

    def _reduce_totals(self, totals: dict[str, list[float]]) -> dict[str, float]:
        names = sorted(totals)
        flat = parallel.all_reduce_sum([x for n in names for x in totals[n]])
        return {n: (flat[2 * i] / flat[2 * i + 1] if flat[2 * i + 1] else float("nan")) for i, n in enumerate(names)}

    def _done(self, epochs: int | None, steps: int | None) -> bool:
        return (epochs is not None and self.epoch >= epochs) or (steps is not None and self.step >= steps)

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """Callbacks keyed for checkpoints: their ``name`` attribute, else class name and rank among that class."""
        seen: dict[str, int] = {}
        out = []
        for cb in self.callbacks:
            base = getattr(cb, "name", None) or type(cb).__name__
            seen[base] = seen.get(base, -1) + 1
            out.append((base if seen[base] == 0 else f"{base}#{seen[base]}", cb))
        return out

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(model={type(self.model).__name__}, optimizer={type(self.optimizer).__name__}, "
                f"device={self.device}, epoch={self.epoch}, step={self.step})")


# -- helpers ----------------------------------------------------------------------------------------


def _resolve_device(device) -> torch.device:
    if device == "auto" or device is None:
        if torch.cuda.is_available():
            local = int(__import__("os").environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; use device='cpu' or 'auto'")
    return device


def _resolve_amp(amp, device: torch.device) -> str | None:
    if amp in (False, None):
        return None
    if amp is True:
        return "fp16" if device.type == "cuda" else "bf16"
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"amp must be False, True, 'fp16' or 'bf16', got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; on the CPU use amp='bf16'")
    return amp


def _check_optimizer_owns(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    own = {id(p) for p in model.parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in own:
                raise ValueError("the optimizer holds parameters that are not the model's: build the optimizer over "
                                 "model.parameters() of this model (after any rebuilding or surgery)")


def _to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=obj.is_pinned()) if obj.device != device else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(o, device) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def _run_model(module: nn.Module, inputs: tuple):
    try:
        return module(*inputs)
    except (RuntimeError, ValueError, TypeError) as e:
        if hasattr(e, "add_note"):
            e.add_note(f"dawnet: the model was called with inputs {_describe(inputs)}")
        raise


def _batch_size(inputs) -> int:
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.dim() else 1
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            size = _batch_size(item)
            if size:
                return size
        return len(inputs)
    if isinstance(inputs, Mapping):
        return _batch_size(list(inputs.values()))
    return 0


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor{tuple(obj.shape)} {str(obj.dtype).replace('torch.', '')}"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(_describe(o) for o in obj[:4]) + (", ..." if len(obj) > 4 else "")
        return f"({inner})" if isinstance(obj, tuple) else f"[{inner}]"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in list(obj.items())[:4]) + "}"
    return type(obj).__name__


def _add(totals: dict, name: str, total: float, count: float) -> None:
    entry = totals.setdefault(name, [0.0, 0.0])
    entry[0] += total
    entry[1] += count


def _progress(total: int | None, epoch: int, start: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}",
                unit="batch", dynamic_ncols=True, leave=True)


def _show_stats(bar, stats: dict, history: History) -> None:
    now = time.monotonic()
    if now - getattr(bar, "_dawnet_shown", 0.0) < 0.5:  # formatting the postfix costs; refresh twice a second
        return
    bar._dawnet_shown = now
    post = {"loss": f"{stats['loss']:.4g}", "lr": f"{stats['lr']:.3g}"}
    speed = history.last("samples_per_s")
    if speed:
        post["samples/s"] = f"{speed:.0f}"
    if history.epochs:
        for key, value in history.epochs[-1].items():
            if key.startswith("val_"):
                post[key] = f"{value:.4g}"
    bar.set_postfix(post, refresh=False)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _import_qualified(name: str, trust_code: bool, what: str):
    module_name, _, attr = name.rpartition(".")
    trusted = module_name.split(".")[0] in ("torch", "dawnet")
    if not trusted and not trust_code:
        raise CheckpointError(f"the checkpoint's {what} is {name}, outside dawnet and torch: import "
                              f"{module_name!r} yourself first, or pass trust_code=True (only for code you trust)")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise CheckpointError(f"cannot import {module_name!r} for the checkpoint's {what} {name}: {e}") from e
    if not hasattr(obj, attr):
        raise CheckpointError(f"{module_name!r} has no {attr!r} (the checkpoint's {what})")
    return getattr(obj, attr)


def _agent_class(name: str, requested: type, trust_code: bool) -> type:
    if name == _qualname(Agent):
        found = Agent
    elif name in _AGENT_CLASSES:
        found = _AGENT_CLASSES[name]
    else:
        found = _import_qualified(name, trust_code, "agent class")
    if not issubclass(found, requested):
        raise CheckpointError(f"the checkpoint holds a {name}, which is not a {requested.__name__}; load it with "
                              f"dawnet.Agent.load or {found.__name__}.load")
    return found


def _optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    return {
        "class": _qualname(type(optimizer)),
        "defaults": _plain(optimizer.defaults),
        "groups": [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups],
        "state_dict": optimizer.state_dict(),
    }


def _build_optimizer(saved: dict, model: nn.Module, trust_code: bool) -> torch.optim.Optimizer:
    cls = _import_qualified(saved["class"], trust_code, "optimizer")
    params = dict(model.named_parameters(remove_duplicate=False))
    try:
        groups = [{"params": [params[n] for n in names]} for names in saved["groups"]]
    except KeyError as e:
        raise CheckpointError(f"the optimizer in the checkpoint refers to parameter {e.args[0]!r}, which the model "
                              "does not have") from None
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {k: v for k, v in saved["defaults"].items() if k in accepted}
    return cls(groups, **defaults)


def _build_schedule(saved: dict | None, optimizer, trust_code: bool, path):
    if saved is None:
        return None
    cls = _import_qualified(saved["class"], trust_code, "LR schedule")
    state = saved["state_dict"]
    if cls.__name__ in ("LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler"):
        raise CheckpointError(f"checkpoint {path}: a {cls.__name__} holds functions or other schedules that cannot "
                              "be stored; use a serializable schedule (dawnet.training) or rebuild it yourself and "
                              "call schedule.load_state_dict(state['schedule']['state_dict'])")
    # The optimizer (already restored) holds the learning rates; the schedule's attributes come from its state,
    # so building it without __init__ never steps it and the load order does not matter.
    schedule = cls.__new__(cls)
    schedule.__dict__.update(state)
    schedule.optimizer = optimizer
    _track_optimizer_steps(optimizer)
    if hasattr(schedule, "_post_load"):
        schedule._post_load()
    return schedule


def _track_optimizer_steps(optimizer) -> None:
    """Wrap ``optimizer.step`` as ``LRScheduler.__init__`` does, so torch's step-order check sees the real order."""
    if hasattr(optimizer.step, "_wrapped_by_lr_sched"):
        return
    func, ref = optimizer.step.__func__, weakref.ref(optimizer)

    @functools.wraps(func)
    def step(*args, **kwargs):
        opt = ref()
        opt._opt_called = True
        return func.__get__(opt, opt.__class__)(*args, **kwargs)

    step._wrapped_by_lr_sched = True
    optimizer.step = step


def _loss_spec(loss) -> dict | None:
    if loss is None:
        return None
    cls = type(loss)
    if isinstance(loss, nn.Module) and cls.__module__.startswith("torch.nn"):
        kwargs, tensors = {}, {}
        for name in inspect.signature(cls.__init__).parameters:
            if name in ("self", "size_average", "reduce") or not hasattr(loss, name):
                continue
            value = getattr(loss, name)
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().cpu()
            elif value is None or isinstance(value, (bool, int, float, str)):
                kwargs[name] = value
        return {"kind": "module", "class": _qualname(cls), "kwargs": kwargs, "tensors": tensors}
    if callable(loss) and getattr(loss, "__module__", "").startswith(("torch.nn.functional", "dawnet")):
        return {"kind": "function", "name": f"{loss.__module__}.{loss.__qualname__}"}
    named = hasattr(loss, "__qualname__") and not isinstance(loss, nn.Module)
    return {"kind": "custom", "name": f"{loss.__module__}.{loss.__qualname__}" if named else _qualname(cls)}


def _build_loss(spec: dict | None, path):
    if spec is None:
        return None
    if spec["kind"] == "module":
        cls = _import_qualified(spec["class"], False, "loss")
        return cls(**spec["kwargs"], **spec["tensors"])
    if spec["kind"] == "function":
        return _import_qualified(spec["name"], False, "loss")
    return _Missing(f"the loss ({spec['name']}) is not stored in checkpoint {path}: pass loss= to Agent.load")


def _build_metrics(names: dict, path) -> dict:
    out = {}
    for name, stored in names.items():
        if stored is None:
            out[name] = _Missing(f"metric {name!r} is not stored in checkpoint {path}: pass metrics= to Agent.load")
        else:
            try:
                out[name] = resolve_metrics({name: stored})[name]
            except (ValueError, ImportError, AttributeError):
                out[name] = _Missing(f"metric {name!r} ({stored}) cannot be rebuilt: pass metrics= to Agent.load")
    return out


class _Missing:
    """Stands in for a loss or metric a checkpoint could not store; calling it explains what to do."""

    def __init__(self, message: str):
        self.message = message

    def __call__(self, *args, **kwargs):
        raise ValueError(self.message)


def _plain(obj):
    """Make scheduler/optimizer state weights_only-safe: Counters and other dict/tuple subclasses to plain ones."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)


def _tuples(obj):
    return tuple(_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj
