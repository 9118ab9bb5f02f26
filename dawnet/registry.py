"""Model registry: names for model classes and factories, so a checkpoint can rebuild its model.

``@register_model("name")`` on a class or factory records, on every model it builds, a *spec*:
the registered name, the JSON-able keyword arguments it was called with and the defining module.
``build_model(spec)`` rebuilds the model from a spec with no user code. Code named by a checkpoint
is imported only when the caller opts in (``trust_code=True``); dawnet's own modules are trusted.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib
import inspect
import json
import re
from collections.abc import Callable
from typing import Any

from torch import nn

from dawnet.checkpoint import is_plain

__all__ = [
    "register_model",
    "create_model",
    "build_model",
    "list_models",
    "is_model",
    "model_spec",
    "UnknownModelError",
]

_SPEC_ATTR = "_dawnet_spec"
_MODELS: dict[str, Callable[..., nn.Module]] = {}  # registered name -> class or factory


class UnknownModelError(LookupError):
    """A model name that is neither registered nor importable with the caller's consent."""


def register_model(name: str | None = None) -> Callable:
    """Register a model class or factory under ``name`` (default: its ``__name__``).

    Every model it builds carries a spec (name, kwargs, module) that checkpoints store::

        @dawnet.register_model("mlp")
        class MLP(nn.Module):
            def __init__(self, hidden: int = 32): ...

        MLP(hidden=64)  # remembers {"name": "mlp", "kwargs": {"hidden": 64}}
    """
    if name is not None:
        _check_name(name)

    def decorate(obj: Callable) -> Callable:
        key = name or obj.__name__
        _check_name(key)
        previous = _MODELS.get(key)
        if previous is not None and _qualname(previous) != _qualname(obj):
            raise ValueError(
                f"model name {key!r} is already registered for {_qualname(previous)}; "
                f"choose another name for {_qualname(obj)}"
            )
        if inspect.isclass(obj):
            _wrap_class_init(obj, key)
            _MODELS[key] = obj
            return obj
        wrapped = _wrap_factory(obj, key)
        _MODELS[key] = wrapped
        return wrapped

    return decorate


