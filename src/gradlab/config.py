"""Config schemas: dataclasses registered in Hydra's ConfigStore, and the checks types can't express.

Each option of a group has its own schema (e.g. `optimizer: adam` is an `AdamConfig`), so a key
that does not belong to the chosen option, or a value of the wrong type, fails at composition with
Hydra's own message. `validate` then checks ranges and pairings before anything runs, and raises
`ConfigError` naming the field, the value and what is allowed.

No `from __future__ import annotations` here: OmegaConf reads these annotations at runtime.
"""

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from omegaconf import MISSING, OmegaConf

from gradlab.options import (  # noqa: F401 - re-exported
    Activation, AnnealStrategy, ConfigError, DataError, DType, Init, Loss, Objective, Plots, Scaling, ThresholdMode,
)


# ---------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    name: str = MISSING
    scaling: Scaling = Scaling.none
    scale_factor: float = 1.0  # used by scaling=factor: x -> scale_factor * x
    val_fraction: Optional[float] = None  # null: no validation split
    split_seed: int = 0


@dataclass
class LineDataConfig(DataConfig):
    """y = slope·x + intercept + noise·ε; how x and ε are drawn is the option's own."""

    seed: int = 0
    n_samples: int = 100
    slope: float = 3.0
    intercept: float = 10.0
    noise: float = 1.0
    x_low: float = -2.0
    x_high: float = 12.0


@dataclass
class StreamDataConfig(DataConfig):
    """A fresh batch every step from the run's generator (train.seed): x = x_std·N(0,1)."""

    slope: float = 2.0
    intercept: float = 3.0
    noise: float = 3.0
    x_std: float = 20.0


@dataclass
class TeacherDataConfig(DataConfig):
    seed: int = 0
    n_samples: int = 200
    n_inputs: int = 5
    hidden: int = 3
    noise: float = 0.02


@dataclass
class CsvDataConfig(DataConfig):
    path: Optional[str] = None
    inputs: Optional[List[str]] = None  # null: every column but the target
    target: Optional[str] = None  # null: the last column


# --------------------------------------------------------------------------- model
@dataclass
class ModelConfig:
    name: str = MISSING
    init: Init = Init.normal
    init_scale: float = 1.0
    # Fixed starting values by parameter name, applied after the random init: {w: 1.0, b: 0.0}.
    # Each model's YAML lists its parameters with null (not fixed), so `model.start.w=1` works.
    # Any, not Dict: model=objective's start is a point, a list (a subclass cannot narrow the
    # type of a field of the node Hydra merges it into); Model.init refuses anything else.
    start: Any = field(default_factory=dict)


@dataclass
class MLPConfig(ModelConfig):
    hidden: int = 3
    activation: Activation = Activation.sigmoid
    output_activation: Activation = Activation.sigmoid


@dataclass
class RosenbrockConfig(ModelConfig):
    a: float = 1.0
    b: float = 100.0


@dataclass
class ModuleConfig(ModelConfig):
    """A user's nn.Module: `target` names its class, or a function that returns one, as
    package.module:Name or path/to/file.py:Name; `args` are its keyword arguments. `start` fixes
    parameters by their named_parameters() names ({fc.bias: 0}); the rest start as the module
    initialises itself under torch.manual_seed(train.seed)."""

    target: Optional[str] = None
    args: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig(ModelConfig):
    """A user's function f(theta) -> scalar of a 1-D tensor, named as ModuleConfig's target is;
    `start` is θ's starting point (required), `optimum` the known minimiser (it gives
    excess_loss and at_optimum), `names` θ's entries' names (null: x, y, z or theta.0, …)."""

    target: Optional[str] = None
    start: Any = None  # a list of numbers (checked where the model is built)
    optimum: Optional[List[float]] = None
    names: Optional[List[str]] = None


# ---------------------------------------------------------------------------- grad
@dataclass
class GradConfig:
    name: str = MISSING


@dataclass
class FiniteDifferenceConfig(GradConfig):
    eps: Optional[float] = None  # null: cube root of the dtype's machine epsilon


# ----------------------------------------------------------------------- optimizer
@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = 0.01


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    lr: float = 0.001
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    weight_decay: float = 0.01


