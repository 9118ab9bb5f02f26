"""Loading a checkpoint never calls anything the checkpoint merely names (issue 18, item 1).

A checkpoint names an agent class, a model, an optimizer, a schedule, a loss and metrics. Each role has an
allowlist; everything else is refused with a CheckpointError before it is imported or called, also with
``trust_code=True`` for anything inside torch. The generated test walks the callables reachable from torch.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import pkgutil
import sys
import warnings

import pytest
import torch
from nets import TinyMLP
from torch import nn

import dawnet
from dawnet import agent_state
from dawnet.agent_state import agent_from_state, allowed
from dawnet.checkpoint import CheckpointError, is_plain, load_checkpoint
from toy import make_agent, toy_mlp

ROLES = ("agent", "optimizer", "schedule", "loss", "loss function", "metric", "model", "model module",
         "model factory")


@pytest.fixture(scope="module")
def base_state():
    model = toy_mlp(hidden=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    agent = dawnet.Agent(model, optimizer, loss=nn.CrossEntropyLoss(), schedule=schedule, metrics=["accuracy"],
                         device="cpu")
    state = agent.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return load_checkpoint(buffer)


def naming(state: dict, role: str, name: str) -> dict:
    """A copy of ``state`` (shallow, along the changed path) whose ``role`` names ``name``."""
    module, _, attr = name.rpartition(".")
    if role == "agent":
        return {**state, "agent": {**state["agent"], "class": name}}
    if role == "optimizer":
        return {**state, "optimizer": {**state["optimizer"], "class": name}}
    if role == "schedule":
        return {**state, "schedule": {**state["schedule"], "class": name}}
    if role == "loss":
        return {**state, "loss": {"kind": "module", "class": name, "kwargs": {}, "tensors": {}}}
    if role == "loss function":
        return {**state, "loss": {"kind": "function", "name": name}}
    if role == "metric":
        return {**state, "metrics": {"m": f"{module}:{attr}"}}
    if role == "model":
        return {**state, "model": {**state["model"], "spec": {"name": name, "kwargs": {}, "module": module}}}
    if role == "model module":
        return {**state, "model": {**state["model"], "spec": {"name": attr, "kwargs": {}, "module": module}}}
    if role == "model factory":
        return {**state, "model": {**state["model"], "spec": {"name": f"{module}:{attr}", "kwargs": {},
                                                              "module": module}}}
    raise AssertionError(role)


def torch_callables() -> list[str]:
    """Public functions and classes of every torch module that imports cleanly (the top-level packages)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.iter_modules(torch.__path__, "torch."):
            if not info.name.rsplit(".", 1)[1].startswith("_"):
                try:
                    importlib.import_module(info.name)
                except Exception:  # optional dependencies missing: not reachable, so not a risk here
                    pass
    names = set()
    for module_name in sorted(m for m in list(sys.modules) if m == "torch" or m.startswith("torch.")):
        module = sys.modules[module_name]
        if module is None:
            continue
        for attr, obj in list(vars(module).items()):
            if not attr.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)
                                             or inspect.isbuiltin(obj)):
                names.add(f"{module_name}.{attr}")
    return sorted(names)


def refused(state: dict, trust_code: bool) -> bool:
    try:
        agent_from_state(dawnet.Agent, state, "crafted.pt", map_location="cpu", trust_code=trust_code)
    except CheckpointError as e:
        assert "crafted.pt" in str(e) and "\n" not in str(e)
        return True
    return False


@pytest.mark.parametrize("stride", [7, pytest.param(1, marks=pytest.mark.slow)])
def test_every_torch_callable_is_refused_in_every_role(base_state, stride):
    """Every ``stride``-th public function or class of torch (all of them in the slow run), in every role."""
    names = torch_callables()
    assert len(names) > 3000  # the walk really reached torch's submodules
    names = names[::stride]
    allowed_here = {
        "agent": allowed("agent"), "optimizer": allowed("optimizer"), "schedule": allowed("schedule"),
        "loss": allowed("loss"), "loss function": allowed("loss function"),
    }
    for role in ROLES:
        table = allowed_here.get(role, frozenset())
        for trust_code in (False, True):
            accepted = [n for n in names if n not in table and not refused(naming(base_state, role, n), trust_code)]
            assert accepted == [], f"{role} (trust_code={trust_code}) accepted {accepted[:5]}"


class Sentinel:
    """Records any attempt to build or call it: a stand-in for a dangerous torch internal."""

    calls: list = []

    def __new__(cls, *args, **kwargs):
        Sentinel.calls.append(("new", args, kwargs))
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        Sentinel.calls.append(("init", args, kwargs))

    def __call__(self, *args, **kwargs):
        Sentinel.calls.append(("call", args, kwargs))


def sentinel_function(*args, **kwargs):
    Sentinel.calls.append(("function", args, kwargs))
    return Sentinel


@pytest.mark.parametrize("module_name", ["torch.utils.data", "torch.serialization", "torch.hub",
                                         "torch.nn.functional", "torch.optim.lr_scheduler", "torch.optim"])
