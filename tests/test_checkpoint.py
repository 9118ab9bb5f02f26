"""Checkpoints: weights_only content, atomic writes, rebuild from the registry, and clear errors for bad files."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch import nn

import dawnet
from dawnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dawnet.parallel import DataParallel
from dawnet.registry import UnknownModelError
from toy import ToyCNN, loader, make_agent


def trained(tmp_path, **kwargs):
    agent = make_agent(**kwargs)
    agent.fit(loader(32), epochs=1, val=loader(16, shuffle=False), progress=False)
    return agent, agent.save(tmp_path / "agent.pt")


def test_checkpoint_is_plain_data_and_rebuilds_everything(tmp_path):
    agent, path = trained(tmp_path)
    state = torch.load(path, weights_only=True)  # plain torch, no dawnet code needed to read it
    assert state["model"]["spec"] == {"name": "toy_cnn", "kwargs": {}, "module": "toy"}
    assert not any(k.startswith("module.") for k in state["model"]["state_dict"])
    loaded = dawnet.Agent.load(path, map_location="cpu")
    assert type(loaded.model) is ToyCNN and type(loaded.optimizer) is torch.optim.SGD
    assert type(loaded.schedule) is torch.optim.lr_scheduler.StepLR
    assert loaded.schedule.optimizer is loaded.optimizer
    assert (loaded.epoch, loaded.step) == (agent.epoch, agent.step)
    assert loaded.history.steps == agent.history.steps and loaded.history.epochs == agent.history.epochs
    assert loaded.optimizer.state_dict()["param_groups"] == agent.optimizer.state_dict()["param_groups"]
    assert loaded.schedule.state_dict() == agent.schedule.state_dict()
    assert isinstance(loaded.loss, nn.CrossEntropyLoss)
    val = loader(16, shuffle=False)
    assert loaded.evaluate(val) == agent.evaluate(val)


def test_loss_settings_and_weights_survive(tmp_path):
    model = ToyCNN()
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0])
    agent = dawnet.Agent(model, torch.optim.Adam(model.parameters()), device="cpu",
                         loss=nn.CrossEntropyLoss(weight=weight, label_smoothing=0.1, ignore_index=3))
    agent.save(tmp_path / "a.pt")
    loss = dawnet.Agent.load(tmp_path / "a.pt").loss
    assert loss.label_smoothing == 0.1 and loss.ignore_index == 3 and torch.equal(loss.weight, weight)


def test_schedule_resumes_with_optimizer_and_param_groups(tmp_path):
    model = ToyCNN()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0}],
                                  lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=50)
    agent = dawnet.Agent(model, optimizer, loss=nn.CrossEntropyLoss(), schedule=schedule, device="cpu")
    agent.fit(loader(32), steps=7, progress=False)
    agent.save(tmp_path / "a.pt")
    loaded = dawnet.Agent.load(tmp_path / "a.pt")
    groups = loaded.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0]
    assert [len(g["params"]) for g in groups] == [len(decay), len(no_decay)]
    assert loaded.schedule.get_last_lr() == schedule.get_last_lr()
    agent.fit(loader(32), steps=12, progress=False)
    loaded.fit(loader(32), steps=12, progress=False)
    assert loaded.schedule.get_last_lr() == schedule.get_last_lr()
    assert loaded.history.steps[-1]["lr"] == agent.history.steps[-1]["lr"]


def test_lambda_schedule_is_refused_with_advice(tmp_path):
    model = ToyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.9**s)
    dawnet.Agent(model, optimizer, loss=nn.CrossEntropyLoss(), schedule=schedule, device="cpu").save(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="LambdaLR holds functions"):
        dawnet.Agent.load(tmp_path / "a.pt")


def test_data_parallel_checkpoint_has_no_module_prefix(tmp_path):
    model = ToyCNN()
    agent = dawnet.Agent(DataParallel(model), torch.optim.SGD(model.parameters(), lr=0.1),
                         loss=nn.CrossEntropyLoss(), device="cpu")
    agent.fit(loader(16), steps=1, progress=False)
    state = torch.load(agent.save(tmp_path / "dp.pt"), weights_only=True)
    assert all(not k.startswith("module.") for k in state["model"]["state_dict"])
    assert isinstance(dawnet.Agent.load(tmp_path / "dp.pt").model, ToyCNN)


def test_loading_into_a_different_model_lists_the_differences(tmp_path):
    _, path = trained(tmp_path)
    expected = r"shape mismatch: features.0.weight saved \(8, 1, 3, 3\), model \(16, 1, 3, 3\)"
    with pytest.raises(CheckpointError, match=expected):
        dawnet.Agent.load(path, model=ToyCNN(width=16))
    with pytest.raises(CheckpointError, match="missing from"):
        dawnet.Agent.load(path, model=nn.Sequential(ToyCNN(), nn.Linear(4, 2)))


def test_corrupt_truncated_and_foreign_files_are_named(tmp_path):
    _, path = trained(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated.pt .*truncated or corrupt"):
        dawnet.Agent.load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(empty)
    plain = tmp_path / "plain.pt"
    torch.save(ToyCNN().state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a dawnet checkpoint"):
        dawnet.Agent.load(plain)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dawnet.Agent.load(tmp_path / "nope.pt")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "dawnet.checkpoint", "payload": ToyCNN()}, path)  # a whole pickled module
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_unregistered_and_untrusted_models(tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    model = Local()
    dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu").save(tmp_path / "local.pt")
    with pytest.raises(CheckpointError, match="register_model, or pass model="):
        dawnet.Agent.load(tmp_path / "local.pt")
    assert isinstance(dawnet.Agent.load(tmp_path / "local.pt", model=Local()).model, Local)

    # a model registered in a module this process has not imported: refused unless trust_code=True
    (tmp_path / "userpkg_models.py").write_text(textwrap.dedent("""
        import dawnet
        from torch import nn

        @dawnet.register_model("user_net")
        def user_net(width=3):
            return nn.Linear(width, 2)
    """))
    script = textwrap.dedent(f"""
        import sys, torch, dawnet
        sys.path.insert(0, {str(tmp_path)!r})
        import userpkg_models
        m = userpkg_models.user_net(width=5)
        dawnet.Agent(m, torch.optim.SGD(m.parameters(), lr=0.1), device="cpu").save({str(tmp_path / "user.pt")!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(UnknownModelError, match="trust_code=True"):
        dawnet.Agent.load(tmp_path / "user.pt")
    sys.path.insert(0, str(tmp_path))
    try:
        agent = dawnet.Agent.load(tmp_path / "user.pt", trust_code=True)
    finally:
        sys.path.remove(str(tmp_path))
    assert agent.model.in_features == 5


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    agent, path = trained(tmp_path)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        agent.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.pt"]  # no temporary file left behind


@pytest.mark.slow
def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    """A real SIGKILL while a large checkpoint is being written: the file on disk is always a whole one."""
    path = tmp_path / "big.pt"
    writer = textwrap.dedent(f"""
        import torch, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from dawnet.checkpoint import save_checkpoint
        i = 0
        while True:
            save_checkpoint({{"format": "dawnet.checkpoint", "i": i, "w": torch.full((8_000_000,), float(i))}},
                            {str(path)!r})
            i += 1
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()  # at least one complete save exists
        time.sleep(0.35)  # now it is most likely in the middle of another write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.full((8_000_000,), float(state["i"])))


def test_save_checkpoint_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.pt"
    save_checkpoint({"format": "dawnet.checkpoint", "x": 1}, target)
    assert load_checkpoint(target)["x"] == 1


def test_a_loaded_agent_builds_its_optimizer_on_first_use(tmp_path):
    """Reading and evaluating never build the optimizer (building any torch optimizer imports torch._dynamo)."""
    agent, path = trained(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        import dawnet, toy
        agent = dawnet.Agent.load({str(path)!r}, map_location="cpu")
        agent.evaluate(toy.loader(16, shuffle=False))
        agent.infer(toy.quadrant_data(1)[0][0])
        print(repr(agent), "torch._dynamo" in sys.modules)
        print(type(agent.optimizer).__name__, "torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["Agent(model=ToyCNN, optimizer=SGD, device=cpu, epoch=1, step=4) False", "SGD True"]
    loaded = dawnet.Agent.load(path, map_location="cpu")
    assert repr(loaded.optimizer.state_dict()) == repr(agent.optimizer.state_dict())
    assert loaded.schedule.state_dict() == agent.schedule.state_dict()
    state = torch.load(path, weights_only=True)
    state["optimizer"]["state_dict"]["param_groups"][0]["params"].pop()
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="the optimizer state is damaged"):
        dawnet.Agent.load(tmp_path / "damaged.pt")  # refused at load, not at the first step