@dataclass
class RMSpropConfig(OptimizerConfig):
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False


@dataclass
class AdagradConfig(OptimizerConfig):
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10


@dataclass
class LBFGSConfig(OptimizerConfig):
    lr: float = 1.0
    max_iter: int = 20
    max_eval: Optional[int] = None
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    history_size: int = 100
    line_search_fn: Optional[str] = None  # null or strong_wolfe


@dataclass
class ASGDConfig(OptimizerConfig):
    lambd: float = 1e-4
    alpha: float = 0.75
    t0: float = 1e6
    weight_decay: float = 0.0


@dataclass
class AdadeltaConfig(OptimizerConfig):
    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0


@dataclass
class AdamaxConfig(OptimizerConfig):
    lr: float = 0.002
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class NAdamConfig(OptimizerConfig):
    lr: float = 0.002
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum_decay: float = 4e-3
    decoupled_weight_decay: bool = False


@dataclass
class RAdamConfig(OptimizerConfig):
    lr: float = 0.001
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled_weight_decay: bool = False


@dataclass
class RpropConfig(OptimizerConfig):
    etas: Tuple[float, float] = (0.5, 1.2)  # (etaminus, etaplus)
    step_sizes: Tuple[float, float] = (1e-6, 50.0)  # (min, max)


# ------------------------------------------------------------------------ schedule
# torch.optim.lr_scheduler's constructor arguments and defaults. Where torch has no default (a
# StepLR's step_size, OneCycleLR's max_lr, ...) the key is null and the schedule refuses to run
# without it; cosine's T_max null means train.epochs.
@dataclass
class ScheduleConfig:
    name: str = MISSING  # constant: the optimizer's lr throughout


@dataclass
class StepScheduleConfig(ScheduleConfig):  # StepLR
    step_size: Optional[int] = None
    gamma: float = 0.1


@dataclass
class MultiStepScheduleConfig(ScheduleConfig):  # MultiStepLR
    milestones: Optional[List[int]] = None
    gamma: float = 0.1


@dataclass
class ExponentialScheduleConfig(ScheduleConfig):  # ExponentialLR
    gamma: Optional[float] = None


@dataclass
class CosineScheduleConfig(ScheduleConfig):  # CosineAnnealingLR
    T_max: Optional[int] = None  # null: train.epochs
    eta_min: float = 0.0


@dataclass
class CosineRestartsScheduleConfig(ScheduleConfig):  # CosineAnnealingWarmRestarts
    T_0: Optional[int] = None
    T_mult: int = 1
    eta_min: float = 0.0


@dataclass
class LinearScheduleConfig(ScheduleConfig):  # LinearLR
    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5


@dataclass
class WarmupCosineScheduleConfig(ScheduleConfig):
    """SequentialLR of LinearLR(start_factor, total_iters=warmup_epochs) and
    CosineAnnealingLR(T_max=train.epochs - warmup_epochs, eta_min), milestones [warmup_epochs]."""

    warmup_epochs: int = 5
    start_factor: float = 1.0 / 3
    eta_min: float = 0.0


@dataclass
class OneCycleScheduleConfig(ScheduleConfig):  # OneCycleLR, total_steps = train.epochs, lr only
    max_lr: Optional[float] = None
    pct_start: float = 0.3
    anneal_strategy: AnnealStrategy = AnnealStrategy.cos
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False


@dataclass
class PlateauScheduleConfig(ScheduleConfig):  # ReduceLROnPlateau, mode min
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: ThresholdMode = ThresholdMode.rel
    cooldown: int = 0
    min_lr: float = 0.0
    eps: float = 1e-8


# ---------------------------------------------------------------- device, train, tracking
@dataclass
class DeviceConfig:
    name: str = MISSING


@dataclass
class TrainConfig:
    epochs: int = 100  # steps, for streamed data
    batch_size: Optional[int] = None  # null: full batch; 1: one update per sample
    shuffle: bool = False
    loss: Loss = Loss.mse
    huber_delta: float = 1.0  # train.loss=huber: where the loss turns from squared to linear
    loss_target: Optional[str] = None  # train.loss=module: your loss(pred, target) -> scalar, as model.target names code
    dtype: DType = DType.float32
    seed: int = 0  # parameter init, shuffling and streamed batches
    log_every: int = 1  # record (and evaluate validation) every k epochs; first and last always
    stop_loss: Optional[float] = None  # stop (reached_stop_loss) once an epoch's training loss is <= this
    progress: Optional[bool] = None  # null: progress lines only when stderr is a terminal


