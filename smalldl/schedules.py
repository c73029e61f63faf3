"""Learning-rate schedules of the paper: one-cycle, regular (divide on plateau), and the lr finder rules.

The schedules here are plain objects that *write* the lr and momentum of every optimizer param group
before each step (``apply``), so what the optimizer uses is exactly what the formula says, per layer
group (discriminative lrs divide the schedule by each group's divisor). Momentum is written where the
optimizer reads it: SGD's ``momentum`` or Adam's ``betas[0]`` (the authors' code wrote it to a key the
optimizer ignored). ``make_schedule`` builds a recipe's schedule from the training settings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def cos_anneal(i: float, length: float, start: float, end: float) -> float:
    """f(i; a -> b) = b + (a - b)/2 * (1 + cos(i pi / T)): ``start`` at i = 0, ``end`` at i = T."""
    if length <= 0:
        return end
    return end + (start - end) / 2 * (1 + math.cos(math.pi * i / length))


def set_momentum(group: dict[str, Any], momentum: float) -> None:
    """Write ``momentum`` where the optimizer reads it: Adam's beta1 or SGD's momentum."""
    if "betas" in group:
        group["betas"] = (momentum, group["betas"][1])
    elif "momentum" in group:
        group["momentum"] = momentum
    else:
        raise ValueError("optimizer has neither betas nor momentum")


def get_momentum(group: dict[str, Any]) -> float:
    return float(group["betas"][0]) if "betas" in group else float(group.get("momentum", math.nan))


class OneCycle:
    """The paper's one-cycle: for i < cut = ceil(pct_start T), lr = f(i; max_lr/div -> max_lr); then
    lr = f(i - cut; max_lr -> max_lr/final_div) over the remaining T - cut iterations. Momentum goes
    moms[0] -> moms[1] -> moms[0] over the same two phases."""

    def __init__(
        self,
        max_lr: float,
        total: int,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div: float = 25000.0,
        moms: Sequence[float] = (0.95, 0.85),
    ) -> None:
        if total < 1:
            raise ValueError("one-cycle needs at least one iteration")
        self.max_lr, self.total = float(max_lr), int(total)
        self.cut = math.ceil(pct_start * self.total)
        self.div_factor, self.final_div = float(div_factor), float(final_div)
        self.moms = (float(moms[0]), float(moms[1]))

    def lr(self, i: int) -> float:
        if i < self.cut:
            return cos_anneal(i, self.cut, self.max_lr / self.div_factor, self.max_lr)
        return cos_anneal(i - self.cut, self.total - self.cut, self.max_lr, self.max_lr / self.final_div)

    def momentum(self, i: int) -> float:
        if i < self.cut:
            return cos_anneal(i, self.cut, self.moms[0], self.moms[1])
        return cos_anneal(i - self.cut, self.total - self.cut, self.moms[1], self.moms[0])

    def epoch_end(self, val_loss: float) -> bool:
        """One-cycle runs a fixed number of epochs: never stops early."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Plateau:
    """Regular training: start at max_lr; after an epoch whose validation loss did not improve on the
    best so far, multiply the lr by ``factor`` (1/10); stop once it falls below max_lr * min_lr_ratio."""

    def __init__(self, max_lr: float, factor: float = 0.1, min_lr_ratio: float = 1e-3, momentum: float = 0.9) -> None:
        self.max_lr, self.factor, self.min_lr = float(max_lr), float(factor), float(max_lr) * float(min_lr_ratio)
        self.current, self.best, self.mom = float(max_lr), math.inf, float(momentum)

    def lr(self, i: int) -> float:
        return self.current

    def momentum(self, i: int) -> float:
        return self.mom

    def epoch_end(self, val_loss: float) -> bool:
        """Update after an epoch; True when training should stop (lr below the floor)."""
        if val_loss < self.best:
            self.best = val_loss
        else:
            self.current *= self.factor
        return self.current < self.min_lr * (1 - 1e-9)

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current, self.best = float(state["current"]), float(state["best"])


