"""One-cycle exactly as the paper (and torch's OneCycleLR with the same end points), momentum applied
to the optimizer for real, regular training's plateau rule, and the lr finder's rules."""

import math

import numpy as np
import pytest
import torch

from smalldl import models, schedules, train
from smalldl.config import train_settings

from .test_train import blobs


def formula(i, T, max_lr, final_div=25000.0):
    cut = math.ceil(0.3 * T)
    f = lambda i, L, a, b: b + (a - b) / 2 * (1 + math.cos(i * math.pi / L))  # noqa: E731
    if i < cut:
        return f(i, cut, max_lr / 25, max_lr), f(i, cut, 0.95, 0.85)
    return f(i - cut, T - cut, max_lr, max_lr / final_div), f(i - cut, T - cut, 0.85, 0.95)


@pytest.mark.parametrize("T", [10, 37, 100, 1000])
def test_onecycle_follows_the_papers_formula(T):
    sched = schedules.OneCycle(0.01, T)
    assert sched.cut == math.ceil(0.3 * T)
    for i in range(T):
        lr, mom = formula(i, T, 0.01)
        assert sched.lr(i) == pytest.approx(lr, rel=1e-12)
        assert sched.momentum(i) == pytest.approx(mom, rel=1e-12)
    assert sched.lr(0) == pytest.approx(0.01 / 25)
    assert sched.lr(sched.cut) == pytest.approx(0.01)
    assert sched.lr(T) == pytest.approx(0.01 / 25000)  # the end point: max_lr / final_div
    assert sched.momentum(sched.cut) == pytest.approx(0.85) and sched.momentum(T) == pytest.approx(0.95)