def create_model(name: str, *, trust_code: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered model by name, or a ``package.module:factory`` the caller names.

    Keyword arguments that are None are dropped, so CLI defaults never override the model's own.
    A ``module:factory`` name imports that module: naming it is the caller's consent.
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if ":" in name:
        return _build_from_path(name, kwargs)
    return build_model({"name": name, "kwargs": kwargs}, trust_code=trust_code)


def build_model(spec: dict, *, trust_code: bool = False) -> nn.Module:
    """Rebuild a model from the spec a checkpoint holds.

    Only registered models are built: dawnet's presets (imported on demand) and models registered in this
    process. With ``trust_code`` True, a module the spec names outside torch and dawnet is imported first (it
    registers its models); nothing inside torch or dawnet is ever imported or called by name.
    """
    name, kwargs, module = spec["name"], dict(spec.get("kwargs", {})), spec.get("module")
    if not is_plain(kwargs):
        raise ValueError(f"model {name!r}: its arguments must be plain data (numbers, strings, lists, dicts), got "
                         f"{sorted(kwargs)}; build the model yourself and pass model=")
    if name not in _MODELS:
        _import_builtin_models()  # dawnet's own presets (crnn, attn, yolo, ...) register on import
    if name not in _MODELS and module and trust_code and not _inside_torch_or_dawnet(module):
        if ":" in name:
            if _inside_torch_or_dawnet(name.partition(":")[0]):
                raise UnknownModelError(f"model {name!r} names a factory inside torch or dawnet; only registered "
                                        "models are built from a spec")
            return _build_from_path(name, kwargs)
        importlib.import_module(module)
    if name not in _MODELS:
        raise UnknownModelError(_unknown_message(name, module, trust_code))
    return _MODELS[name](**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, in natural order (net2 before net10)."""
    _import_builtin_models()
    names = [n for n in _MODELS if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])


def is_model(name: str) -> bool:
    """True when ``name`` is registered."""
    _import_builtin_models()
    return name in _MODELS


def model_spec(model: nn.Module) -> dict | None:
    """The spec a registered constructor recorded on ``model`` (None for unregistered models)."""
    model = getattr(model, "module", model) if _is_wrapper(model) else model
    spec = model.__dict__.get(_SPEC_ATTR)
    return None if spec is None else copy.deepcopy(spec)


def check_json_spec(spec: dict) -> None:
    """Raise a clear error when a model spec's kwargs cannot be stored as JSON."""
    for key, value in spec.get("kwargs", {}).items():
        try:
            json.dumps(value)
        except TypeError:
            raise TypeError(
                f"model {spec['name']!r} was built with {key}={value!r}, which cannot be stored in a "
                "checkpoint: give the registered constructor JSON-able arguments (numbers, strings, "
                "lists, dicts), or pass model= to Agent.load when loading"
            ) from None


# -- internals ---------------------------------------------------------------------------------


def _wrap_class_init(cls: type, key: str) -> None:
    original = cls.__init__
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if type(self) is cls:  # a registered subclass records its own spec, not its parent's
            bound = signature.bind(self, *args, **kwargs)
            _record(self, key, _given_kwargs(bound), cls.__module__)

    cls.__init__ = __init__


def _wrap_factory(fn: Callable, key: str) -> Callable:
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def factory(*args, **kwargs):
        model = fn(*args, **kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"registered factory {key!r} returned {type(model).__name__}, not an nn.Module")
        _record(model, key, _given_kwargs(signature.bind(*args, **kwargs)), fn.__module__)
        return model

    return factory


def _given_kwargs(bound: inspect.BoundArguments) -> dict:
    out = {}
    for pname, value in bound.arguments.items():
        if pname == "self":
            continue
        kind = bound.signature.parameters[pname].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError("registered models take keyword arguments, not *args, so checkpoints can "
                                "rebuild them")
        else:
            out[pname] = value
    return out


def _record(model: nn.Module, key: str, kwargs: dict, module: str) -> None:
    object.__setattr__(model, _SPEC_ATTR, {"name": key, "kwargs": kwargs, "module": module})


def _build_from_path(path: str, kwargs: dict) -> nn.Module:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{path!r} is not of the form package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownModelError(f"cannot import {module_name!r} for model {path!r}: {e}") from e
    try:
        fn = functools.reduce(getattr, attr.split("."), module)
    except AttributeError:
        raise UnknownModelError(f"module {module_name!r} has no attribute {attr!r}") from None
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{path} returned {type(model).__name__}, not an nn.Module")
    if model_spec(model) is None or ":" not in path:
        _record(model, path, kwargs, module_name)
    return model


def _unknown_message(name: str, module: str | None, trust_code: bool) -> str:
    known = ", ".join(list_models()) or "none"
    msg = f"model {name!r} is not registered (registered: {known})."
    if module and not trust_code and not module.startswith("dawnet"):
        msg += (f" It was defined in module {module!r}: import that module first, or pass "
                "trust_code=True to let dawnet import it (only for code you trust).")
    elif module:
        msg += f" Importing {module!r} did not register it; is the name spelled as when it was saved?"
    return msg


def _inside_torch_or_dawnet(module: str) -> bool:
    return module.split(".")[0] in ("torch", "dawnet")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or ":" in name or name.strip() != name:
        raise ValueError(f"model name must be a non-empty string without ':' or surrounding spaces, got {name!r}")


def _qualname(obj: Any) -> str:
    inner = getattr(obj, "__wrapped__", obj)
    return f"{inner.__module__}.{inner.__qualname__}"


def _is_wrapper(model: nn.Module) -> bool:
    return isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel))


def _import_builtin_models() -> None:
    """Import dawnet's own model modules so their presets are listed (no-op until they exist)."""
    for module in ("dawnet.ocr.models",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
