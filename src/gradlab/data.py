"""Datasets, CSV loading, the train/validation split and input scaling.

Everything is generated in float64 on the CPU from seeded `torch.Generator`s, so a dataset is
the same whatever device or dtype the run uses; the problem casts it to the run's backend.
Scaling is fitted on the training split only and applied to both sides. Targets are never scaled.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradlab.options import ConfigError, DataError, Scaling

THERMOMETER_X = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]  # t_u, unknown units
THERMOMETER_Y = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]  # t_c, °C


@dataclass
class Dataset:
    x: torch.Tensor  # (n, d) float64, raw input units
    y: torch.Tensor  # (n,) float64
    inputs: list[str]
    target: str
    bias_column: bool = False  # append a column of ones after scaling (never scaled itself)
    source: str | None = None  # file path, for datasets read from disk
    sha256: str | None = None  # of the file's bytes
    units: dict[str, str] = field(default_factory=dict)  # column -> unit, for axis labels


@dataclass
class Stream:
    """Draws a fresh batch for every step: x = x_std·N(0,1), y = slope·x + intercept + noise·N(0,1)."""

    slope: float
    intercept: float
    noise: float
    x_std: float
    inputs: list[str] = field(default_factory=lambda: ["x"])
    target: str = "y"

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x_std * torch.randn(n, 1, generator=gen, dtype=torch.float64)
        y = self.slope * x[:, 0] + self.intercept + self.noise * torch.randn(n, generator=gen, dtype=torch.float64)
        return x, y


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _line(cfg) -> Dataset:
    g = _gen(cfg.seed)
    x = torch.linspace(cfg.x_low, cfg.x_high, cfg.n_samples, dtype=torch.float64)
    y = cfg.slope * x + cfg.intercept + cfg.noise * torch.randn(cfg.n_samples, generator=g, dtype=torch.float64)
    return Dataset(x[:, None], y, ["x"], "y")


def _bias_column(cfg) -> Dataset:
    g = _gen(cfg.seed)
    x = cfg.x_low + (cfg.x_high - cfg.x_low) * torch.rand(cfg.n_samples, generator=g, dtype=torch.float64)
    y = cfg.slope * x + cfg.intercept + cfg.noise * torch.rand(cfg.n_samples, generator=g, dtype=torch.float64)
    return Dataset(x[:, None], y, ["x"], "y", bias_column=True)


def _teacher(cfg) -> Dataset:
    """Inputs, then the teacher's weights, then the noise, in that order from data.seed: the
    weights come after n·d draws, so they never coincide with a student initialised from the
    same seed (which draws its weights first)."""
    g = _gen(cfg.seed)
    x = torch.randn(cfg.n_samples, cfg.n_inputs, generator=g, dtype=torch.float64)
    shapes = {"W1": (cfg.n_inputs, cfg.hidden), "b1": (cfg.hidden,), "W2": (cfg.hidden,), "b2": ()}
    net = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    h = torch.sigmoid(x @ net["W1"] + net["b1"])
    y = torch.sigmoid(h @ net["W2"] + net["b2"]) + cfg.noise * torch.randn(cfg.n_samples, generator=g, dtype=torch.float64)
    return Dataset(x, y, [f"x{i}" for i in range(cfg.n_inputs)], "y")


def load_csv(path: str | Path, inputs: list[str] | None = None, target: str | None = None) -> Dataset:
    """Read a numeric CSV with a header row. Errors name the file, the line and the column."""
    path = Path(path).expanduser()
    where = f"data.path={str(path)!r}"
    try:
        raw = path.read_bytes()
    except OSError as e:  # unreadable (permissions, a device that fails): say so, not a traceback
        raise DataError(f"{where}: the file cannot be read ({e.strerror}); check its permissions") from None
    text = raw.decode("utf-8-sig", errors="replace")
    # The csv module reads a quoted cell across lines as one cell; each record keeps the line it ends
    # on. Records are parsed as they are read, into one array of doubles: a million rows held as
    # lists of strings took half a gigabyte.
    reader = _checked(where, csv.reader(io.StringIO(text, newline="")))
    _, first = next(reader, (0, None))
    if first is None or (not any(cell.strip() for cell in first) and len(first) <= 1):
        raise DataError(f"{where}: the file is empty; expected a header row naming the columns, then data rows")
    header = [c.strip() for c in first]
    if not any(header):
        raise DataError(f"{where}: the header (line 1) names no column; name each column in the first row")
    if "" in header:
        raise DataError(f"{where}: column {header.index('') + 1} of the header has no name; name each column in the first row")
    inputs, target = _columns(where, header, inputs, target)
    cols = [header.index(c) for c in [*inputs, target]]
    values = array("d")
    for line, row in reader:
        if any(c.strip() for c in row):
            values.extend(_parsed(where, line, row, header, cols))
    if not values:
        raise DataError(f"{where}: the file has a header ({', '.join(header)}) but no data rows")
    t = torch.frombuffer(values, dtype=torch.float64).reshape(-1, len(cols)).clone()
    return Dataset(t[:, :-1], t[:, -1], inputs, target, source=str(path.resolve()), sha256=hashlib.sha256(raw).hexdigest())


def _checked(where: str, reader):
    """(line, row) of a csv reader, its own refusals (a cell past its size limit: not a numeric
    file) said as a DataError naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{where}: line {reader.line_num}: {e}; a numeric CSV's cells are short numbers: "
                            "is this the right file?") from None
        yield reader.line_num, row


