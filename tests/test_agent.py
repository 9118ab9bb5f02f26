"""The Agent's learning loop: totals, accumulation, clipping, AMP, schedules, evaluation, inference, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dawnet
from dawnet.agent import LossError, NonFiniteLossError
from dawnet.callbacks import Callback, EarlyStopping
from dawnet.inputs import ImageInput
from toy import ToyCNN, loader, make_agent, quadrant_data


def test_fit_learns_and_records_history():
    agent = make_agent()
    val = loader(64, shuffle=False, seed=1)
    before = agent.evaluate(val)
    history = agent.fit(loader(), epochs=6, val=val, progress=False)
    after = agent.evaluate(val)
    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.5
    assert agent.epoch == 6 and agent.step == 6 * 12 and len(history.steps) == agent.step
    step = history.steps[-1]
    assert {"step", "epoch", "loss", "lr", "momentum", "samples_per_s", "time"} <= set(step)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4, 5, 6]
    assert history.epochs[-1]["val_accuracy"] == pytest.approx(after["accuracy"])


def test_epochs_and_steps_are_totals():
    agent = make_agent()
    agent.fit(loader(), steps=5, progress=False)
    assert (agent.step, agent.epoch, agent.batch_in_epoch) == (5, 0, 5)
    agent.fit(loader(), steps=20, progress=False)
    assert (agent.step, agent.epoch, agent.batch_in_epoch) == (20, 1, 8)
    agent.fit(loader(), epochs=2, progress=False)
    assert (agent.step, agent.epoch, agent.batch_in_epoch) == (24, 2, 0)
    with pytest.warns(UserWarning, match="totals"):
        agent.fit(loader(), epochs=2, progress=False)
    with pytest.raises(ValueError, match="epochs= or steps="):
        agent.fit(loader())


def test_schedule_steps_once_per_optimizer_step_with_accumulation():
    agent = make_agent(accumulate=3)
    agent.fit(loader(96, batch_size=8), epochs=1, progress=False)  # 12 micro-batches -> 4 optimizer steps
    assert agent.step == 4
    assert agent.schedule.last_epoch == 4


def test_accumulation_equals_the_large_batch():
    """accumulate=2 over two batches of 8 gives the same update as one batch of 16 (mean loss, no dropout/BN)."""
    data = quadrant_data(16)

    def run(batch_size, accumulate):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
        agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(),
                             device="cpu", accumulate=accumulate)
        agent.fit(DataLoader(data, batch_size=batch_size), epochs=1, progress=False)
        return model[1].weight.detach().clone(), agent.step

    w_big, steps_big = run(16, 1)
    w_acc, steps_acc = run(8, 2)
    assert steps_big == steps_acc == 1
    torch.testing.assert_close(w_acc, w_big, rtol=1e-5, atol=1e-6)


def test_partial_window_at_epoch_end_still_steps():
    agent = make_agent(accumulate=5)
    agent.fit(loader(96, batch_size=8), epochs=1, progress=False)  # 12 batches: windows 5, 5, 2
    assert agent.step == 3 and agent.batch_in_epoch == 0


def test_grad_clip_bounds_the_norm_and_logs_it():
    """With plain SGD (no momentum) the update is lr * clipped gradient, so its norm is lr * grad_clip."""
    torch.manual_seed(0)
    model = ToyCNN(dropout=0.0)
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.5), loss=nn.CrossEntropyLoss(),
                         device="cpu", grad_clip=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    agent.fit(loader(), steps=1, progress=False)
    update = math.sqrt(sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(model.parameters(), before)))
    assert agent.history.steps[0]["grad_norm"] > 0.01  # the pre-clip norm is logged
    assert update == pytest.approx(0.5 * 0.01, rel=1e-3)


def test_bf16_autocast_on_cpu_trains():
    agent = make_agent(amp="bf16")
    agent.fit(loader(), steps=4, progress=False)
    assert all(math.isfinite(r["loss"]) for r in agent.history.steps)
    with pytest.raises(ValueError, match="needs CUDA"):
        make_agent(amp="fp16")


def test_evaluate_restores_mode_and_needs_data():
    agent = make_agent()
    agent.model.train()
    agent.evaluate(loader(16, shuffle=False))
    assert agent.model.training
    agent.model.eval()
    agent.evaluate(loader(16, shuffle=False))
    assert not agent.model.training
    with pytest.raises(ValueError, match="empty"):
        agent.evaluate(DataLoader(TensorDataset(torch.zeros(0, 1, 12, 12), torch.zeros(0).long()), batch_size=4))


def test_infer_from_path_pil_numpy_and_tensor(tmp_path):
    agent = make_agent(input=ImageInput(channels=1, height=12, width=12))
    x = quadrant_data(1)[0][0]
    expected = agent.model.eval()(x[None]).detach()
    agent.model.train()
    array = (x[0].numpy() * 255).round().clip(0, 255).astype(np.uint8)
    Image.fromarray(array).convert("RGB").resize((24, 24)).save(tmp_path / "x.png")
    for raw in (x, x[0].numpy(), Image.fromarray(array), tmp_path / "x.png", str(tmp_path / "x.png")):
        out = agent.infer(raw)
        assert out.shape == (1, 4)
        assert out.argmax().item() == expected.argmax().item()
    assert agent.model.training  # infer restores the mode
    with pytest.raises(FileNotFoundError, match="does not exist"):
        agent.infer(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        agent.infer(tmp_path / "bad.png")


def test_output_that_does_not_fit_the_loss_names_both_shapes():
    agent = make_agent()
    bad = DataLoader(TensorDataset(quadrant_data(8).tensors[0], torch.zeros(8, 3)), batch_size=8)
    with pytest.raises(LossError, match=r"tensor\(8, 4\).*tensor\(8, 3\)"):
        agent.fit(bad, steps=1, progress=False)


def test_batch_that_is_not_input_target_pair():
    agent = make_agent()
    with pytest.raises(TypeError, match="override unpack"):
        agent.learn(torch.zeros(2, 1, 12, 12))


def test_nan_loss_stops_without_touching_weights_or_checkpoint(tmp_path):
    agent = make_agent()
    agent.fit(loader(), steps=2, progress=False)
    path = agent.save(tmp_path / "good.pt")
    before = path.read_bytes()
    weights = {k: v.clone() for k, v in agent.model.state_dict().items()}
    x, y = quadrant_data(8).tensors
    x[3] = float("nan")
    with pytest.raises(NonFiniteLossError, match="nan at step 2.*weights were not updated"):
        agent.fit(DataLoader(TensorDataset(x, y), batch_size=8), steps=5, progress=False)
    for k, v in agent.model.state_dict().items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN saw the batch in forward
            assert torch.equal(v, weights[k]), k
    assert all(p.grad is None for p in agent.model.parameters())
    with torch.no_grad():
        agent.model.head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteLossError, match="refusing to save"):
        agent.save(path)
    assert path.read_bytes() == before


def test_empty_loader_is_refused():
    agent = make_agent()
    empty = DataLoader(TensorDataset(torch.zeros(3, 1, 12, 12), torch.zeros(3).long()), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="empty"):
        agent.fit(empty, epochs=1, progress=False)


def test_constructor_checks():
    model = ToyCNN()
    other = ToyCNN()
    with pytest.raises(TypeError, match="Optimizer instance"):
        dawnet.Agent(model, torch.optim.SGD, device="cpu")
    with pytest.raises(ValueError, match="not the model's"):
        dawnet.Agent(model, torch.optim.SGD(other.parameters(), lr=0.1), device="cpu")
    with pytest.raises(ValueError, match="accumulate"):
        dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", accumulate=0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        if not torch.cuda.is_available():
            dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cuda")
        else:
            raise ValueError("CUDA is not available (skipped: CUDA present)")


def test_callbacks_are_called_in_order_and_can_stop():
    calls = []

    class Recorder(Callback):
        def on_fit_start(self, agent):
            calls.append("fit_start")

        def on_epoch_start(self, agent):
            calls.append("epoch_start")

        def on_step_end(self, agent, logs):
            calls.append("step")
            if logs["step"] == 14:
                agent.stop_training = True

        def on_validation_end(self, agent, logs):
            calls.append("validation")

        def on_epoch_end(self, agent, logs):
            calls.append("epoch_end")

        def on_fit_end(self, agent):
            calls.append("fit_end")

    agent = make_agent(callbacks=[Recorder()])
    agent.callbacks = [Recorder()]
    agent.fit(loader(), epochs=5, val=loader(16, shuffle=False), progress=False)
    assert agent.step == 14
    assert calls == (["fit_start", "epoch_start"] + ["step"] * 12 + ["validation", "epoch_end", "epoch_start"]
                     + ["step"] * 2 + ["fit_end"])


def test_early_stopping_stops_when_the_monitor_stalls():
    agent = make_agent(lr=0.0)  # nothing learns, so val_loss never improves after the first epoch
    agent.callbacks = [EarlyStopping("val_loss", patience=2)]
    agent.fit(loader(32), epochs=10, val=loader(16, shuffle=False), progress=False)
    assert agent.epoch == 3
    with pytest.raises(KeyError, match="val= to fit"):
        agent.callbacks = [EarlyStopping("val_loss")]
        agent.fit(loader(32), epochs=4, progress=False)


def test_subclass_hooks_handle_other_batch_structures():
    class DictAgent(dawnet.Agent):
        def unpack(self, batch):
            return (batch["image"],), batch["label"]

    data = quadrant_data(32)
    dicts = [{"image": data.tensors[0][i:i + 8], "label": data.tensors[1][i:i + 8]} for i in range(0, 32, 8)]
    model = ToyCNN()
    agent = DictAgent(model, torch.optim.SGD(model.parameters(), lr=0.05), loss=nn.CrossEntropyLoss(),
                      metrics={"acc": "accuracy"}, device="cpu")
    agent.fit(dicts, epochs=2, val=dicts, progress=False)
    assert agent.step == 8 and "val_acc" in agent.history.epochs[-1]


def test_train_metrics_are_logged_per_epoch():
    agent = make_agent(train_metrics=True)
    agent.fit(loader(32), epochs=1, progress=False)
    assert 0.0 <= agent.history.epochs[-1]["train_accuracy"] <= 1.0


def test_no_warnings_in_a_plain_fit():
    agent = make_agent()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agent.fit(loader(32), epochs=1, progress=False)
