"""Optimizers by name, for a batch of configurations: every hyperparameter is a value per
configuration.

`gd` is the hand-written update p ← p − lr·∇p. The others follow torch.optim's update equations
(its single-tensor implementations, the ones it runs on the CPU) with a hyperparameter tensor per
configuration, since torch.optim takes one learning rate per parameter group, not one per
element; tests/test_optim.py checks each against torch.optim itself, step by step. L-BFGS runs a
line search per configuration: it is torch.optim.LBFGS, on a batch of one.

A registry, not `_target_`: a user picks a name; nothing they type is imported or called.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import torch

from gradlab.options import ConfigError


class Batched:
    """What every batched optimizer shares: hyperparameters per configuration (float64 (B,)
    tensors), cast and shaped once for each parameter; state per parameter, sliced by `keep`."""

    needs_closure = False
    on_numpy = False  # torch tensors only

    def __init__(self, params: list, configs: list):
        self.params = _targets(params)
        self.hyper = {f.name: torch.tensor([float(getattr(c, f.name)) for c in configs], dtype=torch.float64)
                      for f in dataclasses.fields(configs[0]) if f.name not in ("name", "betas")}
        self.state: list[dict] = [{} for _ in params]
        self.steps = 0
        self._shaped: dict = {}

    def h(self, name: str, i: int):
        """Hyperparameter `name` cast and shaped to broadcast over parameter i."""
        key = (name, i)
        if key not in self._shaped:
            p = self.params[i]
            shape = (-1, *[1] * (p.ndim - 1))
            v = self.hyper[name]
            self._shaped[key] = v.numpy().astype(p.dtype).reshape(shape) if not isinstance(p, torch.Tensor) \
                else v.to(device=p.device, dtype=p.dtype).view(shape)
        return self._shaped[key]

    def each(self, name: str) -> list:
        """Hyperparameter `name` shaped for every parameter, in their order."""
        key = (name, None)
        if key not in self._shaped:
            self._shaped[key] = [self.h(name, i) for i in range(len(self.params))]
        return self._shaped[key]

    def refresh(self, *names: str) -> None:
        """Forget the shaped copies of hyperparameters that change every step."""
        self._shaped = {k: v for k, v in self._shaped.items() if k[0] not in names}

    def uniform(self, name: str, value: float) -> bool:
        """True if every configuration has hyperparameter `name` == value (its term is a no-op);
        asked every step, so answered once (until configurations leave)."""
        key = ("uniform", name, value)
        if key not in self._shaped:
            self._shaped[key] = bool((self.hyper[name] == value).all())
        return self._shaped[key]

    def keep(self, positions: list[int], params: list) -> None:
        """Only the configurations at `positions` go on, with these parameters."""
        idx = torch.tensor(positions)
        self.params = _targets(params)
        self.hyper = {k: v[idx] for k, v in self.hyper.items()}
        self.state = [{k: v[idx] for k, v in s.items()} for s in self.state]
        self._shaped = {}

    def step(self, grads: list) -> None:
        self.steps += 1
        for i, (p, g) in enumerate(zip(self.params, grads)):
            self.update(i, p, g)

    def update(self, i: int, p, g) -> None:
        raise NotImplementedError

    def decay(self, i: int, p, g):
        """L2 weight decay folded into the gradient, as torch.optim does (g + wd·p)."""
        return g if self.uniform("weight_decay", 0.0) else g + self.h("weight_decay", i) * p


def _targets(params: list) -> list:
    """What an update writes into: autograd's leaves through aliases outside the graph (the
    same memory and version counter, no `torch.no_grad()` to enter every step)."""
    return [p.detach() if getattr(p, "requires_grad", False) else p for p in params]


class GD(Batched):
    """The hand-written update p ← p − lr·∇p, in place (torch tensors or NumPy arrays)."""

    on_numpy = True

    def step(self, grads: list) -> None:
        self.steps += 1
        if isinstance(self.params[0], torch.Tensor):  # p − lr·g for every parameter in one op
            torch._foreach_addcmul_(self.params, self.each("lr"), grads, value=-1)
        else:
            for i, (p, g) in enumerate(zip(self.params, grads)):
                p -= self.h("lr", i) * g


class SGD(Batched):
    """torch.optim.SGD: momentum (with dampening, nesterov) and weight decay per configuration."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        self.hyper["one_minus_dampening"] = 1.0 - self.hyper["dampening"]
        # torch keeps no buffer where momentum is 0: those configurations step along g itself
        self.some_momentum = not self.uniform("momentum", 0.0)
        self.all_momentum = bool((self.hyper["momentum"] != 0).all())

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        if self.some_momentum:
            s = self.state[i]
            if "buf" not in s:
                s["buf"] = g.detach().clone()
            else:
                s["buf"].mul_(self.h("momentum", i)).add_(self.h("one_minus_dampening", i) * g)
            step = s["buf"]
            if not self.uniform("nesterov", 0.0):
                step = torch.where(self.h("nesterov", i) != 0, g + self.h("momentum", i) * step, step)
            g = step if self.all_momentum else torch.where(self.h("momentum", i) != 0, step, g)
        p.sub_(self.h("lr", i) * g)


