"""gradlab's Optuna sweeper for Hydra, `hydra/sweeper=optuna`, on current Optuna: ask-and-tell,
the search-space syntax of hydra-optuna-sweeper, pruning inside a batch, resumable studies.
Hydra finds it in this `hydra_plugins` namespace package; the work is done by gradlab.multirun.search."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


@dataclass
class SamplerConf:
    """Optuna's samplers' settings; each is passed to the sampler named, which must take it."""

    name: str = "tpe"  # tpe | random | grid | cmaes | qmc
    seed: Optional[int] = None
    n_startup_trials: Optional[int] = None  # tpe, cmaes
    n_ei_candidates: Optional[int] = None  # tpe
    multivariate: Optional[bool] = None  # tpe
    constant_liar: Optional[bool] = None  # tpe
    consider_pruned_trials: Optional[bool] = None  # cmaes
    sigma0: Optional[float] = None  # cmaes
    popsize: Optional[int] = None  # cmaes
    restart_strategy: Optional[str] = None  # cmaes: ipop | bipop
    use_separable_cma: Optional[bool] = None  # cmaes
    with_margin: Optional[bool] = None  # cmaes
    qmc_type: Optional[str] = None  # qmc: sobol | halton
    scramble: Optional[bool] = None  # qmc


@dataclass
class PrunerConf:
    """Optuna's pruners' settings; each is passed to the pruner named, which must take it."""

    name: str = "none"  # none | median | percentile | successive_halving | hyperband
    n_startup_trials: Optional[int] = None  # median, percentile: trials that finish before any is pruned
    n_warmup_steps: Optional[int] = None  # median, percentile: epochs before a trial may be pruned
    interval_steps: Optional[int] = None  # median, percentile
    n_min_trials: Optional[int] = None  # median, percentile
    percentile: Optional[float] = None  # percentile
    min_resource: Any = None  # successive_halving, hyperband: epochs (or "auto")
    max_resource: Any = None  # hyperband: epochs (or "auto")
    reduction_factor: Optional[int] = None  # successive_halving, hyperband
    min_early_stopping_rate: Optional[int] = None  # successive_halving
    bootstrap_count: Optional[int] = None  # successive_halving, hyperband


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.gradlab_optuna.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # the only one: the objective is a loss
    n_trials: int = 20  # trials of the study in all (a resumed study counts those it has)
    n_jobs: int = 1  # trials asked and launched together: one batch with hydra/launcher=batched
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    reports: int = 50  # intermediate values each trial reports to the pruner, evenly spaced
    max_failure_rate: float = 0.0  # failed trials (not diverged: that is a result) the search tolerates
    storage: Optional[str] = None  # default: optuna.journal beside the MLflow store; or an RDB URL
    study_name: Optional[str] = None  # default: the sweep's name and its parent run's id
    params: Dict[str, str] = field(default_factory=dict)  # key: search space, e.g. tag(log, interval(1e-4, 1))


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="gradlab")


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: List[str]) -> None:
        from gradlab.multirun import search
        from gradlab.multirun.sweep import Sweep, current

        sweep = current() or Sweep()  # gradlab's run_sweep makes one; a bare Hydra run goes without a parent
        ctx = sweep.context
        parent = ctx.parent_id if ctx else "local"  # a study per sweep: resuming the sweep resumes it
        summary = search.run(self.config, self.launcher, self.settings, arguments,
                             default_name=f"{ctx.name if ctx else 'search'}-{parent[:12]}", offered=sweep.trials)
        sweep.annotate(summary)
