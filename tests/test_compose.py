"""A sweep's jobs composed once (multirun.hydra_internals.Compositions) against Hydra composing
each job from scratch, its own way: the typed configs equal, field by field and type by type, on
every job of every sweep file and a sample of a 10,000-job grid; the full configs (Hydra's node
included) equal; a bad job refused in the same words."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradlab.config import ConfigError, container, register_configs, to_typed
from gradlab.multirun import grid, hydra_internals

ROOT = Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


@pytest.fixture
def composing(monkeypatch, tmp_path):
    """(kept compositions, Hydra's own load_sweep_config, the sweep's config) of a sweep file."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    register_configs()

    def compose(name: str, overrides: list[str]):
        app = hydra_internals.hydra(ROOT / "conf", str(ROOT / "sweeps"))
        cfg = app.compose_config(config_name=name, overrides=[*overrides, "hydra.mode=MULTIRUN"],
                                 with_log_configuration=False, run_mode=RunMode.MULTIRUN)
        hydra_own = app.config_loader.load_sweep_config
        return hydra_internals.keep_compositions(app.config_loader), hydra_own, cfg

    yield compose
    GlobalHydra.instance().clear()


def typed_as_data(cfg):
    """A typed config with each leaf's type beside its value (1 and 1.0 and True differ)."""
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return (type(v).__name__, v)
    return (type(cfg.model).__name__, type(cfg.optimizer).__name__, walk(container(cfg)))


def jobs_of(cfg) -> list[list[str]]:
    found = grid.jobs(cfg)
    if found is None:  # a search: the corners of its space, as its check composes them
        from gradlab.multirun.search import Plan

        found = Plan.of(OmegaConf.to_container(cfg.hydra.sweeper, resolve=True), list(cfg.hydra.overrides.task)).probes()
    return found


@pytest.mark.slow  # Hydra composing each job from scratch: about 2 minutes in all
@pytest.mark.parametrize("name", SWEEP_FILES)
def test_every_job_of_a_sweep_file_is_typed_as_hydra_composes_it(composing, name):
    kept, hydra_own, cfg = composing(name, [])
    jobs = jobs_of(cfg)
    assert jobs
    for job in jobs:
        assert typed_as_data(kept.typed(cfg, job)) == typed_as_data(to_typed(hydra_own(cfg, job))), job


@pytest.mark.parametrize("name", ["dense_grid", "gradient_methods"])
def test_a_jobs_full_config_is_hydras(composing, name):
    kept, hydra_own, cfg = composing(name, [])
    for job in jobs_of(cfg)[::17]:
        ours, theirs = kept.full(cfg, job), hydra_own(cfg, job)
        assert OmegaConf.to_container(ours, resolve=False) == OmegaConf.to_container(theirs, resolve=False), job


def test_a_sample_of_a_ten_thousand_job_grid(composing):
    from gradlab.bench.scale import grid as scale_grid

    kept, hydra_own, cfg = composing("dense_grid", scale_grid(25, 100, 300))
    jobs = grid.jobs(cfg)
    assert len(jobs) == 10_000
    for job in jobs[::401]:
        assert typed_as_data(kept.typed(cfg, job)) == typed_as_data(to_typed(hydra_own(cfg, job))), job


@pytest.mark.parametrize("job", [
    ["optimizer=adam", "optimizer.lr=0.1", "optimizer.lr=0.2"],  # one field twice: the last wins, as in Hydra
    ["optimizer=sgd", "optimizer.lr=1", "train.epochs=7"],  # an int given to a float field
    ["optimizer=adam", "optimizer.lr=0.001"],  # a value equal to the default
    ["optimizer=adam", "optimizer.betas=[0.5,0.6]", "train.seed=3"],
    ["model=mlp", "model.hidden=4", "model.activation=tanh", "data=line"],
])
def test_hand_made_jobs(composing, job):
    kept, hydra_own, cfg = composing("config", [])
    assert typed_as_data(kept.typed(cfg, job)) == typed_as_data(to_typed(hydra_own(cfg, job)))


@pytest.mark.parametrize("job", [["optimizer.lr=abc"], ["train.epochs=1.5"], ["+optimizer.nope=1"], ["optimizer.nope=1"],
                                 ["optimizer=nosuch"], ["optimizer=adam", "~optimizer.amsgrad"]])
def test_a_bad_job_is_refused_in_hydras_words(composing, job):
    kept, hydra_own, cfg = composing("config", [])
    with pytest.raises(Exception) as theirs:
        to_typed(hydra_own(cfg, job))
    with pytest.raises(type(theirs.value)) as ours:
        kept.typed(cfg, job)
    assert str(ours.value) == str(theirs.value)
    if isinstance(theirs.value, ConfigError):
        assert theirs.value.args == ours.value.args
