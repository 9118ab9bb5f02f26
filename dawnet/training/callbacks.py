"""Checkpoint callbacks for ``Agent.fit``: snapshots at LR minima (snapshot ensembles) and periodic/best saves.

Both write through ``agent.save`` (atomic; rank 0 only under DDP; refuses NaN weights), so a crash while
saving never leaves a half-written file, and both keep their bookkeeping in ``state_dict`` so a resumed run
continues numbering, ranking and pruning where it stopped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from dawnet.callbacks import Callback

__all__ = ["SnapshotAtMinimum", "Checkpoint"]


class SnapshotAtMinimum(Callback):
    """Save a separate checkpoint each time the learning rate is at a cycle minimum (Huang et al. 2017).

    With a dawnet schedule (:class:`~dawnet.training.CyclicalLR`, :class:`~dawnet.training.SuperConvergence`)
    it saves when ``schedule.at_minimum()``: right after the optimizer step that used the lowest lr of a cycle
    (the end of a flat base, and the end of the final annihilation). With any other schedule it saves after
    a step whose lr was lower than both the lr before it and the lr after it (e.g. the restarts of
    ``CosineAnnealingWarmRestarts``). Files are ``snapshot-step00001234.pt``; the step record gets
    ``snapshot: 1``, which ``draw_history`` marks. ``keep`` limits how many (the newest) stay on disk.

    Feed the files to :func:`dawnet.ensemble.batch_infer` for a snapshot ensemble.
    """

    def __init__(self, dir: str | os.PathLike, keep: int | None = None, prefix: str = "snapshot"):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"keep must be None (keep all) or an integer >= 1, got {keep!r}")
        self.dir = Path(dir)
        self.keep = keep
        self.prefix = prefix
        self.saved: list[str] = []
        self._previous_lr: float | None = None

    def on_step_end(self, agent, logs: dict) -> None:
        used, upcoming = logs.get("lr"), agent.lr
        schedule = agent.schedule
        if schedule is not None and hasattr(schedule, "at_minimum"):
            hit = bool(schedule.at_minimum())
        else:
            hit = (used is not None and self._previous_lr is not None
                   and used < self._previous_lr and used < upcoming)
        self._previous_lr = used
        if hit:
            logs["snapshot"] = 1  # the record is the history's own: the mark is saved with it
            from dawnet import parallel

            if parallel.is_main_process():
                path = self.dir / f"{self.prefix}-step{agent.step:08d}.pt"
                self.saved.append(str(path))  # before saving, so the snapshot's own state lists itself
                agent.save(path)
                _prune(self.saved, self.keep)

    @property
    def paths(self) -> list[Path]:
        """The snapshots on disk, oldest first."""
        return [Path(p) for p in self.saved]

    def state_dict(self) -> dict:
        return {"saved": list(self.saved), "previous_lr": self._previous_lr}

    def load_state_dict(self, state: dict) -> None:
        self.saved = list(state.get("saved", []))
        self._previous_lr = state.get("previous_lr")


class Checkpoint(Callback):
    """Save the agent every ``every`` epochs (or every ``every_steps`` steps); keep the newest or the best.

    Every save writes ``last.pt``. Numbered files are ``epoch0003-step00001200.pt``:

    - without ``monitor``, the newest ``keep`` stay (``keep=None``: all);
    - with ``monitor`` (a key of the epoch record, e.g. ``"val_loss"``, or of the step record when saving
      by steps) and ``mode`` (``"min"`` or ``"max"``), the best ``keep`` stay and ``best.pt`` is rewritten
      whenever the monitored value improves. NaN values never count as best.

    Args:
        dir: folder for the files (created when needed).
        every: save at the end of every this many epochs (default 1).
        every_steps: save every this many optimizer steps instead (default None: by epochs).
        keep: how many numbered checkpoints to keep (default None: all; 0: only last.pt / best.pt).
        monitor: key to rank by (default None: keep the newest).
        mode: ``"min"`` when lower is better (losses, error rates), ``"max"`` for accuracies.
    """

    def __init__(self, dir: str | os.PathLike, every: int = 1, keep: int | None = None, monitor: str | None = None,
                 mode: str = "min", every_steps: int | None = None):
        for name, value in (("every", every), ("every_steps", every_steps)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise ValueError(f"keep must be None (keep all) or an integer >= 0, got {keep!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' (lower is better) or 'max' (higher is better), got {mode!r}")
        self.dir, self.every, self.every_steps = Path(dir), every, every_steps
        self.keep, self.monitor, self.mode = keep, monitor, mode
        self.saved: list[list] = []  # [path, monitored value or None], in saving order
        self.best: float | None = None
        self.best_path = self.dir / "best.pt"
        self.last_path = self.dir / "last.pt"

    def on_step_end(self, agent, logs: dict) -> None:
        if self.every_steps is not None and agent.step % self.every_steps == 0:
            self._save(agent, logs, "step")

    def on_epoch_end(self, agent, logs: dict) -> None:
        if self.every_steps is None and agent.epoch % self.every == 0:
            self._save(agent, logs, "epoch")

    def _save(self, agent, logs: dict, level: str) -> None:
        value = None
        if self.monitor is not None:
            if self.monitor not in logs:
                raise KeyError(f"Checkpoint monitors {self.monitor!r}, which the {level} record does not have "
                               f"(it has {sorted(logs)}); pass val= to fit for val_* keys, or monitor another key")
            value = float(logs[self.monitor])
        from dawnet import parallel

        if not parallel.is_main_process():
            return
        if value is not None and math.isfinite(value) and (self.best is None or self._better(value, self.best)):
            self.best = value
            agent.save(self.best_path)
        if self.keep != 0:
            path = self.dir / f"epoch{agent.epoch:04d}-step{agent.step:08d}.pt"
            self.saved.append([str(path), value])
            agent.save(path)
            if self.keep is not None and len(self.saved) > self.keep:
                if self.monitor is None:
                    victims = self.saved[: len(self.saved) - self.keep]
                else:  # drop the worst; NaN ranks worst, ties drop the older file
                    victims = sorted(self.saved, key=self._rank_key)[self.keep:]
                for victim in victims:
                    self.saved.remove(victim)
                    Path(victim[0]).unlink(missing_ok=True)
        agent.save(self.last_path)  # written last, so its bookkeeping includes this save

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _rank_key(self, entry):
        value = entry[1]
        if value is None or not math.isfinite(value):
            return (1, 0.0, -self.saved.index(entry))
        return (0, value if self.mode == "min" else -value, -self.saved.index(entry))

    @property
    def paths(self) -> list[Path]:
        """The numbered checkpoints on disk, in saving order."""
        return [Path(p) for p, _ in self.saved]

    def state_dict(self) -> dict:
        return {"saved": [list(e) for e in self.saved], "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.saved = [list(e) for e in state.get("saved", [])]
        self.best = state.get("best")


def _prune(saved: list[str], keep: int | None) -> None:
    while keep is not None and len(saved) > keep:
        Path(saved.pop(0)).unlink(missing_ok=True)