class Adam(Batched):
    """torch.optim.Adam; AdamW is the same with the decay applied to the parameters (decoupled)."""

    decoupled = False

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        self.hyper["beta1"] = torch.tensor([c.betas[0] for c in configs], dtype=torch.float64)
        self.hyper["beta2"] = torch.tensor([c.betas[1] for c in configs], dtype=torch.float64)
        self.hyper["one_minus_beta1"] = 1.0 - self.hyper["beta1"]
        self.hyper["one_minus_beta2"] = 1.0 - self.hyper["beta2"]
        self.hyper["decay_factor"] = 1.0 - self.hyper["lr"] * self.hyper["weight_decay"]  # AdamW's

    def step(self, grads: list) -> None:
        t = self.steps + 1  # bias corrections, once per step for every parameter (float64, as torch's Python floats)
        self.hyper["step_size"] = self.hyper["lr"] / (1 - self.hyper["beta1"] ** t)
        self.hyper["bc2_sqrt"] = (1 - self.hyper["beta2"] ** t).sqrt()
        self.refresh("step_size", "bc2_sqrt")
        super().step(grads)

    def update(self, i, p, g):
        if self.decoupled:
            if not self.uniform("weight_decay", 0.0):
                p.mul_(self.h("decay_factor", i))
        else:
            g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            if not self.uniform("amsgrad", 0.0):
                s["max_exp_avg_sq"] = torch.zeros_like(p)
        s["exp_avg"].lerp_(g, self.h("one_minus_beta1", i))
        s["exp_avg_sq"].mul_(self.h("beta2", i)).add_(self.h("one_minus_beta2", i) * g * g)
        second = s["exp_avg_sq"]
        if "max_exp_avg_sq" in s:
            torch.maximum(s["max_exp_avg_sq"], second, out=s["max_exp_avg_sq"])
            second = torch.where(self.h("amsgrad", i) != 0, s["max_exp_avg_sq"], second)
        denom = (second.sqrt() / self.h("bc2_sqrt", i)).add_(self.h("eps", i))
        p.sub_(self.h("step_size", i) * s["exp_avg"] / denom)


class AdamW(Adam):
    decoupled = True


