"""gradlab's launcher for Hydra, `hydra/launcher=batched`: the jobs of a sweep that differ only in
values train together as one batch, and each is still recorded as its own run. Hydra finds it in
this `hydra_plugins` namespace package; the work is done by gradlab.multirun.launch."""

from dataclasses import dataclass
from typing import Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.gradlab_launcher.batched_launcher.BatchedLauncher"
    recorders: int = 2  # processes that record the runs (MLflow writes, figures) while training goes on
    max_batch: int = 1024  # configurations trained at once, at most


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="gradlab")


class BatchedLauncher(Launcher):
    def __init__(self, recorders: int = 2, max_batch: int = 1024) -> None:
        self.recorders, self.max_batch = recorders, max_batch
        self.config = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gradlab.multirun.launch import launch
        from gradlab.multirun.sweep import Sweep, current

        return launch(self.hydra_context, self.config, job_overrides, current() or Sweep(), self.recorders, self.max_batch)