@dataclass
class TrackingConfig:
    experiment: Optional[str] = None  # null: the experiment recipe's name, else "default"
    run_name: Optional[str] = None  # null: made from the choices
    max_points: int = 300  # per step metric sent to MLflow (about what the UI's charts draw); history.csv keeps every epoch
    # Which runs draw their figures (plots/*.png); every run keeps history.csv, from which
    # `gradlab plots RUN_ID` draws them later. auto: a single run, and every child of a sweep of at
    # most plots_max_children jobs; a larger sweep's best runs, at its end (multirun/figures.py).
    plots: Plots = Plots.auto
    plots_max_children: int = 100
    skip_finished: bool = False  # skip a job whose identical config already FINISHED
    # What "best" means in a sweep's ranking, its best run and a search (gradlab.ranking); auto:
    # at the optimum first and the fewest epochs there where an optimum is known, else val_loss.
    objective: Objective = Objective.auto
    threshold: Optional[float] = None  # a training loss: epochs_to_threshold is the first epoch at or below it


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    grad: GradConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    device: DeviceConfig = MISSING
    schedule: ScheduleConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Option name -> schema. The YAML files in conf/<group>/ must name exactly these (a test checks).
SCHEMAS: Dict[str, Dict[str, type]] = {
    "data": {
        "thermometer": DataConfig,
        "doubling": DataConfig,
        "noisy_line": StreamDataConfig,
        "line": LineDataConfig,
        "bias_column": LineDataConfig,
        "teacher": TeacherDataConfig,
        "csv": CsvDataConfig,
        "none": DataConfig,
    },
    "model": {
        "linear": ModelConfig,
        "linear_nobias": ModelConfig,
        "quadratic": ModelConfig,
        "parameter_module": ModelConfig,
        "nn_linear": ModelConfig,
        "mlp": MLPConfig,
        "rosenbrock": RosenbrockConfig,
        "bowl": ModelConfig,
        "module": ModuleConfig,
        "objective": ObjectiveConfig,
    },
    "grad": {
        "analytic": GradConfig,
        "autograd": GradConfig,
        "finite_difference": FiniteDifferenceConfig,
    },
    "optimizer": {
        "gd": OptimizerConfig,
        "sgd": SGDConfig,
        "sgd_momentum": SGDConfig,  # name: sgd, momentum 0.9
        "adam": AdamConfig,
        "adamw": AdamWConfig,
        "rmsprop": RMSpropConfig,
        "adagrad": AdagradConfig,
        "asgd": ASGDConfig,
        "adadelta": AdadeltaConfig,
        "adamax": AdamaxConfig,
        "nadam": NAdamConfig,
        "radam": RAdamConfig,
        "rprop": RpropConfig,
        "lbfgs": LBFGSConfig,
    },
    "device": {name: DeviceConfig for name in ("cpu", "cuda", "mps", "auto", "numpy")},
    "schedule": {
        "constant": ScheduleConfig,
        "step": StepScheduleConfig,
        "multistep": MultiStepScheduleConfig,
        "exponential": ExponentialScheduleConfig,
        "cosine": CosineScheduleConfig,
        "cosine_restarts": CosineRestartsScheduleConfig,
        "linear": LinearScheduleConfig,
        "warmup_cosine": WarmupCosineScheduleConfig,
        "onecycle": OneCycleScheduleConfig,
        "plateau": PlateauScheduleConfig,
    },
}


# Options that are another option's builder with other defaults: their `name` is that builder's.
PRESETS: Dict[str, Dict[str, str]] = {"optimizer": {"sgd_momentum": "sgd"}}


def builders(group: str) -> List[str]:
    """The names a `<group>.name` may hold: the keys of the group's registry (a test holds them equal)."""
    return sorted(set(SCHEMAS[group]) - set(PRESETS.get(group, {})))


