"""An Agent as a checkpoint and back, without running anything the checkpoint merely names.

:func:`agent_state` turns an agent into plain data and tensors (what ``Agent.state_dict`` returns and
``Agent.save`` writes); :func:`agent_from_state` rebuilds one (``Agent.load``) from the objects
:func:`dawnet.allowlist.check_state` resolved, after every name passed its role's allowlist (the table is in
:mod:`dawnet.allowlist`). :class:`AgentSnapshot` is an in-memory copy of the same state.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import random
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from dawnet import parallel
from dawnet.allowlist import Missing, allowed, check_state, qualname, register_agent_class
from dawnet.callbacks import keyed_callbacks
from dawnet.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    is_plain,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)
from dawnet.errors import NonFiniteLossError, first_line
from dawnet.metrics import metric_names
from dawnet.registry import UnknownModelError, build_model, check_json_spec, model_spec

if TYPE_CHECKING:
    from dawnet.agent import Agent
    from dawnet.callbacks import Callback

__all__ = ["agent_state", "load_agent_state", "agent_from_state", "check_state", "allowed", "PendingOptimizer",
           "register_agent_class", "AgentSnapshot", "AgentStateMixin", "Missing"]


class _ModelNotFound(CheckpointError, UnknownModelError):
    """The checkpoint's model is not registered (a CheckpointError, and a LookupError as the registry's own)."""


# -- building a checkpoint --------------------------------------------------------------------------


def agent_state(agent) -> dict:
    """Everything needed to resume or infer, as tensors and plain data (the live tensors, not copies)."""
    import dawnet

    spec = model_spec(agent.model)
    if spec is not None:
        check_json_spec(spec)
    schedule = agent.schedule
    return {
        "format": FORMAT,
        "version": VERSION,
        "dawnet_version": dawnet.__version__,
        "agent": {"class": qualname(type(agent)), "kind": agent.kind, "config": agent.config()},
        "model": {"spec": spec, "class": qualname(type(agent.model)), "state_dict": agent.model.state_dict()},
        "optimizer": _optimizer_state(agent.optimizer, agent.model),
        "schedule": None if schedule is None else {
            "class": qualname(type(schedule)), "state_dict": _plain(schedule.state_dict())},
        "scaler": None if agent._scaler is None else agent._scaler.state_dict(),
        "loss": _loss_spec(agent.loss),
        "metrics": metric_names(agent.metrics),
        "history": agent.history.state_dict(),
        "progress": {
            "epoch": agent.epoch, "step": agent.step, "batch_in_epoch": agent.batch_in_epoch,
            "samples": agent.samples, "elapsed": agent.elapsed,
            "epoch_totals": {k: list(v) for k, v in agent._epoch_totals.items()},
        },
        "rng": _rng_state(),
        "callbacks": {key: cb.state_dict() for key, cb in keyed_callbacks(agent.callbacks)
                      if hasattr(cb, "state_dict")},
    }


def load_agent_state(agent, state: dict, *, restore_rng: bool = True, optimizer: bool = True) -> None:
    """Restore :func:`agent_state`'s dict into ``agent`` (weights, optimizer, schedule, progress, RNG).

    ``optimizer=False`` leaves the optimizer and schedule alone (a loaded agent restores them when it builds them).
    """
    if agent._micro:
        raise RuntimeError("cannot load a state in the middle of a gradient-accumulation window")
    load_model_weights(agent.model, state["model"]["state_dict"], source="the checkpoint")
    if optimizer:
        agent.optimizer.load_state_dict(state["optimizer"]["state_dict"])
        if agent.schedule is not None and state.get("schedule"):
            agent.schedule.load_state_dict(state["schedule"]["state_dict"])
    if agent._scaler is not None and state.get("scaler"):
        agent._scaler.load_state_dict(state["scaler"])
    agent.history.load_state_dict(state["history"])
    progress = state["progress"]
    agent.epoch, agent.step = progress["epoch"], progress["step"]
    agent.batch_in_epoch, agent.samples = progress["batch_in_epoch"], progress["samples"]
    agent.elapsed = progress["elapsed"]
    agent._epoch_totals = {k: list(v) for k, v in progress.get("epoch_totals", {}).items()}
    saved_callbacks = state.get("callbacks", {})
    for key, cb in keyed_callbacks(agent.callbacks):
        saved = saved_callbacks.get(key)
        if saved is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(saved)
    if restore_rng:
        _set_rng_state(state["rng"])


# -- rebuilding an agent -------------------------------------------------------------------------------


def agent_from_state(requested: type, state: dict, source: str, *, map_location=None, model: nn.Module | None = None,
                     loss=None, metrics=None, callbacks: Iterable = (), trust_code: bool = False,
                     restore_rng: bool = True):
    """The agent a checkpoint's state describes (``Agent.load`` after reading the file); see the module doc."""
    found = check_state(state, source, trust_code=trust_code, model=model is None, loss=loss is None,
                        metrics=metrics is None)
    agent_cls = found["agent"]
    if not issubclass(agent_cls, requested):
        raise CheckpointError(f"the checkpoint holds a {state['agent']['class']}, which is not a "
                              f"{requested.__name__}; load it with dawnet.Agent.load or {agent_cls.__name__}.load")
    if model is None:
        spec = state["model"]["spec"]
        if spec is None:
            raise CheckpointError(
                f"checkpoint {source} cannot rebuild its model: {state['model']['class']} was not built by a "
                "registered constructor. Register it with @dawnet.register_model, or pass model= to Agent.load")
        try:
            model = build_model(spec, trust_code=trust_code)
        except UnknownModelError as e:
            raise _ModelNotFound(f"checkpoint {source}: {e}") from None
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint {source}: model {spec['name']!r} cannot be built from the stored "
                                  f"arguments ({first_line(e)}); pass model= to Agent.load") from e
    plain_model = parallel.unwrap(model)
    load_model_weights(plain_model, state["model"]["state_dict"], source=source)
    _check_optimizer_state(state["optimizer"], plain_model, source)
    optimizer = PendingOptimizer(found["optimizer"], found["schedule"], state["optimizer"], state["schedule"],
                                 plain_model, source)
    try:
        if loss is None:
            loss = _build_loss(found["loss"], state["loss"], source)
        if metrics is None:
            metrics = found["metrics"]
        device = "auto" if map_location is None else map_location
        agent = agent_cls(model, optimizer, loss=loss, schedule=None, metrics=metrics, device=device,
                          callbacks=callbacks, **state["agent"]["config"])
        load_agent_state(agent, state, restore_rng=restore_rng, optimizer=False)
    except CheckpointError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {source} does not rebuild a {agent_cls.__name__}: {first_line(e)}. "
                              "Use an earlier checkpoint, or one written by this dawnet version") from e
    return agent


