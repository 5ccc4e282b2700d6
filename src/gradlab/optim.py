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

from gradlab.devices import index
from gradlab.options import ConfigError


class Batched:
    """What every batched optimizer shares: hyperparameters per configuration (float64 (B,)
    tensors), cast and shaped once for each parameter; state per parameter, sliced by `keep`."""

    needs_closure = False
    on_numpy = False  # torch tensors only

    def __init__(self, params: list, configs: list):
        self.params = _targets(params)
        # pairs (betas, etas, step_sizes) are split by the classes that take them
        self.hyper = {f.name: torch.tensor([float(getattr(c, f.name)) for c in configs], dtype=torch.float64)
                      for f in dataclasses.fields(configs[0])
                      if f.name != "name" and not isinstance(getattr(configs[0], f.name), (tuple, list))}
        self.state: list[dict] = [{} for _ in params]
        self.steps = 0
        self._shaped: dict = {}
        self.derive()

    # Hyperparameters computed from lr once, not every step: derive() makes them again when a
    # schedule changes lr, so that they follow it as torch.optim's, computed every step, do.
    from_lr: tuple[str, ...] = ()

    def derive(self) -> None:
        pass

    def set_lr(self, lr: torch.Tensor) -> None:
        """Each configuration's learning rate from the next step on (a schedule's), float64 (B,)."""
        self.hyper["lr"] = lr
        self.derive()
        self.refresh("lr", *self.from_lr)

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
        idx = index(positions)
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


def _pair(configs: list, field: str, i: int) -> torch.Tensor:
    """Element i of a pair of hyperparameters (betas, etas, step_sizes), per configuration."""
    return torch.tensor([float(getattr(c, field)[i]) for c in configs], dtype=torch.float64)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim keeps its per-parameter scalars in (steps, ASGD's eta, NAdam's mu
    product): float32 unless the default dtype is float64. Their rounding is part of the update."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


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

    from_lr = ("decay_factor",)

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        _betas(self.hyper, configs)

    def derive(self) -> None:
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


def _betas(hyper: dict, configs: list) -> None:
    hyper["beta1"], hyper["beta2"] = _pair(configs, "betas", 0), _pair(configs, "betas", 1)
    hyper["one_minus_beta1"] = 1.0 - hyper["beta1"]
    hyper["one_minus_beta2"] = 1.0 - hyper["beta2"]


class ASGD(Batched):
    """torch.optim.ASGD. Its step size eta is worked out at the end of each step from that step's
    lr (the first from the lr at the first step) and kept in torch.optim's scalar dtype, as torch
    keeps it. The running average `ax` torch keeps beside the parameters enters no update: gradlab
    trains and records the parameters, as torch.optim.ASGD does."""

    def step(self, grads: list) -> None:
        h = self.hyper
        if self.steps == 0:
            h["eta"] = h["lr"].to(_scalar_dtype()).double()
        h["shrink"] = 1 - h["lambd"] * h["eta"]
        self.refresh("eta", "shrink")
        super().step(grads)
        h["eta"] = (h["lr"] / ((1 + h["lambd"] * h["lr"] * self.steps) ** h["alpha"])).to(_scalar_dtype()).double()

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        p.mul_(self.h("shrink", i))
        p.sub_(self.h("eta", i) * g)