def register_configs() -> None:
    """Store the schemas where the YAML files find them: `defaults: [/schema/<group>/<option>@_here_]`
    (a group of their own, so that Hydra's lists of a group's options hold only real options)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="gradlab_schema", node=Config)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            cs.store(group=f"schema/{group}", name=option, node=schema)


# --------------------------------------------------------------------- typed configs
def _unknown_keys(node, prefix: str = "") -> None:
    """Hydra's `+key=value` adds keys even to a schema; `to_object` would then drop them silently."""
    from omegaconf import DictConfig, OmegaConf

    schema = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(schema):
        known = {f.name for f in dataclasses.fields(schema)} | ({"hydra"} if not prefix else set())
        for key in node.keys():
            if key not in known:
                option = f" of {prefix.rstrip('.')}={node.name}" if "name" in known and prefix else ""
                raise ConfigError(f"{prefix}{key}", node[key], f"not a key{option}; the keys are {sorted(known)}")
    for key in node.keys():
        child = node._get_node(key)
        if key == "hydra" and not prefix:  # Hydra's own node of a composed config: not gradlab's
            continue
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _unknown_keys(child, f"{prefix}{key}.")


def to_typed(cfg) -> "Config":
    """A composed DictConfig as plain dataclasses, its `hydra` node (if any) left out; ConfigError
    if it can't be. It only reads `cfg`: a sweep's jobs are checked without copying their configs
    (the hydra node is most of a composed config; copying it was most of what a job's check cost)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _unknown_keys(cfg)
    try:
        return Config(**{k: OmegaConf.to_object(cfg[k]) for k in cfg if k != "hydra"})
    except OmegaConfBaseException as e:
        raise ConfigError(getattr(e, "full_key", None) or "config", getattr(e, "value", None), str(e).splitlines()[0]) from None


# ------------------------------------------------------------------------ validation
def _finite_positive(key: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "must be a finite number > 0")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}")


SEED_RANGE = (-2**63, 2**63 - 1)  # torch.Generator.manual_seed's, as a signed 64-bit integer
MAX_EPOCHS = 2**53  # epochs and steps are recorded as float64 metrics, exact up to 2^53


def _seed(key: str, value: int) -> None:
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise ConfigError(key, value, "must be an integer between -2^63 and 2^63 - 1 (a 64-bit seed)")


def validate(cfg: Config) -> None:
    """Range and pairing checks that the schema types cannot express; raises ConfigError. What
    depends on the objects (a model without data, a device that cannot run a method) is checked
    where they are built (training.setup)."""
    for group in SCHEMAS:
        _validate_name(group, getattr(cfg, group))
    _validate_train(cfg.train, cfg.tracking)
    _validate_optimizer(cfg.optimizer)
    _validate_schedule(cfg.schedule, cfg.train)
    _validate_model(cfg.model, cfg.grad, cfg.train)
    _validate_data(cfg.data, cfg.train)


def _validate_name(group: str, node) -> None:
    """`<group>.name=X` picks a builder as `<group>=X` picks an option: it must name one, and one
    whose keys this option's schema has (model.name=mlp on model=linear has no hidden size)."""
    names = builders(group)
    if node.name not in names:
        hint = "; another GPU than the first: CUDA_VISIBLE_DEVICES=N with device=cuda" if group == "device" else ""
        raise ConfigError(f"{group}.name", node.name, f"no such {group}; the options are {', '.join(names)} "
                          f"(choose one with {group}=NAME){hint}")
    schema = SCHEMAS[group][node.name]
    if not isinstance(node, schema):
        raise ConfigError(f"{group}.name", node.name, f"{group}={node.name} has keys ({schema.__name__}) this "
                          f"{group}'s ({type(node).__name__}) lacks; choose it with {group}={node.name}")


MAX_EXPERIMENT_NAME = 500  # mlflow.utils.validation's limit on an experiment's name