@pytest.mark.parametrize("T", [50, 200, 1000])
def test_onecycle_matches_torch_onecyclelr_with_the_same_end_points(T):
    """torch's OneCycleLR with div_factor 25 and final_div_factor 1000 ends at max_lr/25000 too. Its
    phases are one step shorter, so each of our values is within one step of torch's."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=T, pct_start=0.3, div_factor=25, final_div_factor=1000, three_phase=False
    )
    torch_lr, torch_mom = [], []
    for _ in range(T):
        torch_lr.append(opt.param_groups[0]["lr"])
        torch_mom.append(opt.param_groups[0]["momentum"])
        opt.step()
        ref.step()
    ours = schedules.OneCycle(0.1, T)
    assert torch_lr[0] == pytest.approx(ours.lr(0)) and torch_lr[-1] == pytest.approx(0.1 / 25000, rel=1e-6)
    for i in range(T):
        near = [torch_lr[j] for j in (i - 1, i, i + 1) if 0 <= j < T]
        lo, hi = min(near), max(near)
        assert lo * (1 - 1e-9) <= ours.lr(i) <= hi * (1 + 1e-9) or ours.lr(i) == pytest.approx(torch_lr[i], rel=1e-9)
        near_m = [torch_mom[j] for j in (i - 1, i, i + 1) if 0 <= j < T]
        assert min(near_m) - 1e-12 <= ours.momentum(i) <= max(near_m) + 1e-12


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_fit_writes_lr_and_momentum_into_the_optimizer_at_every_step(optimizer):
    """What the optimizer holds when it steps (a step pre-hook reads param_groups) is the formula:
    Adam's beta1 / SGD's momentum really follow the one-cycle momentum (the authors' code wrote it to a
    key the optimizer ignored)."""
    settings = train_settings({"epochs": 3, "batch_size": 8, "max_lr": 0.01, "crop": 20, "optimizer": optimizer})
    data, val = blobs(48, 0), blobs(16, 1)
    model = models.build("smallcnn", 1)
    seen = []

    real_step = None

    def on_step(i, m, opt):
        seen.append(i)

    def hook(opt, args, kwargs):
        g = opt.param_groups
        seen_groups.append(([x["lr"] for x in g], [schedules.get_momentum(x) for x in g]))

    seen_groups = []
    orig = train.make_optimizer

    def make_opt(groups, s, **kw):
        opt = orig(groups, s, **kw)
        opt.register_step_pre_hook(hook)
        return opt

    train.make_optimizer, real_step = make_opt, orig
    try:
        result = train.fit(
            model,
            data,
            val,
            settings,
            train.Run(task_type="binary", labels=["y"], seed=0),
            train.Hooks(on_step=on_step),
        )
    finally:
        train.make_optimizer = real_step
    T = result["steps"]
    assert len(seen_groups) == T == 3 * train.steps_per_epoch(48, 8)
    for i, (lrs, moms) in enumerate(seen_groups):
        lr, mom = formula(i, T, 0.01)
        assert lrs == pytest.approx([lr, lr, lr], rel=1e-12)
        assert moms == pytest.approx([mom, mom, mom], rel=1e-12)
    steps = [r for r in result["history"] if r["kind"] == "step"]
    assert [r["lr"] for r in steps] == pytest.approx([g[0][2] for g in seen_groups])
    assert [r["momentum"] for r in steps] == pytest.approx([g[1][2] for g in seen_groups])


def test_final_div_is_configurable():
    s = schedules.OneCycle(1.0, 100, final_div=250000)
    assert s.lr(100) == pytest.approx(1 / 250000)


def test_plateau_divides_by_ten_after_an_epoch_without_improvement_and_stops_at_the_floor():
    p = schedules.Plateau(0.1, factor=0.1, min_lr_ratio=1e-3)
    assert p.lr(0) == 0.1
    assert p.epoch_end(1.0) is False and p.lr(5) == 0.1  # improved
    assert p.epoch_end(0.9) is False and p.lr(5) == 0.1
    assert p.epoch_end(0.95) is False and p.lr(5) == pytest.approx(0.01)  # no improvement -> / 10
    assert p.epoch_end(0.85) is False and p.lr(5) == pytest.approx(0.01)  # improved on the best
    assert p.epoch_end(0.86) is False and p.lr(5) == pytest.approx(0.001)
    assert p.epoch_end(0.87) is False and p.lr(5) == pytest.approx(1e-4)  # the floor itself still trains
    assert p.epoch_end(0.88) is True  # 1e-5 is below the floor 0.1 * 1e-3: stop
    p2 = schedules.Plateau(0.1)
    p2.load_state_dict({"current": 0.01, "best": 0.5})
    assert p2.lr(0) == 0.01 and p2.state_dict() == {"current": 0.01, "best": 0.5}


def test_regular_training_keeps_the_lr_within_an_epoch_and_drops_it_after_no_improvement():
    settings = train_settings({"epochs": 6, "batch_size": 8, "max_lr": 0.05, "crop": 20, "min_lr_ratio": 0.01})
    data, val = blobs(32, 0), blobs(16, 1)
    # validation labels flipped: the validation loss soon stops improving
    val.targets = 1 - val.targets
    result = train.fit(
        models.build("smallcnn", 1),
        data,
        val,
        settings,
        train.Run(task_type="binary", labels=["y"], seed=0, schedule="regular"),
    )
    steps = [r for r in result["history"] if r["kind"] == "step"]
    epochs = [r for r in result["history"] if r["kind"] == "epoch"]
    best, lr = math.inf, 0.05
    for e in epochs:
        lrs = [r["lr"] for r in steps if r["epoch"] == e["epoch"]]
        assert lrs == pytest.approx([lr] * len(lrs))
        moms = [r["momentum"] for r in steps if r["epoch"] == e["epoch"]]
        assert moms == pytest.approx([0.9] * len(moms))
        if e["val_loss"] < best:
            best = e["val_loss"]
        else:
            lr /= 10
    assert result["epochs_run"] < 6  # stopped at the floor (0.05 * 0.01) before max epochs
    assert lr < 0.05 * 0.01


def test_lr_finder_rules():
    lrs = schedules.finder_lrs(1e-6, 1.0, 61)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert np.allclose(np.diff(np.log(lrs)), np.log(1e6) / 60)
    x = np.log10(lrs)
    loss = 1 + 0.5 * np.tanh(-(x + 3)) + 0.02 * np.maximum(0, x + 1) ** 4  # falls around 1e-3, rises after 1e-1
    k_min = int(np.argmin(loss))
    assert schedules.suggest(lrs, loss, "minimum", raw=loss) == pytest.approx(lrs[k_min])
    with pytest.raises(ValueError, match="raw loss"):
        schedules.suggest(lrs, loss, "minimum")
    assert schedules.suggest(lrs, loss, "minimum_div10") == pytest.approx(lrs[k_min] / 10)
    steep = schedules.suggest(lrs, loss, "steep")
    assert 3e-4 < steep < 3e-3
    valley = schedules.suggest(lrs, loss, "valley")
    assert lrs[0] < valley < lrs[k_min]
    smoothed = schedules.smooth_losses([1.0, 1.0, 1.0], 0.98)
    assert np.allclose(smoothed, 1.0)  # debiased
    with pytest.raises(ValueError):
        schedules.suggest(lrs, loss, "nope")


def test_the_minimum_rule_is_the_lr_of_the_minimal_loss_not_of_the_lagging_average():
    """PAPER.md: max_lr = the lr at which the loss is minimal. The recorder's smoothed loss (a causal
    average, beta 0.98) trails the loss, so its minimum lies 4-16x higher in lr than the loss's own: on a
    sweep like the real ones (100 steps from 1e-7 to 10, the loss falling around 3e-4 and rising from
    1e-2, batch noise) the rule must land within two sweep steps of the noise-free minimum, where the
    smoothed curve's minimum is many steps past it."""
    lrs = schedules.finder_lrs(1e-7, 10, 100)
    x = np.log10(lrs)
    true = 0.7 - 0.3 * np.tanh(x + 3.5) + 0.02 * np.exp(2.3 * (x + 1.5))
    step = lrs[1] / lrs[0]
    for seed in range(5):
        raw = true * (1 + 0.05 * np.random.default_rng(seed).standard_normal(len(true)))
        smoothed = schedules.smooth_losses(raw, 0.98)
        keep = slice(0, int(np.argmax(smoothed > 4 * np.minimum.accumulate(smoothed))) or len(raw))
        chosen = schedules.suggest(lrs[keep], smoothed[keep], "minimum", raw=raw[keep])
        lag = lrs[keep][int(np.argmin(smoothed[keep]))]
        assert lrs[int(np.argmin(true))] / step**2 <= chosen <= lrs[int(np.argmin(true))] * step**2
        assert lag / chosen > 4  # what the rule picked before: the smoothed curve's minimum


def test_lr_sweep_is_exponential_and_stops_when_the_loss_diverges():
    settings = train_settings(
        {"batch_size": 8, "crop": 20, "lr_finder": {"start_lr": 1e-5, "end_lr": 1e3, "steps": 60, "diverge": 4}}
    )
    out = train.lr_sweep(models.build("smallcnn", 1), blobs(64, 0), settings, task_type="binary", seed=0)
    rows = out["rows"]
    assert len(rows) >= 10
    lrs = [r["lr"] for r in rows]
    assert np.allclose(np.diff(np.log(lrs)), np.log(1e8) / 59)
    assert len(rows) < 60  # diverged before 1e3
    raw = [r["loss"] for r in rows]
    k = int(np.argmin(schedules.centred_losses(raw)))
    assert out["lr"] == pytest.approx(lrs[k]) and out["rule"] == "minimum"
    # recorded for the check against the raw sweep
    assert out["raw_min_lr"] == pytest.approx(lrs[int(np.argmin(raw))])
    assert out["smoothed_min_lr"] == pytest.approx(lrs[int(np.argmin([r["smoothed_loss"] for r in rows]))])
