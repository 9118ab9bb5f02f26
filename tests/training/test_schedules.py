"""CyclicalLR and SuperConvergence: closed vs chainable forms, exact resume in either order, minima, errors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from dawnet.training import CyclicalLR, SuperConvergence


def _two_group_sgd(lr=0.5, momentum=0.9):
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters(), "lr": 0.1}],
                          lr=lr, momentum=momentum)
    return nn.Sequential(a, b), opt


def _run(sched, opt, n):
    """Step n times; the lr each optimizer step used (per group)."""
    used = []
    for _ in range(n):
        used.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return used


SCHEDULES = {
    "triangular": lambda opt: CyclicalLR(opt, [0.01, 0.002], [0.1, 0.05], step_size=3),
    "triangular2": lambda opt: CyclicalLR(opt, 0.01, 0.1, step_size=2, mode="triangular2"),
    "exp_range": lambda opt: CyclicalLR(opt, [0.01, 0.02], 0.1, step_size=4, mode="exp_range", gamma=0.97,
                                        momentum=(0.95, 0.8)),
    "sc": lambda opt: SuperConvergence(opt, [0.02, 0.01], [0.2, 0.1], step_size=3, cycles=2, flat_steps=2,
                                       annihilate_steps=4),
    "sc_exp": lambda opt: SuperConvergence(opt, 0.02, 0.2, step_size=2, cycles=3, annihilate_steps=3,
                                           annihilate_to=1e-6, annihilate_mode="exp"),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_chainable_matches_closed_form_over_40_steps(name):
    _, opt = _two_group_sgd()
    sched = SCHEDULES[name](opt)
    used = _run(sched, opt, 40)
    for t, lrs in enumerate(used):
        assert lrs == pytest.approx(sched.lr_at(t), rel=1e-12, abs=1e-15), t
    assert sched.get_last_lr() == pytest.approx(sched._get_closed_form_lr(), rel=1e-12)


def test_docstring_examples_list_the_right_lrs():
    _, opt = _two_group_sgd()
    c = CyclicalLR(opt, 0.1, 1.0, step_size=2)
    assert [lr[0] for lr in _run(c, opt, 9)] == pytest.approx([0.1, 0.55, 1.0, 0.55, 0.1, 0.55, 1.0, 0.55, 0.1])
    assert c.minima(9) == [5, 9]
    _, opt = _two_group_sgd()
    s = SuperConvergence(opt, 0.1, 1.0, step_size=2, cycles=2, flat_steps=1, annihilate_steps=2,
                         annihilate_to=0.001)
    expected = [0.1, 0.55, 1.0, 0.55, 0.1, 0.1, 0.55, 1.0, 0.55, 0.0505, 0.001]
    assert [lr[0] for lr in _run(s, opt, 11)] == pytest.approx(expected)
    assert s.minima() == [6, 11]
    assert s.total_steps == 11


def test_triangular2_halves_and_exp_range_decays_the_amplitude():
    _, opt = _two_group_sgd()
    s = CyclicalLR(opt, 0.0, 1.0, step_size=5, mode="triangular2")
    peaks = [s.lr_at(5 + 10 * k)[0] for k in range(3)]
    assert peaks == pytest.approx([1.0, 0.5, 0.25])
    e = CyclicalLR(opt, 0.0, 1.0, step_size=5, mode="exp_range", gamma=0.9)
    assert e.lr_at(5)[0] == pytest.approx(0.9**5)


def test_momentum_cycles_inversely_and_is_high_on_flats_and_annihilation():
    _, opt = _two_group_sgd()
    s = SuperConvergence(opt, 0.01, 0.1, step_size=4, cycles=2, flat_steps=3, annihilate_steps=4)
    for t in range(s.total_steps + 3):
        lr, m = s.lr_at(t)[0], s.momentum_at(t)
        frac = (lr - 0.01) / 0.09
        assert m == pytest.approx(0.95 - 0.10 * max(frac, 0.0))  # annihilation (lr < base) keeps 0.95
    _run(s, opt, 4)
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.85)  # at the peak, lr index 4


def test_adam_betas_are_cycled():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999))
    s = SuperConvergence(opt, 1e-3, 1e-2, step_size=2)
    _run(s, opt, 2)
    assert opt.param_groups[0]["betas"] == pytest.approx((0.85, 0.999))


def _train(model, opt, sched, steps, seed):
    torch.manual_seed(seed)
    lrs = []
    for _ in range(steps):
        x = torch.randn(8, 3)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        lrs.append([g["lr"] for g in opt.param_groups] + [g["momentum"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("order", ["schedule_first", "optimizer_first", "rebuild_with_last_epoch"])
@pytest.mark.parametrize("name", ["triangular", "exp_range", "sc"])
def test_resume_is_bitwise_exact_in_either_loading_order(name, order):
    model, opt = _two_group_sgd()
    sched = SCHEDULES[name](opt) if name != "sc" else SuperConvergence(
        opt, [0.02, 0.01], [0.2, 0.1], step_size=3, cycles=2, flat_steps=2, annihilate_steps=4)
    first = _train(model, opt, sched, 13, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    reference = _train(model, opt, sched, 17, seed=2)
    ref_weights = [p.detach().clone() for p in model.parameters()]
    assert first  # the run took steps

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # the schedule state is plain data
    model2, opt2 = _two_group_sgd()
    model2.load_state_dict(ckpt["model"])
    make = SCHEDULES[name] if name != "sc" else (lambda o: SuperConvergence(
        o, [0.02, 0.01], [0.2, 0.1], step_size=3, cycles=2, flat_steps=2, annihilate_steps=4))
    if order == "schedule_first":
        sched2 = make(opt2)
        sched2.load_state_dict(ckpt["sched"])
        opt2.load_state_dict(ckpt["opt"])
    elif order == "optimizer_first":
        opt2.load_state_dict(ckpt["opt"])
        sched2 = make(opt2)  # the constructor resets the lr; load_state_dict must repair it
        sched2.load_state_dict(ckpt["sched"])
    else:
        opt2.load_state_dict(ckpt["opt"])
        sched2 = _rebuild(make, opt2, ckpt["sched"]["last_epoch"] - 1)  # the constructor steps once
    resumed = _train(model2, opt2, sched2, 17, seed=2)
    if order != "rebuild_with_last_epoch":
        assert resumed == reference  # bitwise: lr and momentum of every step
        assert all(torch.equal(a, b) for a, b in zip(ref_weights, model2.parameters()))
    else:  # the closed form rebuild agrees to rounding (torch's contract: reproduces get_last_lr)
        flat = [v for row in resumed for v in row]
        assert flat == pytest.approx([v for row in reference for v in row], rel=1e-12)


def _rebuild(make, opt, last_epoch):
    """Build the schedule as torch's resume idiom does: same args, last_epoch given."""
    probe = make(opt)
    kwargs = {"last_epoch": last_epoch}
    if isinstance(probe, SuperConvergence):
        return SuperConvergence(opt, probe.base_lrs_, probe.max_lrs, probe.step_size, cycles=probe.segments[0][1],
                                flat_steps=probe.flat_steps, annihilate_steps=probe.annihilate_steps, **kwargs)
    return CyclicalLR(opt, probe.base_lrs_, probe.max_lrs, probe.step_size, mode=probe.mode, gamma=probe.gamma,
                      momentum=probe.momentum, **kwargs)


