"""What a job or a batch of a sweep needs to know of its sweep, as data: which parent run it
nests under, the sweep's name and experiment, the keys it varies, the store, the process that
launched it. In the launching process the `Sweep` object holds it; a process that cannot share
memory with it (a joblib worker, a Slurm task) receives it as one value: the environment
variable GRADLAB_SWEEP, a JSON object."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

VARIABLE = "GRADLAB_SWEEP"


@dataclass(frozen=True)
class SweepContext:
    parent_id: str
    name: str
    experiment: str
    uri: str  # the tracking store
    varied: list[str] = field(default_factory=list)  # they lead the children's names
    launcher_pid: int | None = None  # a worker whose launcher is gone stops its job
    jobs: int | None = None  # how many jobs the sweep has (a search: its trials); None: not known

    def origin(self):
        """Where this sweep's jobs are recorded."""
        from gradlab.record import Origin

        return Origin(self.experiment, self.parent_id or None, self.name or None, self.varied, self.jobs)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SweepContext":
        return cls(**json.loads(text))

    def environment(self) -> dict[str, str]:
        """What a process started for this sweep inherits: the context, and the store."""
        return {VARIABLE: self.to_json(), "MLFLOW_TRACKING_URI": self.uri}


def inherited() -> SweepContext | None:
    """The context a worker process was started with, if any."""
    text = os.environ.get(VARIABLE)
    return SweepContext.from_json(text) if text else None
