"""Run by test_parallel.py under torchrun: DDP training through Agent.fit; each rank writes its weights."""

import json
import os
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

import dawnet
from toy import quadrant_data

out, steps, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None
rank = int(os.environ["RANK"])
data = DataLoader(quadrant_data(40), batch_size=4, shuffle=True)  # 40 samples / 2 ranks / 4 = 5 batches per epoch
val = DataLoader(quadrant_data(13, seed=1), batch_size=4)
if resume:
    agent = dawnet.Agent.load(resume, map_location="cpu")
else:
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = dawnet.create_model("toy_mlp")
    agent = dawnet.Agent(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), loss=nn.CrossEntropyLoss(),
                         metrics=["accuracy"], device="cpu", seed=3)
agent.fit(data, steps=steps, val=val, progress=False)
agent.save(os.path.join(out, "ddp.pt"))
torch.save(agent.model.state_dict(), os.path.join(out, f"rank{rank}.pt"))


class Gathering(dawnet.Agent):
    """A metric that is not a sum: every rank's predicted labels, gathered over the whole validation set."""

    def evaluation_state(self):
        state = super().evaluation_state()
        state.labels = []
        return state

    def update_evaluation(self, state, outputs, targets, inputs):
        super().update_evaluation(state, outputs, targets, inputs)
        state.labels += outputs.argmax(1).tolist()

    def finish_evaluation(self, state):
        result = super().finish_evaluation(state)
        every = sorted(x for part in dawnet.parallel.all_gather_objects(state.labels) for x in part)
        return {**result, "labels": every}


gathering = Gathering(agent.model, agent.optimizer, loss=nn.CrossEntropyLoss(), device="cpu")
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"epochs": agent.history.epochs, "world": torch.distributed.get_world_size(),
               "gathered": gathering.evaluate(val)}, f)
