"""Learning-rate schedules by name, for a batch of configurations: each configuration's lr, epoch
by epoch, as torch.optim.lr_scheduler sets it.

A schedule is built with each configuration's lr (torch's base_lrs) and sets the first epoch's lr
as torch's constructor does; `step` is called after each epoch's updates (torch's documented
loop) and gives the next epoch's. Every value in a schedule's config may differ between the
configurations of a batch; its kind may not.

The formulas are torch's own, chainable ones included (the next lr from the last one, as torch's
`step()` computes it, not the closed forms, which differ in the last bits). The arithmetic on the
lrs runs on a float64 tensor of the batch (IEEE arithmetic in the same order: the bits of torch's
Python floats); what depends only on the epoch and a configuration's settings (a cosine, a phase)
is computed in Python's `math`, once per distinct setting, as torch computes it: a vectorised
cosine may differ in the last bit, and the cosine recurrence divides by 1 + cos(·) near zero,
which magnifies that bit.

`constant` builds nothing: a run without a schedule does no work per epoch.
"""

from __future__ import annotations

import math

import torch

# What a setting's rule says to do to each configuration's lr this epoch, with its coefficient c:
MUL = 0  # lr · c
SET = 1  # c
HALF = 2  # eta_min + (base_lr − eta_min) · c / 2      (a cosine's closed form, c = 1 + cos(·))
UP = 3  # lr + (base_lr − eta_min) · c / 2             (CosineAnnealingLR past its minimum, c = 1 − cos(π/T_max))
RATIO = 4  # c · (lr − eta_min) + eta_min              (CosineAnnealingLR's recurrence, c a ratio of cosines)


class LRSchedule:
    """A batch's learning rates under one kind of schedule. `lr` holds each configuration's
    current one (float64 (B,)); `step` moves it on by an epoch; `keep` takes configurations out."""

    reads_loss = False  # plateau: step() needs each configuration's loss of the epoch

    def __init__(self, configs: list, epochs: int, lrs: list[float]):
        self.base = torch.tensor(lrs, dtype=torch.float64)  # torch's base_lrs
        self.lr = self.base.clone()
        self.epochs = epochs
        self.t = 0  # torch's last_epoch: its constructor's step makes it 0

    def step(self, loss: list[float] | None = None) -> None:
        raise NotImplementedError

    def keep(self, positions: list[int]) -> None:
        idx = torch.tensor(positions)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value[idx])


class _Rule(LRSchedule):
    """A schedule whose step is a rule of the epoch and of a configuration's settings (Python
    values, `setting`), giving one of the updates above; configurations that share a setting
    share its computation."""

    def __init__(self, configs: list, epochs: int, lrs: list[float]):
        super().__init__(configs, epochs, lrs)
        self.eta_min = torch.tensor([float(getattr(c, "eta_min", 0.0)) for c in configs], dtype=torch.float64)
        settings = [self.setting(c) for c in configs]
        self.settings = list(dict.fromkeys(settings))
        where = {s: i for i, s in enumerate(self.settings)}
        self.index = torch.tensor([where[s] for s in settings])  # each configuration's setting
        self._apply()  # torch's constructor steps once: the first epoch's lr

    def setting(self, cfg) -> tuple:
        raise NotImplementedError

    def rule(self, t: int, *setting) -> tuple[int, float]:
        raise NotImplementedError

    def step(self, loss: list[float] | None = None) -> None:
        self.t += 1
        self._apply()

    def _apply(self) -> None:
        ruled = [self.rule(self.t, *s) for s in self.settings]
        kinds = {kind for kind, _ in ruled}
        c = torch.tensor([v for _, v in ruled], dtype=torch.float64)[self.index]
        if len(kinds) == 1:
            self.lr = self._update(kinds.pop(), c)
            return
        kind = torch.tensor([k for k, _ in ruled])[self.index]
        new = self.lr
        for k in kinds:
            new = torch.where(kind == k, self._update(k, c), new)
        self.lr = new

    def _update(self, kind: int, c: torch.Tensor) -> torch.Tensor:
        lr, base, eta = self.lr, self.base, self.eta_min
        if kind == MUL:
            return lr * c
        if kind == SET:
            return c
        if kind == HALF:
            return eta + (base - eta) * c / 2
        if kind == UP:
            return lr + (base - eta) * c / 2
        return c * (lr - eta) + eta


