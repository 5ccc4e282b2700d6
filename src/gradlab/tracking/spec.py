"""What a run is made of on its way to the store: its start and its end, as plain data that
crosses to the recorder process as it is."""

from __future__ import annotations

from dataclasses import dataclass, field

# gradlab's outcome of a run -> MLflow's status. A diverged run is a result, but not a success.
# A pruned run is one a search stopped early on purpose: finished, with its curves up to that step.
STATUS = {"completed": "FINISHED", "reached_stop_loss": "FINISHED", "pruned": "FINISHED", "diverged": "FAILED",
          "failed": "FAILED", "killed": "KILLED"}
# Outcomes a resumed sweep need not redo ("converged": stores written before it was renamed reached_stop_loss).
RESULTS = ("completed", "reached_stop_loss", "converged", "diverged", "pruned")
# The tag that finds a run whose making was not answered: its Started reply never read (a dead
# recorder), or the server's reply lost (a restart mid-request).
START_TOKEN = "gradlab.start_token"
# A sweep's table of results (tracking.results), and the parent's tag that says it is current:
# TABLE once its end wrote it, "" while the sweep runs again (resumed).
TABLE, TABLE_TAG = "results.parquet", "gradlab.results"


@dataclass
class RunSpec:
    """A run to create: where, its name, params and tags, its parent, and what it starts with."""

    experiment: str
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    parent_id: str | None = None
    inputs: list[dict] = field(default_factory=list)  # datasets (Store.log_inputs)
    files: dict[str, str] = field(default_factory=dict)  # artifacts known at the start: config.yaml, ...


@dataclass
class RunEnd:
    """How a run ended: its outcome, final metrics, tags, params known only at the end (its
    outcome and verdict, as columns the UI can filter and plot), files and the data of its figures."""

    outcome: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    history: dict | None = None  # {"columns", "epochs", "values"} (engine.History.table): written as history.csv
    plot_data: dict | None = None  # drawn by the recorder (gradlab.plots.figures)
    points: list[tuple[str, float, int]] = field(default_factory=list)  # step metrics known at the end: (name, value, step)
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.outcome not in STATUS:
            raise ValueError(f"unknown outcome {self.outcome!r}; one of {sorted(STATUS)}")
        self.tags = {**self.tags, "gradlab.outcome": self.outcome}

    @property
    def status(self) -> str:
        return STATUS[self.outcome]