def _validate_train(t: TrainConfig, tracking: TrackingConfig) -> None:
    _at_least("train.epochs", t.epochs, 1)
    if t.epochs > MAX_EPOCHS:
        raise ConfigError("train.epochs", t.epochs, "must be at most 2^53 = 9007199254740992 (a run's epochs are "
                          "recorded as metrics, which hold whole numbers exactly up to there)")
    _seed("train.seed", t.seed)
    _at_least("train.log_every", t.log_every, 1)
    _at_least("tracking.max_points", tracking.max_points, 2)
    _at_least("tracking.plots_max_children", tracking.plots_max_children, 0)
    if tracking.experiment is not None and len(tracking.experiment) > MAX_EXPERIMENT_NAME:
        raise ConfigError("tracking.experiment", tracking.experiment[:40] + "…",
                          f"must be at most {MAX_EXPERIMENT_NAME} characters (MLflow's limit); "
                          f"this one has {len(tracking.experiment)}")
    if t.batch_size is not None:
        _at_least("train.batch_size", t.batch_size, 1)
    if tracking.threshold is not None and not math.isfinite(tracking.threshold):
        raise ConfigError("tracking.threshold", tracking.threshold, "must be a finite training loss, or null")
    if t.stop_loss is not None and not math.isfinite(t.stop_loss):
        raise ConfigError("train.stop_loss", t.stop_loss, "must be a finite number, or null")


def _validate_optimizer(o: OptimizerConfig) -> None:
    _finite_positive("optimizer.lr", o.lr)
    if isinstance(o, (SGDConfig, RMSpropConfig)) and o.momentum < 0:
        raise ConfigError("optimizer.momentum", o.momentum, "must be >= 0")
    if isinstance(o, SGDConfig) and not 0.0 <= o.dampening <= 1.0:
        raise ConfigError("optimizer.dampening", o.dampening, "must be in [0, 1] (the share of each gradient left out of the momentum)")
    if isinstance(o, SGDConfig) and o.nesterov and (o.momentum <= 0 or o.dampening != 0):
        raise ConfigError("optimizer.nesterov", True, "needs optimizer.momentum > 0 and optimizer.dampening=0")
    betas = getattr(o, "betas", None)  # Adam, AdamW, Adamax, NAdam, RAdam
    if betas is not None and len(betas) != 2:
        raise ConfigError("optimizer.betas", list(betas), "needs two numbers, [beta1, beta2], e.g. [0.9, 0.999]")
    if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError("optimizer.betas", list(betas), "each beta must be in [0, 1)")
    if isinstance(o, RpropConfig):
        if len(o.etas) != 2:
            raise ConfigError("optimizer.etas", list(o.etas), "needs two numbers, [etaminus, etaplus], e.g. [0.5, 1.2]")
        if len(o.step_sizes) != 2 or not 0.0 <= o.step_sizes[0] <= o.step_sizes[1]:
            raise ConfigError("optimizer.step_sizes", list(o.step_sizes),
                              "needs two numbers [min, max] with 0 <= min <= max, e.g. [1e-6, 50]")
    if isinstance(o, LBFGSConfig):
        _at_least("optimizer.history_size", o.history_size, 1)
        _at_least("optimizer.max_iter", o.max_iter, 1)
        for key in ("history_size", "max_iter", "max_eval"):  # torch keeps them as C integers
            if (getattr(o, key) or 0) > 2**31 - 1:
                raise ConfigError(f"optimizer.{key}", getattr(o, key), "must be at most 2^31 - 1 = 2147483647")
    if isinstance(o, LBFGSConfig) and o.line_search_fn not in (None, "strong_wolfe"):
        raise ConfigError("optimizer.line_search_fn", o.line_search_fn, "must be null or strong_wolfe")


