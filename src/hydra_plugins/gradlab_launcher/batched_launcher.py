"""gradlab's launcher for Hydra, `hydra/launcher=batched`: the jobs of a sweep that differ only in
values train together as one batch, and each is still recorded as its own run. Hydra finds it in
this `hydra_plugins` namespace package; the work is done by gradlab.multirun.launch."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

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


@dataclass
class BatchedSlurmLauncherConf:
    """hydra/launcher=batched_slurm: the batched launcher's groups as Slurm array tasks (submitit)."""

    _target_: str = "hydra_plugins.gradlab_launcher.batched_launcher.BatchedSlurmLauncher"
    tasks: int = 4  # Slurm array tasks at most: each trains its share of the batches, one after another
    recorders: int = 2  # in each task
    max_batch: int = 1024
    partition: Optional[str] = None
    timeout_min: int = 60
    cpus_per_task: int = 1
    mem_gb: Optional[float] = None
    gres: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # more sbatch options: {constraint: a100}
    array_parallelism: int = 256  # tasks running at once, at most
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # on a file system the nodes share


ConfigStore.instance().store(group="hydra/launcher", name="batched_slurm", node=BatchedSlurmLauncherConf, provider="gradlab")


class BatchedSlurmLauncher(Launcher):
    def __init__(self, tasks: int = 4, recorders: int = 2, max_batch: int = 1024, submitit_folder: str = "",
                 **slurm) -> None:
        from gradlab.multirun.slurm import SlurmSettings

        self.recorders, self.max_batch = recorders, max_batch
        slurm = {k: (dict(v) if k == "additional_parameters" else v) for k, v in slurm.items()}
        self.settings = SlurmSettings(tasks=tasks, folder=submitit_folder or SlurmSettings.folder, **slurm)
        self.config = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from gradlab.multirun import slurm
        from gradlab.multirun.sweep import Sweep, current

        return slurm.launch(self.hydra_context, self.config, job_overrides, current() or Sweep(), self.settings,
                            self.recorders, self.max_batch)