class Adadelta(Batched):
    """torch.optim.Adadelta."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        self.hyper["one_minus_rho"] = 1.0 - self.hyper["rho"]

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["square_avg"], s["acc_delta"] = torch.zeros_like(p), torch.zeros_like(p)
        rho, one_minus_rho, eps = self.h("rho", i), self.h("one_minus_rho", i), self.h("eps", i)
        s["square_avg"].mul_(rho).add_(one_minus_rho * g * g)
        std = (s["square_avg"] + eps).sqrt_()
        delta = (s["acc_delta"] + eps).sqrt_().div_(std).mul_(g)
        s["acc_delta"].mul_(rho).add_(one_minus_rho * delta * delta)
        p.sub_(self.h("lr", i) * delta)


class Adamax(Batched):
    """torch.optim.Adamax: Adam with the infinity norm."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        _betas(self.hyper, configs)

    def step(self, grads: list) -> None:
        self.hyper["clr"] = self.hyper["lr"] / (1 - self.hyper["beta1"] ** (self.steps + 1))
        self.refresh("clr")
        super().step(grads)

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["exp_avg"], s["exp_inf"] = torch.zeros_like(p), torch.zeros_like(p)
        s["exp_avg"].lerp_(g, self.h("one_minus_beta1", i))
        torch.maximum(s["exp_inf"].mul_(self.h("beta2", i)), g.abs().add_(self.h("eps", i)), out=s["exp_inf"])
        p.sub_(self.h("clr", i) * (s["exp_avg"] / s["exp_inf"]))


class _DecoupledDecay(Batched):
    """NAdam's and RAdam's weight decay, a flag per configuration: decoupled (the parameters
    shrink by 1 − lr·weight_decay, as AdamW's) or L2 (added to the gradient)."""

    from_lr = ("shrink",)

    def derive(self) -> None:
        h = self.hyper
        decoupled = h["decoupled_weight_decay"] != 0
        h["shrink"] = torch.where(decoupled, 1.0 - h["lr"] * h["weight_decay"], 1.0)
        h["l2"] = torch.where(decoupled, 0.0, h["weight_decay"])

    def decay(self, i: int, p, g):
        if self.uniform("weight_decay", 0.0):
            return g
        if not self.uniform("decoupled_weight_decay", 0.0):
            p.mul_(self.h("shrink", i))
        return g if self.uniform("decoupled_weight_decay", 1.0) else g + self.h("l2", i) * p


class NAdam(_DecoupledDecay):
    """torch.optim.NAdam. The running product of the momentum coefficients is kept in
    torch.optim's scalar dtype, as torch keeps it (float32 rounding included)."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        _betas(self.hyper, configs)
        self.mu_product = torch.ones(len(configs), dtype=_scalar_dtype())

    def step(self, grads: list) -> None:
        h, t = self.hyper, self.steps + 1
        mu = h["beta1"] * (1.0 - 0.5 * (0.96 ** (t * h["momentum_decay"])))
        mu_next = h["beta1"] * (1.0 - 0.5 * (0.96 ** ((t + 1) * h["momentum_decay"])))
        self.mu_product = self.mu_product * mu.to(self.mu_product.dtype)  # torch: a scalar-dtype tensor *= a float
        product = self.mu_product.double()
        h["bc2"] = 1 - h["beta2"] ** t
        h["grad_coef"] = -h["lr"] * (1.0 - mu) / (1.0 - product)
        h["avg_coef"] = (-h["lr"] * mu_next) / (1.0 - product * mu_next)
        self.refresh("bc2", "grad_coef", "avg_coef")
        super().step(grads)

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        s["exp_avg"].lerp_(g, self.h("one_minus_beta1", i))
        s["exp_avg_sq"].mul_(self.h("beta2", i)).add_(self.h("one_minus_beta2", i) * g * g)
        denom = s["exp_avg_sq"].div(self.h("bc2", i)).sqrt_().add_(self.h("eps", i))
        p.add_(self.h("grad_coef", i) * (g / denom))
        p.add_(self.h("avg_coef", i) * (s["exp_avg"] / denom))

    def keep(self, positions: list[int], params: list) -> None:
        super().keep(positions, params)
        self.mu_product = self.mu_product[index(positions)]


class RAdam(_DecoupledDecay):
    """torch.optim.RAdam: Adam's step rectified where the variance of its adaptive lr is tractable
    (rho_t > 5), plain momentum before; which of the two, per configuration."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        _betas(self.hyper, configs)

    def step(self, grads: list) -> None:
        h, t = self.hyper, self.steps + 1
        h["bc1"] = 1 - h["beta1"] ** t
        bc2 = 1 - h["beta2"] ** t
        h["bc2_sqrt"] = bc2 ** 0.5
        rho_inf = 2 / (1 - h["beta2"]) - 1
        rho_t = rho_inf - 2 * t * (h["beta2"] ** t) / bc2
        h["rectified"] = (rho_t > 5.0).double()
        h["rect"] = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        self.refresh("bc1", "bc2_sqrt", "rectified", "rect")
        self.any_rectified = bool(h["rectified"].any())
        self.all_rectified = bool(h["rectified"].all())
        super().step(grads)

    def update(self, i, p, g):
        g = self.decay(i, p, g)
        s = self.state[i]
        if not s:
            s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        s["exp_avg"].lerp_(g, self.h("one_minus_beta1", i))
        s["exp_avg_sq"].mul_(self.h("beta2", i)).add_(self.h("one_minus_beta2", i) * g * g)
        step = s["exp_avg"] / self.h("bc1", i) * self.h("lr", i)
        if self.any_rectified:
            adaptive = self.h("bc2_sqrt", i) / s["exp_avg_sq"].sqrt().add_(self.h("eps", i))
            rectified = step * adaptive * self.h("rect", i)
            step = rectified if self.all_rectified else torch.where(self.h("rectified", i) != 0, rectified, step)
        p.sub_(step)