def _validate_schedule(s: ScheduleConfig, t: TrainConfig) -> None:
    """What torch.optim.lr_scheduler refuses, or would divide by zero on, and the values it has no
    default for; all before anything runs."""
    def needs(key: str, value) -> None:
        if value is None:
            raise ConfigError(f"schedule.{key}", None, f"schedule={s.name} needs it (torch has no default for it)")

    if isinstance(s, (StepScheduleConfig, MultiStepScheduleConfig, ExponentialScheduleConfig)):
        needs("gamma", s.gamma)
        _finite_positive("schedule.gamma", s.gamma)
    if isinstance(s, StepScheduleConfig):
        needs("step_size", s.step_size)
        _at_least("schedule.step_size", s.step_size, 1)
    if isinstance(s, MultiStepScheduleConfig):
        needs("milestones", s.milestones)
        m = list(s.milestones)
        if not m or m[0] < 1 or any(b <= a for a, b in zip(m, m[1:])):
            raise ConfigError("schedule.milestones", m, "must be epochs >= 1 in increasing order, e.g. [1000, 2000]")
    if isinstance(s, (CosineScheduleConfig, CosineRestartsScheduleConfig, WarmupCosineScheduleConfig)):
        _at_least_zero("schedule.eta_min", s.eta_min)
    if isinstance(s, CosineScheduleConfig) and s.T_max is not None:
        _at_least("schedule.T_max", s.T_max, 1)
    if isinstance(s, CosineRestartsScheduleConfig):
        needs("T_0", s.T_0)
        _at_least("schedule.T_0", s.T_0, 1)
        _at_least("schedule.T_mult", s.T_mult, 1)
    if isinstance(s, (LinearScheduleConfig, WarmupCosineScheduleConfig)) and not 0.0 < s.start_factor <= 1.0:
        raise ConfigError("schedule.start_factor", s.start_factor, "must be in (0, 1] (the share of the lr the first epoch uses)")
    if isinstance(s, LinearScheduleConfig):
        if not 0.0 <= s.end_factor <= 1.0:
            raise ConfigError("schedule.end_factor", s.end_factor, "must be in [0, 1]")
        _at_least("schedule.total_iters", s.total_iters, 1)
    if isinstance(s, WarmupCosineScheduleConfig) and not 1 <= s.warmup_epochs < t.epochs:
        raise ConfigError("schedule.warmup_epochs", s.warmup_epochs,
                          f"must be at least 1 and less than train.epochs={t.epochs} (the cosine takes the epochs after it)")
    if isinstance(s, OneCycleScheduleConfig):
        needs("max_lr", s.max_lr)
        _finite_positive("schedule.max_lr", s.max_lr)
        if not 0.0 <= s.pct_start <= 1.0:
            raise ConfigError("schedule.pct_start", s.pct_start, "must be in [0, 1] (the share of the epochs raising the lr)")
        if float(s.pct_start * t.epochs) == 1.0:  # torch's first phase would end where it starts: 0/0
            raise ConfigError("schedule.pct_start", s.pct_start, f"leaves a warm-up of one epoch of train.epochs={t.epochs}, "
                              "which torch's OneCycleLR divides by zero on; pick a larger or a smaller one")
        _finite_positive("schedule.div_factor", s.div_factor)
        _finite_positive("schedule.final_div_factor", s.final_div_factor)
    if isinstance(s, PlateauScheduleConfig):
        if not 0.0 < s.factor < 1.0:
            raise ConfigError("schedule.factor", s.factor, "must be in (0, 1) (the lr is multiplied by it on a plateau)")
        _at_least("schedule.patience", s.patience, 0)
        _at_least("schedule.cooldown", s.cooldown, 0)
        for key in ("threshold", "min_lr", "eps"):
            _at_least_zero(f"schedule.{key}", getattr(s, key))


