"""Shared fixtures: the real config composed as users compose it, and a temporary store.

Every test runs with MLFLOW_TRACKING_URI pointing into a temporary folder, so the suite can never
write into the repository's own mlruns/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose(*overrides: str):
    """The typed Config for these Hydra overrides, composed from conf/ exactly as the CLI does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from gradlab.config import register_configs

    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


@pytest.fixture(autouse=True)
def temp_store(tmp_path_factory, monkeypatch):
    """A fresh SQLite store per test; returns its URI."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def runs(temp_store):
    """All runs of the temporary store, as MLflow returns them (a DataFrame per call)."""
    def read(experiment: str | None = None):
        import mlflow

        if not Path(temp_store[len("sqlite:///"):]).exists():
            return []  # the store was never created, so nothing was recorded

        client = mlflow.MlflowClient(temp_store)
        exps = [e.experiment_id for e in client.search_experiments()
                if experiment is None or e.name == experiment]
        if not exps:
            return []
        return client.search_runs(exps, max_results=10000)

    return read


def gradlab(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """The console script in a subprocess (`python -m gradlab`), with the test's environment."""
    return subprocess.run([sys.executable, "-m", "gradlab", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=kw.pop("cwd", ROOT), **kw)
