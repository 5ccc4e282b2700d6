"""Every batched optimizer against torch.optim itself, step by step: a batch of configurations with
different hyperparameters, each compared with torch.optim run alone on that configuration's
parameters and gradients."""

from __future__ import annotations

import pytest
import torch

from gradlab import optim
from gradlab.config import AdagradConfig, AdamConfig, AdamWConfig, OptimizerConfig, RMSpropConfig, SGDConfig

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
}


def torch_kwargs(cfg) -> dict:
    import dataclasses

    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}


def trajectories(kind: str, dtype: torch.dtype, seed: int = 0):
    """(ours, torch.optim's): each configuration's parameters after every step."""
    configs = CASES[kind]
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(len(configs), *s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
    grads = [[torch.randn(len(configs), *s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]
             for _ in range(STEPS)]
    ours = [p.clone() for p in start]
    opt = optim.build(configs, ours)
    mine = []
    for g in grads:
        opt.step([x.clone() for x in g])
        mine.append([p.clone() for p in ours])
    theirs = []
    for c, cfg in enumerate(configs):
        params = [p[c].clone() for p in start]
        ref = optim.TORCH[kind](params, **torch_kwargs(cfg))
        steps = []
        for g in grads:
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