def _cosine(t: int, t_max: int) -> tuple[int, float]:
    """CosineAnnealingLR.get_lr at last_epoch t (>= 1), after its constructor's step."""
    if (t - 1 - t_max) % (2 * t_max) == 0:
        return UP, 1 - math.cos(math.pi / t_max)
    return RATIO, (1 + math.cos(math.pi * t / t_max)) / (1 + math.cos(math.pi * (t - 1) / t_max))


class Step(_Rule):
    """StepLR: lr × gamma every step_size epochs."""

    def setting(self, cfg):
        return cfg.step_size, cfg.gamma

    def rule(self, t, step_size, gamma):
        return MUL, (gamma if t != 0 and t % step_size == 0 else 1.0)


class MultiStep(_Rule):
    """MultiStepLR: lr × gamma at each milestone."""

    def setting(self, cfg):
        return tuple(cfg.milestones), cfg.gamma

    def rule(self, t, milestones, gamma):
        return MUL, (gamma ** milestones.count(t) if t in milestones else 1.0)


class Exponential(_Rule):
    """ExponentialLR: lr × gamma every epoch."""

    def setting(self, cfg):
        return (cfg.gamma,)

    def rule(self, t, gamma):
        return MUL, (gamma if t else 1.0)


class Cosine(_Rule):
    """CosineAnnealingLR, by torch's recurrence (T_max null: the epochs)."""

    def setting(self, cfg):
        return (cfg.T_max or self.epochs,)

    def rule(self, t, t_max):
        return (MUL, 1.0) if t == 0 else _cosine(t, t_max)


class CosineRestarts(_Rule):
    """CosineAnnealingWarmRestarts: its closed form at T_cur epochs into a period of T_i."""

    def __init__(self, configs: list, epochs: int, lrs: list[float]):
        self.periods: dict[tuple, list[int]] = {}  # setting -> [T_cur, T_i]
        super().__init__(configs, epochs, lrs)

    def setting(self, cfg):
        return cfg.T_0, cfg.T_mult

    def rule(self, t, t_0, t_mult):
        if t == 0:
            self.periods[(t_0, t_mult)] = [0, t_0]
        else:
            period = self.periods[(t_0, t_mult)]
            period[0] += 1
            if period[0] >= period[1]:
                period[0], period[1] = period[0] % period[1], period[1] * t_mult
        t_cur, t_i = self.periods[(t_0, t_mult)]
        return HALF, 1 + math.cos(math.pi * t_cur / t_i)


def _linear(t: int, start: float, end: float, total: int) -> float:
    """LinearLR.get_lr's factor at last_epoch t."""
    if t == 0:
        return start
    if t > total:
        return 1.0
    return 1.0 + (end - start) / (total * start + (t - 1) * (end - start))


class Linear(_Rule):
    """LinearLR: lr × a factor going linearly from start_factor to end_factor over total_iters."""

    def setting(self, cfg):
        return cfg.start_factor, cfg.end_factor, cfg.total_iters

    def rule(self, t, start, end, total):
        return MUL, _linear(t, start, end, total)


class WarmupCosine(_Rule):
    """SequentialLR([LinearLR(start_factor, total_iters=w), CosineAnnealingLR(T_max=epochs − w,
    eta_min)], milestones=[w]): the warm-up's factor for epochs 0..w−1, then at epoch w the
    cosine restarted by its closed form (SequentialLR steps it to 0), then its recurrence."""

    def setting(self, cfg):
        return cfg.warmup_epochs, cfg.start_factor

    def rule(self, t, warmup, start):
        if t < warmup:
            return MUL, _linear(t, start, 1.0, warmup)
        if t == warmup:
            return HALF, 1 + math.cos(math.pi * 0 / (self.epochs - warmup))
        return _cosine(t - warmup, self.epochs - warmup)


