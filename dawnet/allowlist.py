"""What a checkpoint may name, and the checks it passes before anything it names is imported or built.

A checkpoint names classes (agent, model, optimizer, schedule, loss) and metrics; each name is looked up in an
allowlist for its role before anything is imported or called, and every keyword argument must be plain data:

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
naming the file, the role and the fix. :func:`check_state` runs every check of a whole checkpoint state;
:mod:`dawnet.agent_state` builds the agent from what it resolved.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

import torch
from torch import nn

from dawnet.checkpoint import CheckpointError, is_plain
from dawnet.metrics import METRICS, TASK_METRICS, lookup_metric

__all__ = ["check_state", "allowed", "register_agent_class", "Missing", "qualname"]

_AGENT_CLASSES: dict[str, type] = {}  # "module.QualName" -> Agent class, filled as Agent subclasses are defined
_AGENT_MODULES = ("dawnet.ocr.agents", "dawnet.ocr.detection")  # dawnet modules that define agents
_UNSTORABLE_SCHEDULES = ("LambdaLR", "MultiplicativeLR", "SequentialLR", "ChainedScheduler")
_LOSS_FUNCTIONS = ("cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div")


def register_agent_class(cls: type) -> None:
    """Make an Agent class loadable by name (``Agent.__init_subclass__`` calls this for every subclass)."""
    _AGENT_CLASSES[qualname(cls)] = cls


def qualname(cls: type) -> str:
    """``module.QualName`` of a class: the name a checkpoint stores for it and the allowlists hold."""
    return f"{cls.__module__}.{cls.__qualname__}"


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
    return {qualname(c): c for c in found}


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
        if inspect.isclass(obj) and qualname(obj) in _AGENT_CLASSES:
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


class Missing:
    """Stands in for a loss or metric a checkpoint could not store; calling it explains what to do."""

    def __init__(self, message: str):
        self.message = message

    def __call__(self, *args, **kwargs):
        raise ValueError(self.message)