class PendingOptimizer:
    """The optimizer and schedule of a loaded agent, built (and their states restored) on first use.

    Building any torch optimizer imports torch._dynamo, seconds that reading or evaluating never needs; the
    checkpoint's parts were checked by :func:`check_state` already, so building later cannot run anything else.
    """

    def __init__(self, optimizer_cls: type, schedule_cls: type | None, optimizer_state: dict,
                 schedule_state: dict | None, model: nn.Module, source: str):
        self.name = optimizer_cls.__name__
        self._parts = (optimizer_cls, schedule_cls, optimizer_state, schedule_state, model, source)

    def build(self) -> tuple[torch.optim.Optimizer, Any]:
        """``(optimizer, schedule)`` with their saved states; raises CheckpointError if the states do not fit."""
        optimizer_cls, schedule_cls, optimizer_state, schedule_state, model, source = self._parts
        try:
            optimizer = _build_optimizer(optimizer_cls, optimizer_state, model, source)
            schedule = None if schedule_cls is None else _build_schedule(schedule_cls, schedule_state, optimizer)
            optimizer.load_state_dict(optimizer_state["state_dict"])
            if schedule is not None:
                schedule.load_state_dict(schedule_state["state_dict"])
        except CheckpointError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {source}: its {optimizer_cls.__name__} state cannot be restored "
                                  f"({first_line(e)}); use an earlier checkpoint") from e
        return optimizer, schedule


