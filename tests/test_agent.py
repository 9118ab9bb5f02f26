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
    assert set(step) == {"step", "epoch", "loss", "lr", "momentum", "samples_per_s", "time"}
    assert (step["step"], step["epoch"], step["momentum"]) == (72, 5, 0.9)
    assert step["lr"] == pytest.approx(0.05 * 0.7 ** 3)  # StepLR(20, 0.7) after 60 of the 72 steps
    assert "samples_per_s" not in history.steps[0]  # no speed for the first step of a session
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3, 4, 5, 6]
    assert set(history.epochs[-1]) == {"epoch", "step", "time", "loss", "val_loss", "val_accuracy"}
    assert history.epochs[-1]["val_accuracy"] == after["accuracy"]
    assert history.epochs[-1]["val_loss"] == after["loss"]


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
    assert len(agent.history.steps) == 4 and all(math.isfinite(r["loss"]) for r in agent.history.steps)
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
    assert agent.step == 8
    assert set(agent.history.epochs[-1]) == {"epoch", "step", "time", "loss", "val_loss", "val_acc"}
    assert agent.history.epochs[-1]["val_acc"] == agent.evaluate(dicts)["acc"]


def test_train_metrics_are_logged_per_epoch():
    """With lr 0 the model never changes, so the epoch's train accuracy and loss are the fixed model's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(144, 4))
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.0), loss=nn.CrossEntropyLoss(),
                         metrics=["accuracy"], device="cpu", train_metrics=True)
    agent.fit(loader(32), epochs=1, progress=False)
    x, y = quadrant_data(32).tensors
    with torch.no_grad():
        scores = model(x)
    record = agent.history.epochs[-1]
    assert set(record) == {"epoch", "step", "time", "loss", "train_accuracy"}
    assert record["train_accuracy"] == float((scores.argmax(1) == y).sum()) / 32
    assert record["loss"] == pytest.approx(float(nn.CrossEntropyLoss()(scores, y)), rel=1e-6)


def test_no_warnings_in_a_plain_fit():
    agent = make_agent()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agent.fit(loader(32), epochs=1, progress=False)


def test_evaluate_is_the_size_weighted_mean_over_all_samples():
    agent = make_agent()
    data = loader(20, batch_size=8, shuffle=False)  # batches of 8, 8, 4
    x, y = quadrant_data(20).tensors
    agent.model.eval()
    with torch.no_grad():
        scores = agent.model(x)
    results = agent.evaluate(data)
    assert set(results) == {"loss", "accuracy"}
    assert results["accuracy"] == float((scores.argmax(1) == y).sum()) / 20
    assert results["loss"] == pytest.approx(float(nn.CrossEntropyLoss()(scores, y)), rel=1e-6)


def test_evaluation_hooks_take_metrics_that_are_not_sums():
    class MedianAgent(dawnet.Agent):
        """The median over the whole set of the winning score: no (total, count) pair gives it."""

        def evaluation_state(self):
            state = super().evaluation_state()
            state.top = []
            return state

        def update_evaluation(self, state, outputs, targets, inputs):
            super().update_evaluation(state, outputs, targets, inputs)
            state.top += outputs.max(1).values.tolist()

        def finish_evaluation(self, state):
            return {**super().finish_evaluation(state), "median_top": float(np.median(state.top)),
                    "seen": state.samples, "batches": state.batches}

    torch.manual_seed(0)
    model = ToyCNN()
    agent = MedianAgent(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(),
                        metrics=["accuracy"], device="cpu")
    model.eval()
    with torch.no_grad():
        top = model(quadrant_data(20).tensors[0]).max(1).values
    results = agent.evaluate(loader(20, batch_size=8, shuffle=False))
    assert set(results) == {"loss", "accuracy", "median_top", "seen", "batches"}
    assert results["median_top"] == pytest.approx(float(np.median(top.numpy())), rel=1e-6)
    assert (results["seen"], results["batches"]) == (20, 3)
    agent.fit(loader(16), epochs=1, val=loader(20, batch_size=8, shuffle=False), progress=False)
    assert agent.history.epochs[-1]["val_batches"] == 3  # fit's validation goes through the same hooks


def test_snapshot_and_restore_put_everything_back():
    agent = make_agent()
    agent.fit(loader(), steps=3, progress=False)
    saved_state = {k: v.clone() for k, v in agent.model.state_dict().items()}
    optimizer_state = repr(agent.optimizer.state_dict())
    schedule, callbacks = agent.schedule, agent.callbacks
    history = (list(agent.history.steps), list(agent.history.epochs))
    snapshot = agent.snapshot()
    expected_draw = torch.rand(3)
    agent.schedule = torch.optim.lr_scheduler.ExponentialLR(agent.optimizer, 0.5)
    agent.callbacks = [EarlyStopping("loss")]
    agent.fit(loader(), steps=9, progress=False)
    agent.model.eval()
    agent.restore(snapshot)
    assert agent.schedule is schedule and agent.callbacks == callbacks
    assert all(torch.equal(v, saved_state[k]) for k, v in agent.model.state_dict().items())
    assert repr(agent.optimizer.state_dict()) == optimizer_state
    assert (agent.history.steps, agent.history.epochs) == history
    assert (agent.step, agent.epoch, agent.batch_in_epoch, agent.lr) == (3, 0, 3, 0.05)
    assert agent.model.training
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG too


def test_snapshot_refuses_an_open_accumulation_window():
    agent = make_agent(accumulate=2)
    agent.learn(next(iter(loader())))
    with pytest.raises(RuntimeError, match="between optimizer steps"):
        agent.snapshot()


def test_kind_says_what_the_agent_outputs(tmp_path):
    class Boxes(dawnet.Agent):
        kind = "detection"

    assert dawnet.Agent.kind == "generic" and make_agent().kind == "generic"
    model = ToyCNN()
    Boxes(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu").save(tmp_path / "b.pt")
    assert torch.load(tmp_path / "b.pt", weights_only=True)["agent"]["kind"] == "detection"
    assert dawnet.Agent.load(tmp_path / "b.pt").kind == "detection"


def test_predict_and_postprocess_see_the_model_inputs():
    seen = []

    class Widths(dawnet.Agent):
        def predict(self, outputs, inputs):
            seen.append(("predict", tuple(inputs[0].shape)))
            return outputs

        def postprocess(self, outputs, inputs):
            seen.append(("postprocess", tuple(inputs[0].shape)))
            return outputs.argmax(1)

    class OldStyle(dawnet.Agent):  # written before the hooks took inputs: still works
        def predict(self, outputs):
            seen.append(("old", tuple(outputs.shape)))
            return outputs

    model = ToyCNN()
    agent = Widths(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(),
                   metrics=["accuracy"], device="cpu", input=ImageInput(channels=1, height=12, width=12))
    agent.evaluate(loader(8, shuffle=False))
    agent.infer(torch.rand(1, 12, 12))
    old = OldStyle(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(),
                   metrics=["accuracy"], device="cpu")
    old.evaluate(loader(8, shuffle=False))
    assert seen == [("predict", (8, 1, 12, 12)), ("postprocess", (1, 1, 12, 12)), ("old", (8, 4))]
