"""draw_history: panels, linked axes, marks, inputs (History, Agent, checkpoint), bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import dawnet
from dawnet.history import History, draw_history


def _history(snapshot_at=(30,)):
    h = History()
    for step in range(1, 61):
        lr = 1e-4 * 10 ** (3 * step / 60)
        h.log_step(step=step, epoch=(step - 1) // 20, loss=2.0 * math.exp(-step / 20) + 0.01 * (step % 3), lr=lr,
                   momentum=0.95 - 0.1 * step / 60)
        if step in snapshot_at:
            h.steps[-1]["snapshot"] = 1
    for e in range(1, 4):
        h.log_epoch(epoch=e, step=20 * e, loss=1.0 / e, val_loss=1.2 / e, val_accuracy=0.5 + 0.1 * e, time=e)
    return h


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_panels_curves_and_linked_axes():
    fig = draw_history(_history())
    assert isinstance(fig, Figure)
    loss_ax, metric_ax, lr_ax = fig.axes[:3]
    assert len(fig.axes) == 4  # + the momentum axis on the right of the lr panel
    loss_lines = _lines(loss_ax)
    assert {"loss (smoothed)", "loss (epoch)", "val_loss"} <= set(loss_lines)
    assert list(loss_lines["val_loss"].get_xdata()) == [20, 40, 60]
    assert list(_lines(metric_ax)["val_accuracy"].get_ydata()) == pytest.approx([0.6, 0.7, 0.8])
    assert lr_ax.get_yscale() == "log"  # the lr spans three decades
    assert fig.axes[3].get_ylabel() == "momentum"
    assert loss_ax.get_shared_x_axes().joined(loss_ax, lr_ax)
    snapshot_lines = [ln for ln in loss_ax.get_lines() if ln.get_linestyle() == ":"]
    assert [ln.get_xdata()[0] for ln in snapshot_lines] == [30]
    width, height = fig.get_size_inches()
    assert 8 <= width <= 10 and 4 <= height <= 9
    fig.savefig(io.BytesIO(), format="png")


def test_keys_select_and_lr_panel_is_optional():
    fig = draw_history(_history(), keys=["val_accuracy"], lr=False)
    assert len(fig.axes) == 1
    assert set(_lines(fig.axes[0])) == {"val_accuracy", "snapshot"}
    fig = draw_history(_history(), keys=["loss"], marks=[10, 50])
    assert len(fig.axes) == 3  # loss, lr, momentum twin
    assert [ln.get_xdata()[0] for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "--"] == [10, 50]


def test_reads_an_agent_and_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(), device="cpu")
    data = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(6)]
    agent.fit(data, epochs=2, progress=False)
    from_agent = draw_history(agent)
    path = agent.save(tmp_path / "run.pt")
    from_file = draw_history(path)
    a, b = (_lines(f.axes[0])["loss"].get_ydata() for f in (from_agent, from_file))
    assert list(a) == list(b) and len(a) == 12


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="empty"):
        draw_history(History())
    with pytest.raises(ValueError, match="not in the history"):
        draw_history(_history(), keys=["val_cer"])
    with pytest.raises(TypeError, match="History"):
        draw_history(42)
    with pytest.raises(ValueError, match="no 'history'"):
        draw_history({"model": {}})
    with pytest.raises(FileNotFoundError):
        draw_history("/nonexistent/run.pt")