def make_schedule(name: str, settings: Mapping[str, Any], *, max_lr: float, total: int) -> OneCycle | Plateau:
    """The schedule of a recipe: "onecycle" over ``total`` iterations or "regular" (Plateau), with the
    rest of its parameters from ``settings`` (the ``train_settings`` schema)."""
    if name == "onecycle":
        return OneCycle(
            max_lr, total, settings["pct_start"], settings["div_factor"], settings["final_div"], settings["moms"]
        )
    if name == "regular":
        return Plateau(max_lr, settings["plateau_factor"], settings["min_lr_ratio"], settings["momentum"])
    raise ValueError(f"unknown schedule {name!r}")


def apply(schedule: OneCycle | Plateau, optimizer: Any, i: int, divisors: Sequence[float]) -> None:
    """Set every param group's lr (schedule / the group's divisor) and momentum for iteration ``i``."""
    lr, mom = schedule.lr(i), schedule.momentum(i)
    for group, div in zip(optimizer.param_groups, divisors, strict=True):
        group["lr"] = lr / div
        set_momentum(group, mom)


# ------------------------------------------------------------------------------------------ lr finder


def finder_lrs(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    """The exponential sweep: lr_k = start * (end/start)^(k/(steps-1))."""
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))


def smooth_losses(losses: Sequence[float], beta: float = 0.98) -> np.ndarray:
    """Exponentially smoothed, debiased losses (fastai's recorder)."""
    out, avg = [], 0.0
    for k, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta**k) if beta > 0 else float(loss))
    return np.asarray(out)


def centred_losses(losses: Sequence[float], half: int | None = None) -> np.ndarray:
    """The losses averaged over a centred window of ``half`` steps either side (fewer at the ends;
    default ``len // 30``, at least 1: +-3 steps of a 100-step sweep). Unlike the recorder's causal
    average (``smooth_losses``), which trails the loss by about 1/(1 - beta) steps and so has its minimum
    4-16x higher in lr than the loss's own on a 100-step sweep from 1e-7 to 10, it does not lag; it only
    keeps one lucky batch from deciding the minimum."""
    values = np.asarray(losses, dtype=float)
    n = len(values)
    half = max(1, n // 30) if half is None else half
    sums = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(n)
    lo, hi = np.maximum(0, i - half), np.minimum(n, i + half + 1)
    return (sums[hi] - sums[lo]) / (hi - lo)


def suggest(lrs: Sequence[float], smoothed: Sequence[float], rule: str, *, raw: Sequence[float] | None = None) -> float:
    """The max_lr chosen from a sweep (``smoothed``: the recorder's causal average; ``raw``: the losses).

    minimum: the lr at which the loss is minimal (the paper's words): the minimum of the raw losses
    over a centred window (``centred_losses``), so that one lucky batch does not decide it and the
    recorder's lag does not push it to larger lrs; minimum_div10: the lr of the lowest smoothed loss / 10
    (fastai); steep: the lr of the steepest descent of the smoothed loss against log lr; valley: fastai's
    valley (the longest stretch of decreasing loss, 2/3 of the way down it)."""
    lrs, loss = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    if len(lrs) != len(loss) or len(lrs) < 2:
        raise ValueError("lr finder needs at least two (lr, loss) points")
    if rule == "minimum":
        if raw is None or len(raw) != len(lrs):
            raise ValueError("the lr finder's minimum rule needs the raw loss of every lr")
        values = np.asarray(raw, dtype=float)
        finite = np.isfinite(values)
        return float(lrs[finite][int(np.argmin(centred_losses(values[finite])))])
    finite = np.isfinite(loss)
    lrs, loss = lrs[finite], loss[finite]
    k_min = int(np.argmin(loss))
    if rule == "minimum_div10":
        return float(lrs[k_min] / 10)
    if rule == "steep":
        grad = np.gradient(loss, np.log(lrs))
        return float(lrs[int(np.argmin(grad))])
    if rule == "valley":
        n = len(loss)
        lds = [1] * n
        max_start = max_end = 0
        for i in range(1, n):
            for j in range(i):
                if loss[i] < loss[j] and lds[i] < lds[j] + 1:
                    lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
        sections = (max_end - max_start) / 3
        idx = max_start + int(sections) + int(sections / 2)
        return float(lrs[idx])
    raise ValueError(f"unknown lr finder rule {rule!r}")
