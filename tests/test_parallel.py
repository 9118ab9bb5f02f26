"""DataParallel attribute forwarding, and real 2-process DDP training launched with torchrun."""

import copy
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import dawnet
from dawnet.parallel import DataParallel, unwrap
from dawnet.sampling import epoch_sampler
from toy import ToyCNN, quadrant_data

HERE = Path(__file__).parent


class WithExtras(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.charset = "abc"

    def forward(self, x):
        return self.fc(x)

    def decode(self, ids):
        return "".join(self.charset[i] for i in ids)


def test_data_parallel_forwards_attributes_and_methods():
    dp = DataParallel(WithExtras())
    assert dp.charset == "abc" and dp.decode([2, 0]) == "ca"
    assert isinstance(dp.fc, nn.Linear) and dp.module.fc is dp.fc
    assert "decode" in dir(dp)
    assert dp(torch.zeros(4, 3)).shape == (4, 2)
    with pytest.raises(AttributeError):
        getattr(dp, "nothing_here")  # noqa: B009 (attribute access is what is tested)
    assert unwrap(dp) is dp.module


def test_data_parallel_survives_pickle_and_deepcopy():
    dp = DataParallel(WithExtras())
    for clone in (pickle.loads(pickle.dumps(dp)), copy.deepcopy(dp)):
        assert clone.decode([0, 1]) == "ab"
        torch.testing.assert_close(clone(torch.ones(1, 3)), dp(torch.ones(1, 3)))


def test_agent_keeps_plain_model_inside_data_parallel():
    model = ToyCNN()
    agent = dawnet.Agent(DataParallel(model), torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    assert agent.model is model


def torchrun(out: Path, steps: int, resume: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_script.py"), str(out), str(steps)] + ([str(resume)] if resume else [])
    result = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def single_process_reference(steps: int) -> dict:
    """One process on the same global batches: the union of both ranks' batches of every step."""
    torch.manual_seed(0)
    model = dawnet.create_model("toy_mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dataset = quadrant_data(40)
    done = 0
    for epoch in range(10):
        shards = [list(epoch_sampler(40, True, seed=3, epoch=epoch, rank=r, world=2)) for r in range(2)]
        for b in range(5):
            idx = shards[0][4 * b:4 * b + 4] + shards[1][4 * b:4 * b + 4]
            x, y = dataset[idx]
            optimizer.zero_grad()
            nn.CrossEntropyLoss()(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                return model.state_dict()
    raise AssertionError("not enough epochs")


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_on_the_same_global_batches(tmp_path):
    torchrun(tmp_path, steps=12)  # 2 epochs of 5 steps, then 2 steps into the third
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # both ranks end identical
    # rank 0's initial weights come from torch.manual_seed(0), as in the reference
    reference = single_process_reference(12)
    for key in rank0:
        torch.testing.assert_close(rank0[key], reference[key], rtol=1e-5, atol=1e-6)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert info[0]["world"] == 2
    # validation metrics are all-reduced: both ranks report the same numbers over all 13 samples
    def without_time(records):
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    assert without_time(info[0]["epochs"]) == without_time(info[1]["epochs"])
    # the DDP checkpoint (written by rank 0 only) loads in a single process with the same weights
    agent = dawnet.Agent.load(tmp_path / "ddp.pt", map_location="cpu")
    for key, value in agent.model.state_dict().items():
        assert torch.equal(value, rank0[key])
    assert (agent.step, agent.epoch, agent.batch_in_epoch) == (12, 2, 2)
    single = agent.evaluate(DataLoader(quadrant_data(13, seed=1), batch_size=4))
    assert single["accuracy"] == pytest.approx(info[0]["epochs"][-1]["val_accuracy"])
    # evaluation hooks: a result gathered over ranks (not a sum) is the whole set's, the same on both ranks
    assert info[0]["gathered"] == info[1]["gathered"]
    with torch.no_grad():
        labels = agent.model(quadrant_data(13, seed=1).tensors[0]).argmax(1)
    assert info[0]["gathered"]["labels"] == sorted(labels.tolist()) and len(labels) == 13
    assert info[0]["gathered"]["loss"] == pytest.approx(single["loss"])


@pytest.mark.slow
def test_single_process_checkpoint_continues_under_ddp(tmp_path):
    torch.manual_seed(0)
    model = dawnet.create_model("toy_mlp")
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1), loss=nn.CrossEntropyLoss(),
                         device="cpu", seed=3)
    agent.fit(DataLoader(quadrant_data(40), batch_size=8, shuffle=True), steps=3, progress=False)
    agent.save(tmp_path / "single.pt")
    torchrun(tmp_path, steps=8, resume=tmp_path / "single.pt")
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert dawnet.Agent.load(tmp_path / "ddp.pt").step == 8