def test_a_named_torch_internal_is_never_called(base_state, monkeypatch, module_name):
    module = importlib.import_module(module_name)
    for attr, obj in (("DawnetSentinel", Sentinel), ("dawnet_sentinel_loss", sentinel_function)):
        monkeypatch.setattr(module, attr, obj, raising=False)
    Sentinel.calls.clear()
    for attr in ("DawnetSentinel", "dawnet_sentinel_loss"):
        for role in ROLES:
            for trust_code in (False, True):
                assert refused(naming(base_state, role, f"{module_name}.{attr}"), trust_code), (role, attr)
    assert Sentinel.calls == []


def test_keyword_arguments_must_be_plain_data(base_state):
    weird = [print, Sentinel, {"a": object()}, [1, (2, {3: io.BytesIO()})], torch.device("cpu")]
    for value in weird:
        assert not is_plain(value)
        cases = [
            {**base_state, "agent": {**base_state["agent"],
                                     "config": {**base_state["agent"]["config"], "seed": value}}},
            {**base_state, "optimizer": {**base_state["optimizer"], "defaults": {"lr": value}}},
            {**base_state, "loss": {"kind": "module", "class": "torch.nn.modules.loss.CrossEntropyLoss",
                                    "kwargs": {"reduction": value}, "tensors": {}}},
            {**base_state, "model": {**base_state["model"], "spec": {"name": "toy_mlp", "kwargs": {"hidden": value},
                                                                     "module": "toy"}}},
        ]
        for state in cases:
            with pytest.raises(CheckpointError, match="plain data"):
                agent_from_state(dawnet.Agent, state, "crafted.pt", map_location="cpu")
    assert is_plain({"betas": (0.9, 0.999), "names": ["a", None], "n": 3, "x": 1.5, "ok": True})


def test_allowed_names_still_load(base_state):
    agent = agent_from_state(dawnet.Agent, base_state, "good.pt", map_location="cpu")
    assert type(agent.optimizer) is torch.optim.SGD and type(agent.loss) is nn.CrossEntropyLoss
    assert type(agent.schedule) is torch.optim.lr_scheduler.StepLR
    state = {**base_state, "loss": {"kind": "function", "name": "torch.nn.functional.cross_entropy"}}
    loss = agent_from_state(dawnet.Agent, state, "good.pt", map_location="cpu").loss
    assert loss is torch.nn.functional.cross_entropy
    state = {**base_state, "metrics": {"cer": "cer", "old": "dawnet.ocr.agents:cer", "mine": "mypkg.metrics:f"}}
    metrics = agent_from_state(dawnet.Agent, state, "good.pt", map_location="cpu").metrics
    from dawnet.ocr.metrics import batch_cer

    assert metrics["cer"] is batch_cer and metrics["old"] is batch_cer
    assert isinstance(metrics["mine"], agent_state.Missing)  # a user's metric is not imported, only explained
    with pytest.raises(ValueError, match="pass metrics= to Agent.load"):
        metrics["mine"](["a"], ["a"])


def test_refusal_names_file_role_and_fix(base_state, tmp_path):
    path = tmp_path / "crafted.pt"
    torch.save(naming(base_state, "loss", "torch.utils.cpp_extension.load_inline"), path)
    with pytest.raises(CheckpointError) as e:
        dawnet.Agent.load(path)
    assert str(e.value) == (f"checkpoint {path}: the loss is torch.utils.cpp_extension.load_inline, inside torch or "
                            "dawnet but not allowed for this role; use a torch.nn loss module, or pass loss= to "
                            "Agent.load")
    torch.save(naming(base_state, "agent", "os.system"), path)
    with pytest.raises(CheckpointError, match="the agent class is os.system, which is not a dawnet.Agent class "
                                              "defined in this process; import the module"):
        dawnet.Agent.load(path)


def test_trust_code_allows_the_users_own_code(base_state, tmp_path, monkeypatch):
    (tmp_path / "userpkg_optim.py").write_text(
        "import torch\n\nclass MySGD(torch.optim.SGD):\n    pass\n\ndef not_an_optimizer(*a, **k):\n"
        "    raise SystemExit('called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = naming(base_state, "optimizer", "userpkg_optim.MySGD")
    with pytest.raises(CheckpointError, match="outside torch and dawnet"):
        agent_from_state(dawnet.Agent, state, "user.pt", map_location="cpu")
    assert "userpkg_optim" not in sys.modules  # refused before the import
    agent = agent_from_state(dawnet.Agent, state, "user.pt", map_location="cpu", trust_code=True)
    assert type(agent.optimizer).__name__ == "MySGD"
    state = naming(base_state, "optimizer", "userpkg_optim.not_an_optimizer")
    with pytest.raises(CheckpointError, match="not a torch.optim.optimizer.Optimizer subclass"):
        agent_from_state(dawnet.Agent, state, "user.pt", map_location="cpu", trust_code=True)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_code_in_torch_save_stays_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    attacks = {
        "reduce.pt": {"format": "dawnet.checkpoint", "x": _Exploit()},
        "module.pt": {"format": "dawnet.checkpoint", "model": TinyMLP()},
        "agent.pt": {"format": "dawnet.checkpoint", "agent": make_agent()},
    }
    for name, payload in attacks.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(CheckpointError, match="weights_only"):
            dawnet.Agent.load(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()
