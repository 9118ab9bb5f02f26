"""Training helpers built on the Agent: cyclical schedules, super-convergence, the LR range test, snapshots.

``CyclicalLR`` and ``SuperConvergence`` are ``torch.optim.lr_scheduler.LRScheduler`` subclasses; ``lr_find``
runs an LR range test with the agent's own learning step and restores everything afterwards;
``SnapshotAtMinimum`` and ``Checkpoint`` are callbacks for ``Agent.fit``.
"""

from dawnet.training.callbacks import Checkpoint, SnapshotAtMinimum
from dawnet.training.lr_finder import LRFinderResult, lr_find
from dawnet.training.schedules import CyclicalLR, SuperConvergence

__all__ = ["CyclicalLR", "SuperConvergence", "lr_find", "LRFinderResult", "SnapshotAtMinimum", "Checkpoint"]
