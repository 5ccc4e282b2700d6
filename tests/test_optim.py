"""Every batched optimizer against torch.optim itself, step by step: a batch of configurations with
different hyperparameters, each compared with torch.optim run alone on that configuration's
parameters and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from gradlab import optim
from gradlab.config import (
    AdadeltaConfig, AdagradConfig, AdamaxConfig, AdamConfig, AdamWConfig, ASGDConfig, NAdamConfig, OptimizerConfig, RAdamConfig,
    RMSpropConfig, RpropConfig, SGDConfig,
)

STEPS = 25
SHAPES = [(3, 1), (1, 1), (2, 4)]  # a column, a scalar, a matrix: each parameter's layout per configuration

CASES = {
    "sgd": [SGDConfig(name="sgd", lr=0.1), SGDConfig(name="sgd", lr=0.05, momentum=0.9),
            SGDConfig(name="sgd", lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.01),
            SGDConfig(name="sgd", lr=0.03, momentum=0.8, nesterov=True),
            SGDConfig(name="sgd", lr=0.01, dampening=0.4)],  # dampening without momentum: torch ignores it
    "adam": [AdamConfig(name="adam", lr=1e-2), AdamConfig(name="adam", lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
             AdamConfig(name="adam", lr=1e-1, weight_decay=0.1, amsgrad=True), AdamConfig(name="adam", lr=1e-3, amsgrad=True)],
    "adamw": [AdamWConfig(name="adamw", lr=1e-2), AdamWConfig(name="adamw", lr=5e-2, weight_decay=0.3, amsgrad=True),
              AdamWConfig(name="adamw", lr=1e-3, betas=(0.5, 0.9), weight_decay=0.0)],
    "rmsprop": [RMSpropConfig(name="rmsprop", lr=1e-2), RMSpropConfig(name="rmsprop", lr=1e-3, alpha=0.9, centered=True),
                RMSpropConfig(name="rmsprop", lr=5e-3, momentum=0.7, weight_decay=0.05),
                RMSpropConfig(name="rmsprop", lr=2e-3, momentum=0.5, centered=True, eps=1e-4)],
    "adagrad": [AdagradConfig(name="adagrad", lr=0.1), AdagradConfig(name="adagrad", lr=0.05, lr_decay=0.01),
                AdagradConfig(name="adagrad", lr=0.2, initial_accumulator_value=0.5, weight_decay=0.02, eps=1e-6)],
    "asgd": [ASGDConfig(name="asgd", lr=0.05), ASGDConfig(name="asgd", lr=0.1, lambd=0.05, alpha=0.5, t0=3, weight_decay=0.02),
             ASGDConfig(name="asgd", lr=0.02, lambd=0.3, alpha=1.0, t0=0)],
    "adadelta": [AdadeltaConfig(name="adadelta"), AdadeltaConfig(name="adadelta", lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.05),
                 AdadeltaConfig(name="adadelta", lr=2.0, rho=0.99)],
    "adamax": [AdamaxConfig(name="adamax"), AdamaxConfig(name="adamax", lr=0.05, betas=(0.8, 0.9), eps=1e-4, weight_decay=0.1),
               AdamaxConfig(name="adamax", lr=0.01, betas=(0.0, 0.5))],
    "nadam": [NAdamConfig(name="nadam"), NAdamConfig(name="nadam", lr=0.05, betas=(0.8, 0.99), momentum_decay=0.05, weight_decay=0.1),
              NAdamConfig(name="nadam", lr=0.02, weight_decay=0.2, decoupled_weight_decay=True),  # flags mixed in one batch
              NAdamConfig(name="nadam", lr=0.01, eps=1e-5, decoupled_weight_decay=True)],
    "radam": [RAdamConfig(name="radam"), RAdamConfig(name="radam", lr=0.05, betas=(0.5, 0.9), weight_decay=0.1),
              RAdamConfig(name="radam", lr=0.02, betas=(0.9, 0.5), weight_decay=0.2, decoupled_weight_decay=True),
              RAdamConfig(name="radam", lr=0.01, betas=(0.9, 0.8))],  # rectified from different steps (rho_t > 5)
    "rprop": [RpropConfig(name="rprop"), RpropConfig(name="rprop", lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.08)),
              RpropConfig(name="rprop", lr=0.001, etas=(0.9, 1.01), step_sizes=(0.0, 1.0))],
}


def torch_kwargs(cfg) -> dict:
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}


def trajectories(kind: str, dtype: torch.dtype, seed: int = 0, lr_factors: list[float] | None = None):
    """(ours, torch.optim's): each configuration's parameters after every step. With
    `lr_factors`, each step's learning rate is the configuration's lr times that step's factor,
    set as a schedule sets it (ours: set_lr; torch's: the group's lr)."""
    configs = CASES[kind]
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(len(configs), *s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    grads = [[torch.randn(len(configs), *s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
             for _ in range(STEPS)]
    lrs = torch.tensor([c.lr for c in configs], dtype=torch.float64)
    ours = [p.clone() for p in start]
    opt = optim.build(configs, ours)
    mine = []
    for k, g in enumerate(grads):
        if lr_factors:
            opt.set_lr(lrs * lr_factors[k])
        opt.step([x.clone() for x in g])
        mine.append([p.clone() for p in ours])
    theirs = []
    for c, cfg in enumerate(configs):
        params = [p[c].clone() for p in start]
        ref = optim.TORCH[kind](params, **torch_kwargs(cfg))
        steps = []
        for k, g in enumerate(grads):
            if lr_factors:
                ref.param_groups[0]["lr"] = cfg.lr * lr_factors[k]
            for p, gi in zip(params, g):
                p.grad = gi[c].clone()
            ref.step()
            steps.append([p.detach().clone() for p in params])
        theirs.append(steps)
    return mine, theirs


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("kind", sorted(CASES))
def test_batched_optimizer_follows_torch_optim_step_by_step(kind, dtype, rtol):
    mine, theirs = trajectories(kind, dtype)
    for step in range(STEPS):
        for c in range(len(CASES[kind])):
            for i in range(len(SHAPES)):
                torch.testing.assert_close(mine[step][i][c], theirs[c][step][i], rtol=rtol, atol=rtol * 1e-3,
                                           msg=lambda m: f"{kind} config {c} param {i} step {step + 1}: {m}")


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_learning_rate_changed_between_steps_is_followed_as_torch_optim_follows_it(kind):
    """What a schedule does: what each optimizer works out of lr (AdamW's decay factor, Adagrad's
    decayed lr, ASGD's eta, Rprop's first step sizes) follows it exactly as torch.optim's does."""
    factors = [0.5 + 0.5 * math.cos(k) ** 2 for k in range(STEPS)]
    mine, theirs = trajectories(kind, torch.float64, lr_factors=factors)
    for step in range(STEPS):
        for c in range(len(CASES[kind])):
            for i in range(len(SHAPES)):
                torch.testing.assert_close(mine[step][i][c], theirs[c][step][i], rtol=1e-12, atol=1e-15,
                                           msg=lambda m: f"{kind} config {c} param {i} step {step + 1}: {m}")


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_batch_mixing_hyperparameters_equals_each_configuration_alone(kind):
    """Bit for bit: a configuration's steps do not depend on the others of its batch (their
    flags, betas, step sizes), nor on being batched at all."""
    configs = CASES[kind]
    gen = torch.Generator().manual_seed(2)
    start = [torch.randn(len(configs), *s, generator=gen, dtype=torch.float64) for s in SHAPES]
    grads = [[torch.randn(len(configs), *s, generator=gen, dtype=torch.float64) for s in SHAPES] for _ in range(STEPS)]
    batch = [p.clone() for p in start]
    opt = optim.build(configs, batch)
    for g in grads:
        opt.step([x.clone() for x in g])
    for c, cfg in enumerate(configs):
        alone = [p[c:c + 1].clone() for p in start]
        one = optim.build([cfg], alone)
        for g in grads:
            one.step([x[c:c + 1].clone() for x in g])
        for i in range(len(SHAPES)):
            assert torch.equal(alone[i][0], batch[i][c]), f"{kind} config {c} param {i}"


def test_gd_is_the_hand_written_update():
    configs = [OptimizerConfig(name="gd", lr=0.1), OptimizerConfig(name="gd", lr=0.01)]
    p = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    g = torch.tensor([[0.5], [-3.0]], dtype=torch.float64)
    optim.build(configs, [p]).step([g])
    assert p.tolist() == [[1.0 - 0.1 * 0.5], [2.0 + 0.01 * 3.0]]


def test_a_configuration_that_leaves_the_batch_takes_its_state_with_it():
    """After `keep`, the others go on exactly as if the one dropped had never been there."""
    configs = CASES["adam"]
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(len(configs), 3, 1, generator=gen, dtype=torch.float64)
    grads = [torch.randn(len(configs), 3, 1, generator=gen, dtype=torch.float64) for _ in range(10)]
    full = p.clone()
    opt_full = optim.build(configs, [full])
    part = p.clone()
    opt_part = optim.build(configs, [part])
    for k, g in enumerate(grads):
        opt_full.step([g.clone()])
        if k == 4:
            part = part[[0, 2, 3]].clone()
            opt_part.keep([0, 2, 3], [part])
        opt_part.step([g.clone() if k < 4 else g[[0, 2, 3]].clone()])
    torch.testing.assert_close(part, full[[0, 2, 3]], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(optim.TORCH))
def test_the_check_takes_what_torch_optim_takes_and_refuses_what_it_refuses(name):
    """The check builds torch.optim's class without its parameter groups (their first use imports
    torch._dynamo): each option's defaults must pass, as torch.optim itself takes them, and a
    negative learning rate be refused by name."""
    from gradlab.config import ConfigError, SCHEMAS

    cfg = SCHEMAS["optimizer"][name](name=name)
    kwargs = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k != "name"}
    optim.TORCH[name]([torch.zeros(1)], **{k: tuple(v) if k == "betas" else v for k, v in kwargs.items()})
    optim.check(cfg)
    cfg.lr = -1.0
    with pytest.raises(ConfigError, match=r"optimizer.lr=-1.0 is not allowed: torch.optim.\w+ refuses it"):
        optim.check(cfg)