def _check_optimizer_state(saved: dict, model: nn.Module, source: str) -> None:
    """What torch's Optimizer.load_state_dict would refuse, checked at load time rather than at first use."""
    names = dict(model.named_parameters(remove_duplicate=False))
    missing = [n for group in saved["groups"] for n in group if n not in names]
    if missing:
        raise CheckpointError(f"checkpoint {source}: the optimizer refers to parameter {missing[0]!r}, which the "
                              "model does not have")
    inner = saved["state_dict"]
    groups, per_param = inner.get("param_groups"), inner.get("state")
    ok = (isinstance(groups, list) and len(groups) == len(saved["groups"]) and isinstance(per_param, dict)
          and all(isinstance(g, dict) and isinstance(g.get("params"), list) and len(g["params"]) == len(names_)
                  and is_plain(g, tensors=True) for g, names_ in zip(groups, saved["groups"]))
          and all(isinstance(v, dict) and is_plain(v, tensors=True) for v in per_param.values()))
    if not ok:
        raise CheckpointError(f"checkpoint {source}: the optimizer state is damaged; use an earlier checkpoint")


def _optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    return {
        "class": qualname(type(optimizer)),
        "defaults": _plain(optimizer.defaults),
        "groups": [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups],
        "state_dict": optimizer.state_dict(),
    }


def _build_optimizer(cls: type, saved: dict, model: nn.Module, source: str) -> torch.optim.Optimizer:
    params = dict(model.named_parameters(remove_duplicate=False))
    try:
        groups = [{"params": [params[n] for n in names]} for names in saved["groups"]]
    except KeyError as e:
        raise CheckpointError(f"checkpoint {source}: the optimizer refers to parameter {e.args[0]!r}, which the "
                              "model does not have") from None
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {k: v for k, v in saved["defaults"].items() if k in accepted and k not in ("self", "params")}
    return cls(groups, **defaults)


def _build_schedule(cls: type, saved: dict, optimizer):
    # The optimizer (already restored) holds the learning rates; the schedule's attributes come from its state,
    # so building it without __init__ never steps it and the load order does not matter.
    schedule = cls.__new__(cls)
    schedule.__dict__.update(saved["state_dict"])
    schedule.optimizer = optimizer
    _track_optimizer_steps(optimizer)
    return schedule


def _track_optimizer_steps(optimizer) -> None:
    """Wrap ``optimizer.step`` as ``LRScheduler.__init__`` does, so torch's step-order check sees the real order
    for a schedule rebuilt without its ``__init__``."""
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
    if isinstance(loss, nn.Module) and qualname(cls) in allowed("loss"):
        kwargs, tensors = {}, {}
        for name in inspect.signature(cls.__init__).parameters:
            if name in ("self", "size_average", "reduce") or not hasattr(loss, name):
                continue
            value = getattr(loss, name)
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().cpu()
            elif value is None or isinstance(value, (bool, int, float, str)):
                kwargs[name] = value
        return {"kind": "module", "class": qualname(cls), "kwargs": kwargs, "tensors": tensors}
    named = hasattr(loss, "__qualname__") and not isinstance(loss, nn.Module)
    name = f"{loss.__module__}.{loss.__qualname__}" if named else qualname(cls)
    if named and name in allowed("loss function"):
        return {"kind": "function", "name": name}
    return {"kind": "custom", "name": name}