class Rprop(Batched):
    """torch.optim.Rprop: a step size per element, grown by etaplus while the gradient keeps its
    sign and shrunk by etaminus when it flips. lr is each element's first step size, read at the
    first step only (as torch.optim reads it): a schedule changes nothing after that."""

    def __init__(self, params: list, configs: list):
        super().__init__(params, configs)
        self.hyper["etaminus"], self.hyper["etaplus"] = _pair(configs, "etas", 0), _pair(configs, "etas", 1)
        self.hyper["step_min"], self.hyper["step_max"] = _pair(configs, "step_sizes", 0), _pair(configs, "step_sizes", 1)

    def update(self, i, p, g):
        s = self.state[i]
        if not s:
            s["prev"] = torch.zeros_like(p)
            s["step_size"] = torch.zeros_like(g) + self.h("lr", i)
        sign = (g * s["prev"]).sign()
        factor = torch.where(sign > 0, self.h("etaplus", i), torch.where(sign < 0, self.h("etaminus", i), 1.0))
        torch.clamp(s["step_size"].mul_(factor), self.h("step_min", i), self.h("step_max", i), out=s["step_size"])
        g = torch.where(sign < 0, 0.0, g)  # a flipped sign: no step, and no flip seen at the next
        p.sub_(g.sign() * s["step_size"])
        s["prev"].copy_(g)


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

    def set_lr(self, lr: torch.Tensor) -> None:
        """What a torch.optim.lr_scheduler does to L-BFGS: its group's lr."""
        self.opt.param_groups[0]["lr"] = float(lr[0])


# Option name (the config's `name`) -> the optimizer class; it is built for a list of parameters
# (a leading configuration axis each) and one optimizer config per configuration.
OPTIMIZERS = {"gd": GD, "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad, "asgd": ASGD,
              "adadelta": Adadelta, "adamax": Adamax, "nadam": NAdam, "radam": RAdam, "rprop": Rprop, "lbfgs": LBFGS}


TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop,
         "adagrad": torch.optim.Adagrad, "asgd": torch.optim.ASGD, "adadelta": torch.optim.Adadelta,
         "adamax": torch.optim.Adamax, "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam, "rprop": torch.optim.Rprop,
         "lbfgs": torch.optim.LBFGS}  # whose equations each follows


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
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}  # betas, etas, step_sizes
    try:
        _unparametrised(cls)([torch.zeros(1)], **kwargs)
    except ValueError as e:  # "Invalid epsilon value: -1.0"
        m = re.match(r"Invalid (\w+)", str(e))
        word = m.group(1) if m else ""
        field = word if word in kwargs else {"epsilon": "eps", "beta": "betas", "eta": "etas", "learning": "lr"}.get(word)
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
