"""Run by test_resume.py in fresh processes: train, save, load, continue; print losses as JSON."""

import json
import sys

import torch
from torch import nn

import dawnet
from toy import ToyCNN, loader

mode, path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = loader(96, batch_size=8, shuffle=True)
if mode == "resume":
    agent = dawnet.Agent.load(path, map_location="cpu")
else:
    torch.manual_seed(0)
    model = ToyCNN(dropout=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=40)
    agent = dawnet.Agent(model, optimizer, loss=nn.CrossEntropyLoss(), schedule=schedule, device="cpu", seed=7)
agent.fit(data, steps=steps, progress=False)
agent.save(path)
print(json.dumps({"losses": [r["loss"] for r in agent.history.steps], "lrs": [r["lr"] for r in agent.history.steps],
                  "epoch": agent.epoch, "batch_in_epoch": agent.batch_in_epoch}))