class OneCycle(_Rule):
    """OneCycleLR with total_steps = the epochs, the lr only (cycle_momentum=False): its phases'
    annealing, from max_lr/div_factor up to max_lr and down to that / final_div_factor."""

    def setting(self, cfg):
        return cfg.max_lr, cfg.pct_start, cfg.anneal_strategy.value, cfg.div_factor, cfg.final_div_factor, cfg.three_phase

    def rule(self, t, max_lr, pct_start, anneal, div_factor, final_div_factor, three_phase):
        total = self.epochs
        initial = max_lr / div_factor
        low = initial / final_div_factor
        if three_phase:
            phases = [(float(pct_start * total) - 1, initial, max_lr), (float(2 * pct_start * total) - 2, max_lr, initial),
                      (total - 1, initial, low)]
        else:
            phases = [(float(pct_start * total) - 1, initial, max_lr), (total - 1, max_lr, low)]
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            if t <= end_step or i == len(phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                if anneal == "cos":
                    return SET, end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
                return SET, (end - start) * pct + start
            start_step = end_step
        raise AssertionError("unreachable: the last phase takes every step")


class Plateau(LRSchedule):
    """ReduceLROnPlateau, mode min, on each configuration's loss of the epoch: lr × factor (not
    below min_lr, and only by more than eps) after more than `patience` epochs without a loss
    below the best by the threshold, then `cooldown` epochs of rest."""

    reads_loss = True

    def __init__(self, configs: list, epochs: int, lrs: list[float]):
        super().__init__(configs, epochs, lrs)

        def each(name: str, dtype=torch.float64) -> torch.Tensor:
            return torch.tensor([getattr(c, name) for c in configs], dtype=dtype)

        self.factor, self.threshold, self.min_lr, self.eps = each("factor"), each("threshold"), each("min_lr"), each("eps")
        self.patience, self.cooldown = each("patience", torch.int64), each("cooldown", torch.int64)
        self.relative = torch.tensor([c.threshold_mode.value == "rel" for c in configs])
        self.best = torch.full_like(self.lr, math.inf)
        self.bad_epochs = torch.zeros_like(self.patience)
        self.cooldown_left = torch.zeros_like(self.patience)

    def step(self, loss: list[float] | None = None) -> None:
        self.t += 1
        current = torch.tensor(loss, dtype=torch.float64)
        better = torch.where(self.relative, current < self.best * (1.0 - self.threshold), current < self.best - self.threshold)
        self.best = torch.where(better, current, self.best)
        self.bad_epochs = torch.where(better, 0, self.bad_epochs + 1)
        resting = self.cooldown_left > 0
        self.cooldown_left = torch.where(resting, self.cooldown_left - 1, self.cooldown_left)
        self.bad_epochs = torch.where(resting, 0, self.bad_epochs)
        reduce = self.bad_epochs > self.patience
        if bool(reduce.any()):
            lower = torch.maximum(self.lr * self.factor, self.min_lr)
            self.lr = torch.where(reduce & (self.lr - lower > self.eps), lower, self.lr)
            self.cooldown_left = torch.where(reduce, self.cooldown, self.cooldown_left)
            self.bad_epochs = torch.where(reduce, 0, self.bad_epochs)


# Option name (the config's `name`) -> the schedule class; `constant` has none: nothing to do.
SCHEDULES: dict[str, type[LRSchedule] | None] = {
    "constant": None, "step": Step, "multistep": MultiStep, "exponential": Exponential, "cosine": Cosine,
    "cosine_restarts": CosineRestarts, "linear": Linear, "warmup_cosine": WarmupCosine, "onecycle": OneCycle,
    "plateau": Plateau,
}


def build(configs: list, epochs: int, lrs: list[float]) -> LRSchedule | None:
    """The schedule the `schedule` configs of a batch name (one kind for the whole batch), from
    each configuration's lr; None for constant."""
    cls = SCHEDULES[configs[0].name]
    return None if cls is None else cls(configs, epochs, lrs)

