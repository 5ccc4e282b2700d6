"""Where a run computes: a torch device and dtype, or NumPy arrays (`device=numpy`).

DEVICES maps each `device` option to the device it means on this machine, or a ConfigError that
says what works here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradlab.options import ConfigError, DType


def index(positions: list[int], device=None) -> torch.Tensor:
    """Positions (of configurations) as an index tensor. Through NumPy: torch.tensor on a list of
    10,000 ints takes 1.5 ms, this 0.2 ms, and a batch of thousands whose runs leave one by one
    makes it at every leaving."""
    return torch.from_numpy(np.fromiter(positions, dtype=np.int64, count=len(positions))).to(device)


@dataclass(frozen=True)
class Backend:
    device: str  # a torch device string, or "numpy"
    dtype: DType

    @property
    def numpy(self) -> bool:
        return self.device == "numpy"

    def put(self, t: torch.Tensor):
        """A float64 CPU tensor onto the backend."""
        if self.numpy:
            return t.numpy().astype(self.dtype.value)
        return t.to(device=self.device, dtype=getattr(torch, self.dtype.value))


def _cuda(dtype: DType) -> str:
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise ConfigError("device", "cuda", f"no CUDA device here (torch {torch.__version__}, {build}); use device=cpu or device=auto")
    return "cuda"


def _mps(dtype: DType) -> str:
    if not torch.backends.mps.is_available():
        raise ConfigError("device", "mps", "no Apple MPS device here; use device=cpu or device=auto")
    if dtype is DType.float64:
        raise ConfigError("train.dtype", "float64", "MPS has no float64; use train.dtype=float32 or device=cpu")
    return "mps"


def _auto(dtype: DType) -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() and dtype is not DType.float64 else "cpu"


DEVICES = {"cpu": lambda dtype: "cpu", "cuda": _cuda, "mps": _mps, "auto": _auto, "numpy": lambda dtype: "numpy"}


def backend(name: str, dtype: DType) -> Backend:
    if name not in DEVICES:
        raise ConfigError("device.name", name, f"no such device; pick one with device={'|'.join(DEVICES)} "
                          "(another GPU than the first: CUDA_VISIBLE_DEVICES=N with device=cuda)")
    return Backend(DEVICES[name](dtype), dtype)