class RMSprop(Batched):
    """torch.optim.RMSprop, centered and with momentum per configuration."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        self.hyper["one_minus_alpha"] = 1.0 - self.hyper["alpha"]

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["square_avg"] = torch.zeros_like(p)
            if not self.uniform("centered", 0.0):
                s["grad_avg"] = torch.zeros_like(p)
            if not self.uniform("momentum", 0.0):
                s["buf"] = torch.zeros_like(p)
        s["square_avg"].mul_(self.h("alpha", i)).add_(self.h("one_minus_alpha", i) * g * g)
        if "grad_avg" in s:
            s["grad_avg"].lerp_(g, self.h("one_minus_alpha", i))
            centered = s["square_avg"] - s["grad_avg"] * s["grad_avg"]
            avg = torch.where(self.h("centered", i) != 0, centered, s["square_avg"]).sqrt()
        else:
            avg = s["square_avg"].sqrt()
        avg = avg.add_(self.h("eps", i))
        lr = self.h("lr", i)
        if "buf" in s:
            s["buf"].mul_(self.h("momentum", i)).add_(g / avg)
            p.sub_(torch.where(self.h("momentum", i) > 0, lr * s["buf"], lr * g / avg))
        else:
            p.sub_(lr * g / avg)


class Adagrad(Batched):
    """torch.optim.Adagrad: a learning rate decayed per step, an accumulator per configuration."""

    def step(self, grads: list) -> None:
        self.hyper["clr"] = self.hyper["lr"] / (1 + self.steps * self.hyper["lr_decay"])
        self.refresh("clr")
        super().step(grads)

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["sum"] = torch.zeros_like(p) + self.h("initial_accumulator_value", i)
        s["sum"].add_(g * g)
        std = s["sum"].sqrt().add_(self.h("eps", i))
        p.sub_(self.h("clr", i) * g / std)


class LBFGS:
    """torch.optim.LBFGS on a batch of one configuration: a step evaluates the loss several times."""

    needs_closure = True
    on_numpy = False

    def __init__(self, params: list, configs: list):
        if len(configs) != 1:
            raise ValueError("L-BFGS runs one configuration at a time")
        kwargs = {f.name: getattr(configs[0], f.name) for f in dataclasses.fields(configs[0]) if f.name != "name"}
        self.params = params
        self.opt = torch.optim.LBFGS(params, **kwargs)

    def set_grads(self, grads) -> None:
        for p, g in zip(self.params, grads):
            if p.grad is not g:
                p.grad = g

    def step_closure(self, closure) -> None:
        self.opt.step(closure)


# Option name (the config's `name`) -> the optimizer class; it is built for a list of parameters
# (a leading configuration axis each) and one optimizer config per configuration.
OPTIMIZERS = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad, "lbfgs": LBFGS}


TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
         "adagrad": torch.optim.Adagrad, "lbfgs": torch.optim.LBFGS}  # whose equations each follows


def build(configs: list, params: list):
    """The optimizer the `optimizer` configs of a batch name (one kind for the whole batch)."""
    for c in configs:
        check(c)
    return OPTIMIZERS[configs[0].name](params, configs)


def check(cfg) -> None:
    """What torch.optim refuses is refused here, by torch.optim itself, naming the field."""
    cls = TORCH.get(cfg.name)
    if cls is None:
        return
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    try:
        _unparametrised(cls)([torch.zeros(1)], **kwargs)
    except ValueError as e:  # "Invalid epsilon value: -1.0"
        m = re.match(r"Invalid (\w+)", str(e))
        word = m.group(1) if m else ""
        field = word if word in kwargs else {"epsilon": "eps", "beta": "betas", "learning": "lr"}.get(word)
        key = f"optimizer.{field}" if field else "optimizer"
        raise ConfigError(key, kwargs.get(field, cfg.name), f"torch.optim.{cls.__name__} refuses it: {e}") from None


@functools.cache
def _unparametrised(cls: type) -> type:
    """`cls` whose constructor checks its hyperparameters and its groups as given, and no more:
    torch.optim's add_param_group imports torch._dynamo on first use (about 1 s), and a check
    needs none of what it adds."""
    def add_param_group(self, group: dict) -> None:  # the group as torch.optim completes it, no state built
        self.param_groups.append({**self.defaults, **group})

    return type(cls.__name__, (cls,), {"add_param_group": add_param_group})