def _columns(where: str, header: list[str], inputs: list[str] | None, target: str | None) -> tuple[list[str], str]:
    """The input and target columns a CSV's header offers for these settings; errors say what is there."""
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise DataError(f"{where}: column {twice[0]!r} appears {header.count(twice[0])} times in the header; "
                        "rename the columns so that each name is unique")
    target = header[-1] if target is None else target
    if target not in header:
        raise DataError(f"{where}: data.target={target!r} is not a column; the columns are {header}")
    inputs = [c for c in header if c != target] if inputs is None else list(inputs)
    twice = [c for c in dict.fromkeys(inputs) if inputs.count(c) > 1]
    if twice:
        raise DataError(f"{where}: data.inputs names {twice[0]!r} {inputs.count(twice[0])} times; list each column once")
    missing = [c for c in inputs if c not in header]
    if missing:
        raise DataError(f"{where}: data.inputs names {missing}, not columns of the file; the columns are {header}")
    if not inputs:
        raise DataError(f"{where}: no input columns left besides the target {target!r}; set data.inputs")
    if target in inputs:
        raise DataError(f"{where}: data.target={target!r} is also listed in data.inputs; remove it from one")
    return inputs, target


def _parsed(where: str, line: int, row: list[str], header: list[str], cols: list[int]) -> list[float]:
    """One data row's chosen cells as numbers; a blank, non-numeric or non-finite cell is refused
    with its line and column."""
    if len(row) != len(header):
        raise DataError(f"{where}: line {line} has {len(row)} cells but the header has {len(header)}")
    parsed = []
    for c in cols:
        cell = row[c].strip()
        if not cell:
            raise DataError(f"{where}: line {line}, column {header[c]!r} is blank; fill it in or drop the row")
        try:
            v = float(cell)
        except ValueError:
            raise DataError(f"{where}: line {line}, column {header[c]!r} holds {cell!r}, which is not a number; "
                            "fix the cell or drop the row") from None
        if not math.isfinite(v):
            raise DataError(f"{where}: line {line}, column {header[c]!r} holds {cell!r}; values must be finite")
        parsed.append(v)
    return parsed


def _thermometer(cfg) -> Dataset:
    x = torch.tensor(THERMOMETER_X, dtype=torch.float64)[:, None]
    y = torch.tensor(THERMOMETER_Y, dtype=torch.float64)
    return Dataset(x, y, ["t_u"], "t_c", units={"t_u": "unknown units", "t_c": "°C"})