def test_rebuilt_with_last_epoch_reproduces_get_last_lr():
    _, opt = _two_group_sgd()
    s = CyclicalLR(opt, [0.01, 0.002], [0.1, 0.05], step_size=3)
    _run(s, opt, 7)
    s2 = CyclicalLR(opt, [0.01, 0.002], [0.1, 0.05], step_size=3, last_epoch=s.last_epoch - 1)
    assert s2.get_last_lr() == pytest.approx(s.get_last_lr(), rel=1e-12)


def test_extend_while_cycling_moves_the_annihilation_later():
    _, opt = _two_group_sgd()
    s = SuperConvergence(opt, 0.01, 0.1, step_size=2, cycles=1, annihilate_steps=2)
    before = [s.lr_at(t) for t in range(3)]
    _run(s, opt, 2)
    s.extend(2)
    assert s.total_steps == 3 * 4 + 2
    assert [s.lr_at(t) for t in range(3)] == before  # steps taken keep their lr
    assert s.minima() == [5, 9, 14]


def test_resumed_schedule_extends_after_annihilation():
    model, opt = _two_group_sgd()
    s = SuperConvergence(opt, 0.01, 0.1, step_size=2, cycles=1, annihilate_steps=2, annihilate_to=1e-5)
    _run(s, opt, 8)  # past the end (total 6): it keeps stepping at the final lr
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    state = s.state_dict()
    _, opt2 = _two_group_sgd()
    s2 = SuperConvergence(opt2, 0.01, 0.1, step_size=2, cycles=1, annihilate_steps=2, annihilate_to=1e-5)
    s2.load_state_dict(state)
    s2.extend(1)
    used = [lr[0] for lr in _run(s2, opt2, 7)]
    assert used[0] == pytest.approx(1e-5)  # lr index 8 was computed before extend
    assert used[1:] == pytest.approx([0.01, 0.055, 0.1, 0.055, 0.01 + (1e-5 - 0.01) / 2, 1e-5])
    assert s2.minima()[-1] == 15
    assert s.segments == [[0, 1]]  # the saved state was not aliased