def _build_loss(found, spec: dict | None, source: str):
    if spec is None:
        return None
    if spec["kind"] == "function":
        return found
    if spec["kind"] == "module":
        accepted = inspect.signature(found.__init__).parameters
        given = {**spec["kwargs"], **spec["tensors"]}
        unknown = sorted(set(given) - set(accepted) - {"self"})
        if unknown:
            raise CheckpointError(f"checkpoint {source}: the loss {spec['class']} does not take {unknown}; pass "
                                  "loss= to Agent.load")
        return found(**given)
    return Missing(f"the loss ({spec['name']}) is not stored in checkpoint {source}: pass loss= to Agent.load")


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
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _tuples(obj):
    return tuple(_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


# -- snapshots -----------------------------------------------------------------------------------------


class AgentSnapshot:
    """A deep copy of everything ``learn``/``fit`` change, taken by ``Agent.snapshot()``; ``Agent.restore``
    puts it back exactly (weights, buffers, gradients, module modes, optimizer, schedule and callbacks objects
    and their states, history, counters, RNG)."""

    def __init__(self, agent):
        if agent._micro:
            raise RuntimeError("cannot take a snapshot in the middle of a gradient-accumulation window; take it "
                               "between optimizer steps")
        state = agent_state(agent)
        history = state.pop("history")
        self.state = copy.deepcopy(state)
        # learn() only appends history records, so copies of the two lists suffice; a deep copy of a long run's
        # history would cost seconds.
        self.state["history"] = {key: list(records) for key, records in history.items()}
        self.schedule = agent.schedule
        self.callbacks = list(agent.callbacks)
        self.epoch_len = agent._epoch_len
        self.last_step_end = agent._last_step_end
        self.modes = [m.training for m in agent.model.modules()]
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in agent.model.parameters()]

    def restore(self, agent) -> None:
        agent.discard_window()
        agent.schedule = self.schedule
        agent.callbacks = list(self.callbacks)
        agent.load_state_dict(self.state)
        agent._epoch_len = self.epoch_len
        agent._last_step_end = self.last_step_end
        for module, mode in zip(agent.model.modules(), self.modes):
            module.training = mode
        for p, g in zip(agent.model.parameters(), self.grads):
            p.grad = g


# -- the Agent's own state methods -----------------------------------------------------------------------


class AgentStateMixin:
    """The :class:`dawnet.Agent` methods that turn it into a checkpoint and back: the lazily built ``optimizer``
    and ``schedule`` of a loaded agent, ``state_dict``/``load_state_dict``, ``snapshot``/``restore`` and
    ``save``/``load``. The Agent sets ``_pending``, ``_optimizer`` and ``_schedule`` in its ``__init__``."""

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer. A loaded agent builds it on first use: building any torch optimizer imports
        torch._dynamo (seconds), which inference never needs."""
        if self._pending is not None:
            self._build_pending()
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self._pending = None
        self._optimizer = optimizer

    @property
    def schedule(self):
        """The LR schedule (None: constant LR), stepped once per optimizer step."""
        if self._pending is not None:
            self._build_pending()
        return self._schedule

    @schedule.setter
    def schedule(self, schedule) -> None:
        if self._pending is not None:
            self._build_pending()
        self._schedule = schedule

    def _build_pending(self) -> None:
        pending, self._pending = self._pending, None
        self._optimizer, self._schedule = pending.build()

    def state_dict(self) -> dict:
        """Everything needed to resume or infer, as tensors and plain data (the checkpoint's content).

        Tensors are the live ones (as ``nn.Module.state_dict``): deep-copy the result, or use :meth:`snapshot`.
        """
        return agent_state(self)

    def load_state_dict(self, state: dict, *, restore_rng: bool = True) -> None:
        """Restore a state from :meth:`state_dict` into this agent (weights, optimizer, schedule, progress, RNG)."""
        load_agent_state(self, state, restore_rng=restore_rng)

    def snapshot(self) -> AgentSnapshot:
        """An in-memory copy of everything ``learn``/``fit`` change, for :meth:`restore` (e.g. around an LR test)."""
        return AgentSnapshot(self)

    def restore(self, snapshot: AgentSnapshot) -> None:
        """Put back exactly what :meth:`snapshot` copied: weights, gradients, modes, optimizer, schedule,
        callbacks, history, counters and RNG; an unfinished accumulation window is discarded."""
        snapshot.restore(self)

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
        into a model you built, and ``loss=``/``metrics=`` when the checkpoint could not store yours. Nothing the
        checkpoint names is imported or called unless it is on the allowlist of its role (see
        :mod:`dawnet.allowlist`); ``trust_code=True`` also allows code outside dawnet and torch.
        """
        state = load_checkpoint(path, map_location="cpu")
        source = str(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", None) or "checkpoint"
        return agent_from_state(cls, state, source, map_location=map_location,
                                model=model, loss=loss, metrics=metrics, callbacks=callbacks,
                                trust_code=trust_code, restore_rng=restore_rng)
