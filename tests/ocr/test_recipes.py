"""The one training recipe: AdamW + super-convergence one-cycle + clip, shared by dawnet train and the bench."""

import pytest
import torch

from dawnet.ocr.recipes import DETECTOR, RECOGNIZER, Recipe
from dawnet.training.schedules import SuperConvergence


def _lrs(opt, schedule, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


def test_build_gives_adamw_and_a_one_cycle_of_exactly_the_steps():
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt, schedule = RECOGNIZER.build(params, steps=10)
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 1e-4
    # 4 steps up from lr/10 to lr, 4 down, then 2 annihilating to lr/1000
    assert _lrs(opt, schedule, 11) == pytest.approx(
        [1e-4, 3.25e-4, 5.5e-4, 7.75e-4, 1e-3, 7.75e-4, 5.5e-4, 3.25e-4, 5.05e-5, 1e-6, 1e-6])
    assert RECOGNIZER.grad_clip == 5.0 and DETECTOR.grad_clip == 10.0


@pytest.mark.parametrize("recipe, fraction", [(RECOGNIZER.with_lr(2e-3), 0.45), (DETECTOR.with_lr(3e-3), 0.3)])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 700])
def test_the_schedule_is_the_one_the_bench_and_train_pasted_before(recipe, fraction, steps):
    """The recipe replaced three pasted copies: it must give the very same learning rates."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt, schedule = recipe.build([a], steps)
    ref_opt = torch.optim.AdamW([b], lr=recipe.lr, weight_decay=1e-4)
    step_size = max(1, int(fraction * steps))
    ref = SuperConvergence(ref_opt, base_lr=recipe.lr / 10, max_lr=recipe.lr, step_size=step_size,
                           annihilate_steps=max(0, steps - 2 * step_size), annihilate_to=recipe.lr / 1000)
    assert _lrs(opt, schedule, steps + 2) == _lrs(ref_opt, ref, steps + 2)


def test_bad_recipes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"^the recipe's lr must be a positive finite number, got 0$"):
        Recipe(lr=0)
    with pytest.raises(ValueError, match=r"^warmup must be in \(0, 0.5\]"):
        Recipe(warmup=0.7)
    with pytest.raises(ValueError, match=r"^grad_clip must be positive \(or None for no clip\), got -1$"):
        Recipe(grad_clip=-1)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=r"^a schedule needs at least 1 step, got 0$"):
        RECOGNIZER.schedule(opt, 0)


def test_describe_states_the_recipe_in_one_line():
    assert RECOGNIZER.describe() == ("AdamW with weight decay 0.0001, super-convergence one-cycle 0.0001 -> 0.001 "
                                     "over 90% of the steps, then annihilation to 1e-06, gradient clip 5")
    assert Recipe(grad_clip=None).describe().endswith("no gradient clip")