def test_at_minimum_is_true_exactly_at_the_listed_minima():
    for make in (SCHEDULES["sc"], SCHEDULES["triangular"]):
        _, opt = _two_group_sgd()
        s = make(opt)
        hits = []
        for n in range(1, 40):
            opt.step()
            s.step()
            if s.at_minimum():
                hits.append(n)
        assert hits == s.minima(39)
        assert hits  # there are some
        for n in hits:  # the step that just ran used the lowest lr of its neighbourhood
            assert s.lr_at(n - 1)[0] <= min(s.lr_at(n - 2)[0], s.lr_at(n)[0])


def test_composes_with_another_scheduler_without_warnings():
    _, opt = _two_group_sgd()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = CyclicalLR(opt, 0.01, 0.1, step_size=3)
        e = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
        used = []
        for _ in range(12):
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            c.step()
            e.step()
    # chainable: the cyclical shape times the exponential decay
    assert used == pytest.approx([c.lr_at(t)[0] * 0.9**t for t in range(12)], rel=1e-9)


@pytest.mark.parametrize("kwargs, words", [
    ({"base_lr": 0.2, "max_lr": 0.1, "step_size": 3}, "above max_lr"),
    ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 0}, "step_size"),
    ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 2.5}, "step_size"),
    ({"base_lr": -0.01, "max_lr": 0.1, "step_size": 3}, "base_lr must be >= 0"),
    ({"base_lr": [0.01], "max_lr": 0.1, "step_size": 3}, "param groups"),
    ({"base_lr": 0.01, "max_lr": float("nan"), "step_size": 3}, "finite"),
    ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 3, "mode": "cosine"}, "mode"),
    ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 3, "gamma": 0}, "gamma"),
    ({"base_lr": 0.01, "max_lr": 0.1, "step_size": 3, "momentum": (0.95,)}, "momentum"),
])
def test_cyclical_rejects_bad_arguments(kwargs, words):
    _, opt = _two_group_sgd()
    with pytest.raises(ValueError, match=words):
        CyclicalLR(opt, **kwargs)


@pytest.mark.parametrize("kwargs, words", [
    ({"cycles": 0}, "cycles"),
    ({"flat_steps": -1}, "flat_steps"),
    ({"annihilate_steps": -2}, "annihilate_steps"),
    ({"annihilate_to": 0.5}, "annihilate_to"),
    ({"annihilate_to": 0.0, "annihilate_mode": "exp"}, "exp"),
    ({"annihilate_mode": "cosine"}, "annihilate_mode"),
])
def test_super_convergence_rejects_bad_arguments(kwargs, words):
    _, opt = _two_group_sgd()
    with pytest.raises(ValueError, match=words):
        SuperConvergence(opt, 0.01, 0.1, step_size=3, **kwargs)


def test_momentum_needs_an_optimizer_that_has_it():
    opt = torch.optim.Adagrad([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="momentum=None"):
        SuperConvergence(opt, 0.01, 0.1, step_size=3)
    SuperConvergence(opt, 0.01, 0.1, step_size=3, momentum=None)  # fine without


def test_load_state_dict_rejects_a_foreign_dict():
    _, opt = _two_group_sgd()
    s = CyclicalLR(opt, 0.01, 0.1, step_size=3)
    with pytest.raises(ValueError, match="state dict"):
        s.load_state_dict({"last_epoch": 3})


def test_plot_draws_lr_and_momentum_without_moving_the_schedule():
    from matplotlib.figure import Figure

    _, opt = _two_group_sgd()
    s = SuperConvergence(opt, [0.02, 0.01], [0.2, 0.1], step_size=5, cycles=2, flat_steps=3)
    lr_before, epoch_before = [g["lr"] for g in opt.param_groups], s.last_epoch
    fig = s.plot()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # lr, momentum
    lines = fig.axes[0].get_lines()
    assert len(lines[0].get_xdata()) == s.total_steps
    assert max(lines[0].get_ydata()) == pytest.approx(0.2)
    assert [g["lr"] for g in opt.param_groups] == lr_before and s.last_epoch == epoch_before
    fig.savefig(io.BytesIO(), format="png")


def test_agent_checkpoint_round_trip_resumes_without_warnings(tmp_path):
    import dawnet

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))

    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    agent = dawnet.Agent(model, opt, loss=nn.CrossEntropyLoss(), device="cpu",
                         schedule=SuperConvergence(opt, 0.01, 0.1, step_size=2, cycles=2))
    data = [(torch.randn(4, 3), torch.randint(0, 2, (4,))) for _ in range(3)]
    path = agent.save(tmp_path / "init.pt")  # saved before any step: _step_count is 1
    loaded = dawnet.Agent.load(path, model=build())
    assert isinstance(loaded.schedule, SuperConvergence)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.fit(data, steps=6, progress=False)
        agent.fit(data, steps=6, progress=False)
    assert [r["lr"] for r in loaded.history.steps] == [r["lr"] for r in agent.history.steps]
    assert [r["momentum"] for r in loaded.history.steps] == [r["momentum"] for r in agent.history.steps]
