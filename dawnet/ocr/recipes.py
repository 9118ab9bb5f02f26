"""The training recipe that ``dawnet train``, ``dawnet bench`` and ``benchmarks/bench_recipes.py`` share.

One recipe = the optimizer (AdamW), the learning-rate schedule (super-convergence: one cycle from ``lr / 10``
up to ``lr`` and back, then annihilation down to ``lr / 1000``) and the gradient-norm clip. Writing it once
keeps the CLI's models, the benchmark's models and the recipe experiments trained the same way.

    >>> recipe = RECOGNIZER.with_lr(2e-3)
    >>> optimizer, schedule = recipe.build(model.parameters(), steps=700)
    >>> agent = CTCAgent(model, optimizer, schedule=schedule, grad_clip=recipe.grad_clip, charset=cs)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from dawnet.training.schedules import SuperConvergence

__all__ = ["Recipe", "RECOGNIZER", "DETECTOR"]


@dataclass(frozen=True)
class Recipe:
    """AdamW + a super-convergence one-cycle schedule sized to a number of steps + a gradient clip.

    Args:
        lr: the peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        warmup: fraction of the steps spent rising from ``lr / start_div`` to ``lr`` (as many steps go back
            down); the rest anneals to ``lr / final_div``.
        start_div: the cycle's low end is ``lr / start_div``.
        final_div: the annihilation ends at ``lr / final_div``.
        grad_clip: gradient-norm clip for the agent (None: no clip).
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.45
    start_div: float = 10.0
    final_div: float = 1000.0
    grad_clip: float | None = 5.0

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.lr == float("inf"):
            raise ValueError(f"the recipe's lr must be a positive finite number, got {self.lr}")
        if not 0 < self.warmup <= 0.5:
            raise ValueError(f"warmup must be in (0, 0.5] (the fraction of steps rising to lr), got {self.warmup}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive (or None for no clip), got {self.grad_clip}")

    def with_lr(self, lr: float) -> Recipe:
        """The same recipe with another peak learning rate."""
        return dataclasses.replace(self, lr=lr)

    def optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.AdamW:
        """AdamW at the peak lr with the recipe's weight decay."""
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def schedule(self, optimizer: torch.optim.Optimizer, steps: int) -> SuperConvergence:
        """The one-cycle schedule of ``steps`` optimizer steps: up, down, then annihilation to the end."""
        if steps < 1:
            raise ValueError(f"a schedule needs at least 1 step, got {steps}")
        step_size = max(1, int(self.warmup * steps))
        return SuperConvergence(
            optimizer,
            base_lr=self.lr / self.start_div,
            max_lr=self.lr,
            step_size=step_size,
            annihilate_steps=max(0, steps - 2 * step_size),
            annihilate_to=self.lr / self.final_div,
        )

    def build(self, params: Iterable[torch.nn.Parameter], steps: int
              ) -> tuple[torch.optim.AdamW, SuperConvergence]:
        """(optimizer, schedule) for training ``params`` for ``steps`` optimizer steps."""
        opt = self.optimizer(params)
        return opt, self.schedule(opt, steps)

    def describe(self) -> str:
        """One line for reports: ``AdamW with weight decay 0.0001, super-convergence one-cycle ..., clip 5``."""
        clip = f"gradient clip {self.grad_clip:g}" if self.grad_clip is not None else "no gradient clip"
        return (f"AdamW with weight decay {self.weight_decay:g}, super-convergence one-cycle "
                f"{self.lr / self.start_div:g} -> {self.lr:g} over {2 * self.warmup:.0%} of the steps, then "
                f"annihilation to {self.lr / self.final_div:g}, {clip}")


RECOGNIZER = Recipe(lr=1e-3, warmup=0.45, grad_clip=5.0)
"""Line recognizers (crnn, attn, every preset): ``dawnet train`` and the bench."""

DETECTOR = Recipe(lr=2e-3, warmup=0.3, grad_clip=10.0)
"""The yolo line detector (the bench)."""