def _doubling(cfg) -> Dataset:
    return Dataset(torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64), torch.tensor([2.0, 4.0, 6.0], dtype=torch.float64),
                   ["x"], "y")


# Option name -> the dataset it loads (None for `data=none`: objective functions have no samples).
DATASETS = {
    "thermometer": _thermometer,
    "doubling": _doubling,
    "noisy_line": lambda cfg: Stream(cfg.slope, cfg.intercept, cfg.noise, cfg.x_std),
    "line": _line,
    "bias_column": _bias_column,
    "teacher": _teacher,
    "csv": lambda cfg: load_csv(cfg.path, cfg.inputs, cfg.target),
    "none": lambda cfg: None,
}


def load(cfg) -> Dataset | Stream | None:
    """The dataset a `data` config names."""
    return DATASETS[cfg.name](cfg)


def split(n: int, val_fraction: float | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices: a seeded permutation, ⌊val_fraction·n⌋ samples held out.

    As in the classic loop, the permuted order is kept: the last ⌊f·n⌋ go to validation.
    """
    if val_fraction is None:
        return torch.arange(n), torch.arange(0)
    n_val = math.floor(val_fraction * n)
    if n_val == 0 or n_val == n:
        side = "validation" if n_val == 0 else "training"
        raise ConfigError(
            "data.val_fraction", val_fraction, f"⌊{val_fraction}·{n}⌋ = {n_val} leaves the {side} split empty "
            f"for {n} samples; pick a fraction in [{1 / n:.3g}, {1 - 1 / n:.3g}) or null",
        )
    perm = torch.randperm(n, generator=_gen(seed))
    return perm[:-n_val], perm[-n_val:]


@dataclass
class Scaler:
    """x -> (x - shift) * mult per column, fitted on the training inputs only."""

    shift: torch.Tensor
    mult: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) * self.mult

    @classmethod
    def fit(cls, x: torch.Tensor, kind: Scaling, factor: float, inputs: list[str]) -> "Scaler":
        d = x.shape[1]
        zero, one = torch.zeros(d, dtype=x.dtype), torch.ones(d, dtype=x.dtype)
        if kind is Scaling.none:
            return cls(zero, one)
        if kind is Scaling.factor:
            return cls(zero, one * factor)
        if kind is Scaling.standardize:
            shift, spread = x.mean(0), x.std(0, unbiased=False)
        else:  # minmax
            shift, spread = x.amin(0), x.amax(0) - x.amin(0)
        flat = [inputs[i] for i in range(d) if not spread[i] > 0]
        if flat:
            raise ConfigError(
                "data.scaling", kind.value, f"input column(s) {flat} are constant on the training split, so they "
                "cannot be rescaled; drop them from data.inputs, or use data.scaling=none or factor",
            )
        return cls(shift, 1.0 / spread)


@dataclass
class Prepared:
    """What a run trains on: scaled inputs (with the bias column if any), in float64 on the CPU."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    raw_train: torch.Tensor  # inputs in original units, for plots
    raw_val: torch.Tensor | None
    scaler: Scaler
    dataset: Dataset

    def features(self, raw: torch.Tensor) -> torch.Tensor:
        """Inputs in original units -> what the model sees: scaled, then the bias column if any."""
        x = self.scaler(raw)
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) if self.dataset.bias_column else x


def prepare(dataset: Dataset, cfg) -> Prepared:
    tr, va = split(len(dataset.y), cfg.val_fraction, cfg.split_seed)
    raw_tr, raw_va = dataset.x[tr], dataset.x[va]
    has_val = len(va) > 0
    p = Prepared(raw_tr, dataset.y[tr], None, None, raw_tr, raw_va if has_val else None,
                 Scaler.fit(raw_tr, cfg.scaling, cfg.scale_factor, dataset.inputs), dataset)
    p.x_train = p.features(raw_tr)
    if has_val:
        p.x_val, p.y_val = p.features(raw_va), dataset.y[va]
    return p
