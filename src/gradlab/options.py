"""The closed sets of choices (enums) and the user-error types, shared by the maths and the config.

Kept apart from config.py so that the maths and the engine import neither Hydra nor OmegaConf.
"""

from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A user mistake in the configuration: says which field, what value, and what would work."""

    def __init__(self, key: str, value: Any, expected: str):
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"{key}={value!r} is not allowed: {expected}")


class OverrideError(ConfigError):
    """Overrides that cannot be composed (an unknown key or option), or a sweep refused: the
    message is Hydra's or the CLI's line, as the command prints it."""

    def __init__(self, message: str):
        self.key = self.value = self.expected = None
        ValueError.__init__(self, message)


class ArgumentTypeError(OverrideError, TypeError):
    """An argument of gradlab.run or gradlab.sweep of a type it does not take (an override that is
    not a string): a TypeError, and a ConfigError with the line that says what it takes."""


class DataError(ValueError):
    """A user mistake in the data (a file, a row, a column): the message says where and the fix."""


class Scaling(Enum):
    none = "none"
    factor = "factor"
    standardize = "standardize"
    minmax = "minmax"


class Loss(Enum):
    mse = "mse"  # mean of squared errors
    sse = "sse"  # sum of squared errors
    half_mse = "half_mse"  # (1/2n)·Σe², the "cost" of many course notes
    half_sse = "half_sse"  # ½·Σe²
    l1 = "l1"  # mean of |e|
    huber = "huber"  # mean of torch's huber_loss (train.huber_delta)
    bce = "bce"  # mean binary cross-entropy, torch's, for predictions in (0, 1)
    module = "module"  # the user's own loss(pred, target) -> scalar (train.loss_target)


class DType(Enum):
    float32 = "float32"
    float64 = "float64"


class Init(Enum):
    normal = "normal"  # N(0, init_scale²)
    uniform = "uniform"  # U(-1/√fan_in, 1/√fan_in), torch.nn.Linear's default
    zeros = "zeros"


class Activation(Enum):
    sigmoid = "sigmoid"
    tanh = "tanh"
    identity = "identity"


class Objective(Enum):
    """What "best" means for a sweep's ranking, its best run and a search (ranking.py)."""

    auto = "auto"  # epochs_to_optimum where an optimum is known, else val_loss
    epochs_to_optimum = "epochs_to_optimum"  # at the optimum first, the fewest epochs there, then the excess
    excess = "excess"  # training loss above the optimum; runs at the optimum tie, the fewest epochs first
    train_loss = "train_loss"  # the final training loss
    val_loss = "val_loss"  # the final validation loss (the training loss without a split)
    best_val_loss = "best_val_loss"  # the lowest validation loss seen (early stopping's pick)


class Plots(Enum):
    """Which runs draw their figures (tracking.plots); history.csv is recorded whatever it says."""

    all = "all"  # every run
    none = "none"  # no run: `gradlab plots RUN_ID` draws them later
    auto = "auto"  # a single run, and sweeps of at most tracking.plots_max_children jobs; a larger sweep's best runs


class SweepRefused(OverrideError):
    """A sweep refused before any job ran: jobs with bad values, a search that cannot work. The
    message lists what is wrong, a line each."""


class AnnealStrategy(Enum):  # OneCycleLR's anneal_strategy
    cos = "cos"
    linear = "linear"


class ThresholdMode(Enum):  # ReduceLROnPlateau's threshold_mode
    rel = "rel"
    abs = "abs"