def _at_least_zero(key: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(key, value, "must be a finite number >= 0")


USER_CODE = (ModuleConfig, ObjectiveConfig)  # models whose code is the user's: nothing hand-derived


def _validate_model(m: ModelConfig, grad: GradConfig, t: TrainConfig) -> None:
    if isinstance(m, USER_CODE):
        if not m.target:
            example = "my_net.py:Net" if isinstance(m, ModuleConfig) else "my_functions.py:beale"
            raise ConfigError("model.target", m.target, f"model={m.name} needs your code: model.target={example} "
                              f"(as {'package.module:Name or path/to/file.py:Name'})")
        if grad.name == "analytic":
            raise ConfigError("grad", "analytic", f"model={m.name} is your own code, with no hand-derived gradient: "
                              "use grad=autograd or grad=finite_difference")
    if t.loss is Loss.huber:
        _finite_positive("train.huber_delta", t.huber_delta)
    if t.loss is Loss.module:
        if not t.loss_target:
            raise ConfigError("train.loss_target", t.loss_target, "train.loss=module needs your loss(pred, target) -> "
                              "scalar: train.loss_target=my_losses.py:loss (package.module:Name or path/to/file.py:Name)")
        if grad.name == "analytic":
            raise ConfigError("grad", "analytic", "train.loss=module is your own code, with no hand-derived gradient: "
                              "use grad=autograd or grad=finite_difference")
    elif t.loss_target:
        raise ConfigError("train.loss_target", t.loss_target, f"is read with train.loss=module only (not {t.loss.value})")
    if isinstance(grad, FiniteDifferenceConfig) and grad.eps is not None:
        _finite_positive("grad.eps", grad.eps)
        machine = float(np.finfo(t.dtype.value).eps)
        if grad.eps < machine:
            raise ConfigError("grad.eps", grad.eps, f"must be >= {machine:.3g}, the machine epsilon of "
                              f"train.dtype={t.dtype.value} (a smaller step is lost in rounding); null picks one")
    if isinstance(m, MLPConfig):
        _at_least("model.hidden", m.hidden, 1)
    if m.init is Init.normal:
        _finite_positive("model.init_scale", m.init_scale)


# A generated dataset lives as float64 in a few copies (drawn, scaled, split, on the device).
DATA_COPIES = 4


def memory_bytes() -> int:
    """This machine's memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(key: str, value, values_of, fix: str = "draw fewer samples", copies: int = DATA_COPIES) -> None:
    """Refuse what this machine cannot hold, before any of it is allocated: `values_of(v)` float64
    values (in `copies`) for `key`=v. One line with the bound: the largest `key` that fits."""
    def need(v) -> int:
        return values_of(v) * 8 * copies

    have = memory_bytes()
    if need(value) <= have:
        return
    most = ""
    if isinstance(value, int) and value > 0:  # values_of grows with v: the largest v that fits
        low, high = 0, value
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if need(mid) <= have else (low, mid - 1)
        most = f" ({key} at most about {low:,} here)"
    raise ConfigError(key, value, f"needs about {need(value) / 2**30:,.0f} GiB for its {values_of(value):,} values, "
                      f"more than this machine's {have / 2**30:,.0f} GiB of memory; {fix}{most}")


def _validate_data(d: DataConfig, t: TrainConfig) -> None:
    _seed("data.split_seed", d.split_seed)
    if isinstance(d, (LineDataConfig, TeacherDataConfig)):
        _seed("data.seed", d.seed)
    if d.val_fraction is not None and not (0.0 < d.val_fraction < 1.0):
        raise ConfigError("data.val_fraction", d.val_fraction, "must be in (0, 1), or null for no validation split")
    if d.scaling is Scaling.factor:
        _finite_positive("data.scale_factor", d.scale_factor)
    if isinstance(d, StreamDataConfig):
        _validate_stream(d, t)
    if isinstance(d, LineDataConfig):
        _at_least("data.n_samples", d.n_samples, 1)
        fits_in_memory("data.n_samples", d.n_samples, lambda n: n * 2)
        if not d.x_low < d.x_high:
            raise ConfigError("data.x_high", d.x_high, f"must be greater than data.x_low={d.x_low}")
    if isinstance(d, TeacherDataConfig):
        _at_least("data.n_samples", d.n_samples, 1)
        _at_least("data.n_inputs", d.n_inputs, 1)
        _at_least("data.hidden", d.hidden, 1)
        fits_in_memory("data.n_samples", d.n_samples, lambda n: n * (d.n_inputs + 1))
        # the teacher's weights and its hidden layer over every sample
        fits_in_memory("data.hidden", d.hidden, lambda h: h * (d.n_inputs + 2 + d.n_samples), "use a smaller hidden layer")
    if isinstance(d, CsvDataConfig):
        if not d.path:
            raise ConfigError("data.path", d.path, "data=csv needs a file: data.path=/path/to/file.csv")
        if Path(d.path).expanduser().is_dir():
            raise ConfigError("data.path", d.path, "is a folder, not a file; point it at a CSV file")
        if not Path(d.path).expanduser().is_file():
            raise ConfigError("data.path", d.path, f"no such file (resolved to {Path(d.path).expanduser().resolve()})")
    if d.name == "none" and (d.val_fraction is not None or d.scaling is not Scaling.none):
        raise ConfigError("data", "none", "data=none has no samples to split or scale")


def _validate_stream(d: StreamDataConfig, t: TrainConfig) -> None:
    """A stream draws a fresh batch every step: nothing fixed to split, shuffle or scale."""
    if d.val_fraction is not None:
        raise ConfigError("data.val_fraction", d.val_fraction, f"{d.name} streams fresh batches and has no fixed set to split: use null")
    if t.shuffle:
        raise ConfigError("train.shuffle", True, f"{d.name} draws fresh batches; there is nothing to shuffle")
    if d.scaling is not Scaling.none:
        raise ConfigError("data.scaling", d.scaling.value, f"{d.name} has no fixed training set to fit a scaling on: use none")
    if t.batch_size is None:
        raise ConfigError("train.batch_size", None, f"{d.name} draws a fresh batch each step: set its size, e.g. train.batch_size=8")


# ------------------------------------------------------------------- config as a record
# Where a run is recorded, and whether progress is shown, do not change what it computes.
CONFIG_HASH_EXCLUDES = ("tracking", "train.progress")


def container(cfg) -> Any:
    """A typed config as plain dicts, lists and values (enums as their names); what
    OmegaConf.to_container(OmegaConf.structured(cfg)) gives, a hundred times faster."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: container(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Enum):
        return cfg.value
    if isinstance(cfg, (list, tuple)):
        return [container(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: container(v) for k, v in cfg.items()}
    return cfg


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(container(cfg)))


def flatten(d: dict, prefix: str = "") -> Dict[str, str]:
    """{"optimizer": {"lr": 0.01}} -> {"optimizer.lr": "0.01"}; lists and empty dicts as JSON."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def from_container(d: dict) -> Config:
    """A typed Config from a plain dict such as a logged config.yaml (each option's own schema).
    It is data: an interpolation (${...}, which OmegaConf would resolve, environment included)
    is refused by name."""
    _refuse_interpolations(d)
    d = {"schedule": {"name": "constant"}, **d}  # recorded before schedules existed
    tracking = d.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("plots"), bool):  # recorded when it was a flag
        d = {**d, "tracking": {**tracking, "plots": "all" if tracking["plots"] else "none"}}
    base = Config(**{g: SCHEMAS[g][d[g]["name"]](name=d[g]["name"]) for g in SCHEMAS})
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), d))


MAX_STORED_CONFIG = 1 << 20  # bytes of a stored config.yaml gradlab reads (its own are about 2 KB)


def stored_yaml(raw: bytes, where: str) -> dict:
    """A stored config.yaml's mapping, read as data: UTF-8, plain YAML (no tags such as
    !!python/object, which name code; no aliases, which a few lines can make expand to
    gigabytes: gradlab writes neither), at most MAX_STORED_CONFIG bytes. DataError otherwise,
    in one line naming `where`."""
    import yaml

    if len(raw) > MAX_STORED_CONFIG:
        raise DataError(f"{where} holds {len(raw):,} bytes, more than the {MAX_STORED_CONFIG:,} gradlab reads of a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where} is not UTF-8 text (byte {e.start}); it is not a config gradlab wrote") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for event in yaml.parse(text, Loader=loader):  # events only: an alias is seen, never expanded
            if isinstance(event, yaml.AliasEvent):
                raise DataError(f"{where} holds a YAML alias (*{event.anchor}); gradlab writes none and reads none")
        d = yaml.load(text, Loader=loader)  # safe: plain types only, a tag naming code is an error
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())
        raise DataError(f"{where} is not a config gradlab can read: {first[:300]}") from None
    if not isinstance(d, dict):
        raise DataError(f"{where} holds a {type(d).__name__}, not a config (a mapping of groups)")
    return d


def _refuse_interpolations(d, prefix: str = "") -> None:
    for key, value in (d.items() if isinstance(d, dict) else enumerate(d) if isinstance(d, list) else ()):
        name = f"{prefix}{key}"
        if isinstance(value, str) and "${" in value:
            raise ConfigError(name, value, "is an interpolation; a stored config is data, and gradlab resolves none")
        _refuse_interpolations(value, name + ".")


def config_hash(flat: Dict[str, str]) -> str:
    """Of the flattened config, less what does not change the result (CONFIG_HASH_EXCLUDES)."""
    kept = {k: v for k, v in flat.items() if not any(k == e or k.startswith(e + ".") for e in CONFIG_HASH_EXCLUDES)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]
