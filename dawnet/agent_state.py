"""An Agent as a checkpoint and back, without running anything the checkpoint merely names.

:func:`agent_state` turns an agent into plain data and tensors (what ``Agent.state_dict`` returns and
``Agent.save`` writes); :func:`agent_from_state` rebuilds one (``Agent.load``). A checkpoint names classes
(agent, model, optimizer, schedule, loss) and metrics; each name is looked up in an allowlist for its role
before anything is imported or called, and every keyword argument must be plain data:

==========  ==========================================================================================
role        allowed
==========  ==========================================================================================
agent       ``dawnet.Agent`` and its subclasses: dawnet's own, and those already defined in this process
model       models registered with ``@dawnet.register_model`` (dawnet's presets are imported on demand)
optimizer   ``torch.optim`` optimizers
schedule    ``torch.optim.lr_scheduler`` schedulers and ``dawnet.training`` schedules
loss        ``torch.nn`` loss modules (``torch.nn.modules.loss``) and ``torch.nn.functional`` losses
metrics     names in dawnet's metric table (``dawnet.metrics``)
==========  ==========================================================================================

``trust_code=True`` also allows code outside torch and dawnet (the user's own modules, imported by name);
nothing else inside torch or dawnet ever becomes callable. Anything refused raises :class:`CheckpointError`
naming the file, the role and the fix. :class:`AgentSnapshot` is an in-memory copy of the same state.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import random
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from dawnet.checkpoint import FORMAT, VERSION, CheckpointError, is_plain, load_model_weights
from dawnet.metrics import METRICS, TASK_METRICS, lookup_metric, metric_names
from dawnet.registry import UnknownModelError, build_model, check_json_spec, model_spec

__all__ = ["agent_state", "load_agent_state", "agent_from_state", "check_state", "allowed", "PendingOptimizer",
           "register_agent_class", "AgentSnapshot", "Missing"]

_AGENT_CLASSES: dict[str, type] = {}  # "module.QualName" -> Agent class, filled as Agent subclasses are defined
_AGENT_MODULES = ("dawnet.ocr.agents", "dawnet.ocr.detection")  # dawnet modules that define agents
_UNSTORABLE_SCHEDULES = ("LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler")
_LOSS_FUNCTIONS = ("cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div")


def register_agent_class(cls: type) -> None:
    """Make an Agent class loadable by name (``Agent.__init_subclass__`` calls this for every subclass)."""
    _AGENT_CLASSES[_qualname(cls)] = cls


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
        "agent": {"class": _qualname(type(agent)), "kind": agent.kind, "config": agent.config()},
        "model": {"spec": spec, "class": _qualname(type(agent.model)), "state_dict": agent.model.state_dict()},
        "optimizer": _optimizer_state(agent.optimizer, agent.model),
        "schedule": None if schedule is None else {
            "class": _qualname(type(schedule)), "state_dict": _plain(schedule.state_dict())},
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
        "callbacks": {key: cb.state_dict() for key, cb in agent._keyed_callbacks() if hasattr(cb, "state_dict")},
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
    for key, cb in agent._keyed_callbacks():
        saved = saved_callbacks.get(key)
        if saved is not None and hasattr(cb, "load_state_dict"):
            cb.load_state_dict(saved)
    if restore_rng:
        _set_rng_state(state["rng"])


# -- checking a checkpoint before anything is built -----------------------------------------------------


def check_state(state: dict, source: str, *, trust_code: bool = False, model: bool = True, loss: bool = True,
                metrics: bool = True) -> dict[str, Any]:
    """Check a checkpoint's structure, its keyword arguments and every name it holds, importing nothing it names.

    Returns the resolved objects by role (``agent``, ``optimizer``, ``schedule``, ``loss``, ``metrics``;
    ``model`` is resolved by the registry when it is built). ``model``/``loss``/``metrics`` False: the caller
    brings its own, so the checkpoint's are not resolved. Raises :class:`CheckpointError`.
    """
    bad = functools.partial(_refuse, source)
    _check_structure(state, bad)
    agent_part, model_part, opt, sched, loss_spec = (state["agent"], state["model"], state["optimizer"],
                                                     state["schedule"], state["loss"])
    if not is_plain(agent_part["config"]):
        bad("agent settings", "hold values other than plain data (numbers, strings, lists, dicts)",
            "use a checkpoint written by Agent.save")
    if not is_plain(opt["defaults"], tensors=True):
        bad("optimizer settings", "hold values other than plain data", "use a checkpoint written by Agent.save")
    spec = model_part["spec"]
    if model and spec is not None and not is_plain(spec.get("kwargs", {})):
        bad("model arguments", "hold values other than plain data", "pass model= to Agent.load")
    if loss and loss_spec is not None and loss_spec["kind"] == "module" and not (
            is_plain(loss_spec.get("kwargs", {})) and is_plain(loss_spec.get("tensors", {}), tensors=True)):
        bad("loss arguments", "hold values other than plain data and tensors", "pass loss= to Agent.load")
    out: dict[str, Any] = {"agent": _resolve_agent(agent_part["class"], trust_code, bad)}
    out["optimizer"] = _resolve(opt["class"], "optimizer", allowed("optimizer"), torch.optim.Optimizer,
                                trust_code, bad, "use a torch.optim optimizer, or pass trust_code=True if the "
                                "checkpoint comes from code you trust")
    out["schedule"] = None if sched is None else _resolve_schedule(sched["class"], trust_code, bad)
    out["loss"] = _resolve_loss(loss_spec, trust_code, bad) if loss else None
    out["metrics"] = _resolve_metrics(state["metrics"], source, trust_code) if metrics else None
    if model and spec is not None:
        _check_model_spec(spec, trust_code, bad)
    return out


@functools.cache
def _allowed(role: str) -> dict[str, Any]:
    if role == "optimizer":
        found = [c for c in vars(torch.optim).values()
                 if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer]
    elif role == "schedule":
        from torch.optim import lr_scheduler

        from dawnet.training import lr_finder, schedules

        found = [c for m in (lr_scheduler, schedules, lr_finder) for n, c in vars(m).items()
                 if inspect.isclass(c) and not n.startswith("_") and c.__module__ == m.__name__
                 and (issubclass(c, lr_scheduler.LRScheduler) or c is lr_scheduler.ReduceLROnPlateau)
                 and c is not lr_scheduler.LRScheduler]
    elif role == "loss":
        from torch.nn.modules import loss as losses

        found = [c for n, c in vars(losses).items() if inspect.isclass(c) and not n.startswith("_")
                 and issubclass(c, nn.Module) and c.__module__ == losses.__name__]
    elif role == "loss function":
        import torch.nn.functional as F

        found = [getattr(F, n) for n in dir(F) if n.endswith("_loss") or n in _LOSS_FUNCTIONS]
        found = [f for f in found if inspect.isfunction(f)]
    else:
        raise ValueError(f"unknown role {role!r}; roles: optimizer, schedule, loss, loss function")
    return {_qualname(c): c for c in found}


def allowed(role: str) -> frozenset[str]:
    """The qualified names a checkpoint may give for ``role`` (``optimizer``, ``schedule``, ``loss``,
    ``loss function``, ``agent``), without ``trust_code``."""
    if role == "agent":
        return frozenset(_AGENT_CLASSES)
    return frozenset(_allowed(role))


def _resolve(name: str, role: str, table: frozenset[str], base: type | None, trust_code: bool, bad,
             fix: str):
    if name in table:
        return _allowed(role)[name]
    if trust_code and not _inside_torch_or_dawnet(name):
        obj = _import_user_object(name, role, bad)
        if base is not None and not (inspect.isclass(obj) and issubclass(obj, base)):
            bad(role, f"is {name}, which is not a {base.__module__}.{base.__qualname__} subclass",
                "use a checkpoint written by Agent.save")
        return obj
    where = "inside torch or dawnet but not allowed for this role" if _inside_torch_or_dawnet(name) else \
        "outside torch and dawnet"
    bad(role, f"is {name}, {where}", fix)


def _resolve_agent(name: str, trust_code: bool, bad) -> type:
    if name not in _AGENT_CLASSES:
        module = name.rpartition(".")[0]
        if module in _AGENT_MODULES:  # dawnet's own agents register when their module is imported
            importlib.import_module(module)
    if name in _AGENT_CLASSES:
        return _AGENT_CLASSES[name]
    if trust_code and not _inside_torch_or_dawnet(name):
        obj = _import_user_object(name, "agent class", bad)
        if inspect.isclass(obj) and _qualname(obj) in _AGENT_CLASSES:
            return obj
        bad("agent class", f"is {name}, which is not a dawnet.Agent subclass", "use a checkpoint written by "
            "Agent.save")
    bad("agent class", f"is {name}, which is not a dawnet.Agent class defined in this process",
        "import the module that defines it before loading, or pass trust_code=True (only for code you trust)")


def _resolve_schedule(name: str, trust_code: bool, bad):
    if name.rpartition(".")[2] in _UNSTORABLE_SCHEDULES and name.startswith("torch.optim.lr_scheduler."):
        cls = name.rpartition(".")[2]
        bad("LR schedule", f"is a {cls}: a {cls} holds functions or other schedules that cannot be stored",
            "use a serializable schedule (dawnet.training) or rebuild it yourself and call "
            "schedule.load_state_dict(state['schedule']['state_dict'])")
    from torch.optim.lr_scheduler import LRScheduler

    return _resolve(name, "schedule", allowed("schedule"), LRScheduler, trust_code, bad,
                    "use a torch.optim.lr_scheduler or dawnet.training schedule, or pass trust_code=True")


def _resolve_loss(spec: dict | None, trust_code: bool, bad):
    if spec is None or spec["kind"] == "custom":
        return None
    if spec["kind"] == "module":
        return _resolve(spec["class"], "loss", allowed("loss"), nn.Module, trust_code, bad,
                        "use a torch.nn loss module, or pass loss= to Agent.load")
    return _resolve(spec["name"], "loss function", allowed("loss function"), None, False, bad,
                    "use a torch.nn.functional loss, or pass loss= to Agent.load")


def _resolve_metrics(names: dict, source: str, trust_code: bool) -> dict:
    out = {}
    for name, stored in names.items():
        found = None if stored is None else lookup_metric(stored)
        if found is None and stored is not None and _inside_torch_or_dawnet(stored):
            _refuse(source, "metric", f"{name!r} is {stored}, which is not in dawnet's metric table",
                    f"use one of {', '.join([*METRICS, *TASK_METRICS])}, or pass metrics= to Agent.load")
        if found is None and stored is not None and trust_code and ":" in stored and \
                not _inside_torch_or_dawnet(stored.partition(":")[0]):
            found = _import_user_object(stored.replace(":", "."), "metric",
                                        functools.partial(_refuse, source))
        out[name] = found if found is not None else Missing(
            f"metric {name!r} ({stored}) is not stored in checkpoint {source} as a metric dawnet knows: "
            "pass metrics= to Agent.load")
    return out


def _check_model_spec(spec: dict, trust_code: bool, bad) -> None:
    name, module = spec["name"], spec.get("module")
    if ":" in name and (not trust_code or _inside_torch_or_dawnet(name.partition(":")[0])):
        bad("model", f"is {name}, a factory path", "pass model= to Agent.load, or trust_code=True for your own code")
    if module is not None and _inside_torch_or_dawnet(module) and not (module == "dawnet" or
                                                                       module.startswith("dawnet.")):
        bad("model", f"names module {module}, inside torch", "pass model= to Agent.load")


def _check_structure(state: dict, bad) -> None:
    def need(obj, key, types, what):
        if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], types):
            bad(what, "is missing or damaged", "use an earlier checkpoint")
        return obj[key]

    agent = need(state, "agent", dict, "agent")
    need(agent, "class", str, "agent class")
    need(agent, "config", dict, "agent settings")
    model = need(state, "model", dict, "model")
    need(model, "class", str, "model class")
    weights = need(model, "state_dict", dict, "model weights")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        bad("model weights", "hold entries other than named tensors", "use an earlier checkpoint")
    spec = need(model, "spec", (dict, type(None)), "model spec")
    if spec is not None:
        need(spec, "name", str, "model name")
        if not isinstance(spec.get("kwargs", {}), dict) or not isinstance(spec.get("module"), (str, type(None))):
            bad("model spec", "is damaged", "use an earlier checkpoint, or pass model= to Agent.load")
    opt = need(state, "optimizer", dict, "optimizer")
    need(opt, "class", str, "optimizer class")
    need(opt, "defaults", dict, "optimizer settings")
    need(opt, "state_dict", dict, "optimizer state")
    groups = need(opt, "groups", list, "optimizer parameter groups")
    if not all(isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups):
        bad("optimizer parameter groups", "are damaged", "use an earlier checkpoint")
    schedule = need(state, "schedule", (dict, type(None)), "LR schedule")
    if schedule is not None:
        need(schedule, "class", str, "LR schedule class")
        need(schedule, "state_dict", dict, "LR schedule state")
    need(state, "scaler", (dict, type(None)), "gradient scaler")
    loss = need(state, "loss", (dict, type(None)), "loss")
    if loss is not None:
        kind = need(loss, "kind", str, "loss")
        if kind not in ("module", "function", "custom"):
            bad("loss", f"has an unknown kind {kind!r}", "use an earlier checkpoint")
        need(loss, "class" if kind == "module" else "name", str, "loss")
        if kind == "module":
            need(loss, "kwargs", dict, "loss arguments")
            need(loss, "tensors", dict, "loss arguments")
    metrics = need(state, "metrics", dict, "metrics")
    if not all(isinstance(k, str) and isinstance(v, (str, type(None))) for k, v in metrics.items()):
        bad("metrics", "are damaged", "use an earlier checkpoint")
    history = need(state, "history", dict, "history")
    for level in ("steps", "epochs"):
        records = history.get(level, [])
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            bad("history", "is damaged", "use an earlier checkpoint")
    progress = need(state, "progress", dict, "progress")
    for key in ("epoch", "step", "batch_in_epoch", "samples"):
        if isinstance(progress.get(key), bool) or not isinstance(progress.get(key), int) or progress[key] < 0:
            bad("progress", f"({key}) is damaged", "use an earlier checkpoint")
    if not isinstance(progress.get("elapsed"), (int, float)):
        bad("progress", "(elapsed) is damaged", "use an earlier checkpoint")
    totals = progress.get("epoch_totals", {})
    if not isinstance(totals, dict) or not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in totals.values()):
        bad("progress", "(epoch totals) is damaged", "use an earlier checkpoint")
    _check_rng(need(state, "rng", dict, "RNG state"), bad)
    need(state, "callbacks", dict, "callback states")


def _check_rng(rng: dict, bad) -> None:
    numpy_state = rng.get("numpy")
    ok = (isinstance(rng.get("python"), (list, tuple)) and isinstance(rng.get("torch"), torch.Tensor)
          and rng["torch"].dtype == torch.uint8 and isinstance(rng.get("cuda"), list)
          and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])
          and isinstance(numpy_state, dict) and isinstance(numpy_state.get("keys"), torch.Tensor)
          and numpy_state["keys"].numel() == 624 and isinstance(numpy_state.get("name"), str)
          and all(isinstance(numpy_state.get(k), int) for k in ("pos", "has_gauss"))
          and isinstance(numpy_state.get("cached_gaussian"), float))
    if not ok:
        bad("RNG state", "is damaged", "use an earlier checkpoint, or Agent.load(..., restore_rng=False)")


def _refuse(source: str, role: str, problem: str, fix: str):
    raise CheckpointError(f"checkpoint {source}: the {role} {problem}; {fix}")


def _inside_torch_or_dawnet(name: str) -> bool:
    return name.split(".")[0].split(":")[0] in ("torch", "dawnet")


def _import_user_object(name: str, role: str, bad):
    """Import ``package.module.Attr`` (code outside torch/dawnet, with the caller's trust_code consent)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            return functools.reduce(getattr, parts[cut:], obj)
        except AttributeError:
            bad(role, f"is {name}, but {module_name!r} has no {'.'.join(parts[cut:])!r}",
                "use the code the checkpoint was saved with")
    bad(role, f"is {name}, whose module cannot be imported", "put the module that defines it on sys.path")


# -- rebuilding an agent -------------------------------------------------------------------------------


def agent_from_state(requested: type, state: dict, source: str, *, map_location=None, model: nn.Module | None = None,
                     loss=None, metrics=None, callbacks: Iterable = (), trust_code: bool = False,
                     restore_rng: bool = True):
    """The agent a checkpoint's state describes (``Agent.load`` after reading the file); see the module doc."""
    from dawnet import parallel

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
                                  f"arguments ({_first_line(e)}); pass model= to Agent.load") from e
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
        raise CheckpointError(f"checkpoint {source} does not rebuild a {agent_cls.__name__}: {_first_line(e)}. "
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
                                  f"({_first_line(e)}); use an earlier checkpoint") from e
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
        "class": _qualname(type(optimizer)),
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
    if isinstance(loss, nn.Module) and _qualname(cls) in allowed("loss"):
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
    named = hasattr(loss, "__qualname__") and not isinstance(loss, nn.Module)
    name = f"{loss.__module__}.{loss.__qualname__}" if named else _qualname(cls)
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


class Missing:
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
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def _tuples(obj):
    return tuple(_tuples(o) for o in obj) if isinstance(obj, (list, tuple)) else obj


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


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
