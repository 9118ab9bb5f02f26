"""The small public modules the Agent is built from: exact results for the cases they exist for."""

from collections import namedtuple

import pytest
import torch

from dawnet.batches import batch_size, describe, run_model, to_device
from dawnet.callbacks import Callback, EarlyStopping, keyed_callbacks
from dawnet.devices import resolve_amp, resolve_device
from dawnet.errors import first_line
from dawnet.jsonfile import load_json
from dawnet.totals import EvaluationState, add_total, reduce_totals


def test_batch_size_and_describe_walk_nested_batches():
    x, y = torch.zeros(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    assert batch_size((x, y)) == 8
    assert batch_size({"images": x}) == 8
    assert batch_size([[], (torch.tensor(3.0),)]) == 1  # a 0-d tensor is one sample
    assert batch_size(["a", "b", "c"]) == 3  # no tensors: the sequence's length
    assert batch_size(None) == 0
    assert describe((x, y)) == "(tensor(8, 1, 4, 4) float32, tensor(8,) int64)"
    assert describe([1, 2, 3, 4, 5]) == "[int, int, int, int, ...]"
    assert describe({"x": x}) == "{x: tensor(8, 1, 4, 4) float32}"


def test_to_device_keeps_the_structure_and_named_tuples():
    Pair = namedtuple("Pair", "a b")
    x = torch.ones(2)
    moved = to_device({"p": Pair(x, [x, "s"])}, torch.device("cpu"))
    assert type(moved["p"]) is Pair and moved["p"].a is x  # already there: the same tensor, no copy
    assert moved["p"].b[1] == "s"


def test_run_model_names_the_inputs_when_the_model_fails():
    with pytest.raises(RuntimeError) as info:
        run_model(torch.nn.Linear(3, 2), (torch.zeros(4, 5),))
    assert "dawnet: the model was called with inputs (tensor(4, 5) float32)" in info.value.__notes__


def test_devices_resolve_as_documented():
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    assert resolve_amp(False, cpu) is None and resolve_amp(None, cpu) is None
    assert resolve_amp(True, cpu) == "bf16"
    with pytest.raises(ValueError, match=r"amp='fp16' needs CUDA; on the CPU use amp='bf16'"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match=r"amp must be False, True, 'fp16' or 'bf16', got 'fp32'"):
        resolve_amp("fp32", cpu)


def test_totals_add_up_and_reduce_to_means():
    totals: dict = {}
    add_total(totals, "loss", 3.0, 2)
    add_total(totals, "loss", 1.0, 2)
    add_total(totals, "empty", 0.0, 0)
    assert totals == {"loss": [4.0, 4.0], "empty": [0.0, 0.0]}
    means = reduce_totals(totals)
    assert means["loss"] == 1.0 and means["empty"] != means["empty"]  # NaN where nothing was counted
    state = EvaluationState()
    state.add("acc", 3, 4)
    assert state.totals == {"acc": [3.0, 4.0]} and (state.batches, state.samples) == (0, 0)


def test_first_line_and_keyed_callbacks():
    assert first_line(ValueError("  bad shape\nmore detail")) == "bad shape"
    assert first_line(KeyError()) == "KeyError"
    a, b, c = EarlyStopping(), EarlyStopping(), Callback()
    c.name = "mine"
    assert keyed_callbacks([a, b, c]) == [("EarlyStopping", a), ("EarlyStopping#1", b), ("mine", c)]


def test_load_json_takes_text_or_a_path(tmp_path):
    path = tmp_path / "h.json"
    path.write_text('{"steps": [1]}')
    assert load_json(path) == load_json(str(path)) == load_json('  {"steps": [1]}') == {"steps": [1]}
    with pytest.raises(FileNotFoundError):
        load_json(tmp_path / "missing.json")
