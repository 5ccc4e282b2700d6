"""Batched sweeps: a grid trained as one tensor program gives every job the result it gets alone.

The reference is each job run by itself through the same code as a single run (`training.train`): a
batch must change nothing but the speed. Then the launcher end to end: groups, several kinds of
job in one sweep, interrupts, resume, Optuna through it.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import mlflow
import numpy as np
import pytest
from omegaconf import open_dict

from conftest import ROOT, Started, compose, history, store_made, wait_for
from gradlab import training
from gradlab.multirun import launch
from gradlab.config import to_typed
from gradlab.record import Job

SWEEPS = ROOT / "sweeps"


def sweep_jobs(name: str, *extra: str, every: int = 1):
    """Every `every`-th job's typed config of a sweep file's grid, composed by Hydra from scratch
    (about 0.1 s a job: only the jobs used are composed)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gradlab.config import register_configs

    register_configs()
    search = f"hydra.searchpath=[file://{ROOT / 'conf'}]"
    with initialize_config_dir(str(SWEEPS), version_base="1.3"):
        base = hydra_compose(name, overrides=[search, *extra], return_hydra_config=True)
        params = [f"{k}={v}" for k, v in base.hydra.sweeper.params.items()]
        grid = [list(j) for b in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
                for j in b][::every]
        jobs = []
        for job in grid:
            cfg = hydra_compose(name, overrides=[search, *extra, *job])
            with open_dict(cfg):
                cfg.pop("hydra", None)
            jobs.append((job, to_typed(cfg)))
    return jobs


def batched_and_alone(cfgs: list) -> list[tuple]:
    """(batched result, the job's result alone) for every config, the batches made as the launcher makes them."""
    pairs = [None] * len(cfgs)
    for group in launch.groups([Job(c) for c in cfgs], max_batch=1024):
        s = training.setup(*[cfgs[i] for i in group])
        histories = training.new_histories(s)
        results = training.evaluate(s, histories, training.fit(s, histories))
        for i, r in zip(group, results):
            pairs[i] = (r, training.train(cfgs[i])[1])
    return pairs


def deviation(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    return float(np.max(np.where(scale > 0, np.abs(a - b) / np.where(scale > 0, scale, 1), 0.0), initial=0.0))


def assert_same(pairs, rtol: float) -> float:
    """Same outcome, divergence step and epochs; every logged value, final metric and parameter
    within rtol. Returns the largest relative deviation seen."""
    worst = 0.0
    for batched, alone in pairs:
        hb, ha = batched.history, alone.history
        assert (hb.outcome, hb.stop_step, hb.epochs_run, hb.reason) == (ha.outcome, ha.stop_step, ha.epochs_run, ha.reason)
        assert hb.columns == ha.columns and len(hb) == len(ha)
        for c in ha.columns:
            worst = max(worst, deviation(hb.column(c), ha.column(c)))
        assert set(batched.metrics) == set(alone.metrics)
        for k in alone.metrics:
            if k != "train_seconds":
                worst = max(worst, deviation(batched.metrics[k], alone.metrics[k]))
        for k in alone.params:
            worst = max(worst, deviation(batched.params[k], alone.params[k]))
    assert worst <= rtol, f"largest relative deviation {worst:.3g} > {rtol:g}"
    return worst


# ------------------------------------------------------------------------ equality
@pytest.mark.slow
def test_headline_grid_in_float64_equals_every_job_alone(capsys):
    jobs = sweep_jobs("lr_scale_optimizer", "train.dtype=float64")
    assert len(jobs) == 60
    pairs = batched_and_alone([cfg for _, cfg in jobs])
    assert sum(b.history.outcome == "diverged" for b, _ in pairs) > 0  # divergence inside batches is exercised
    worst = assert_same(pairs, 1e-9)
    with capsys.disabled():
        print(f"\n  headline grid, float64: largest relative deviation batched vs alone {worst:.3g}")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lr_scale_optimizer", "dense_grid", "gradient_methods", "batch_size", "seeds", "bench_grid",
                                  "schedules"])
def test_every_sweep_file_batched_equals_each_job_alone(name, capsys):
    sample = {"lr_scale_optimizer": 4, "dense_grid": 8, "schedules": 5}.get(name, 1)  # the big grids: every k-th job
    cfgs = [cfg for _, cfg in sweep_jobs(name, every=sample)]
    rtol = 1e-5 if all(c.train.dtype.value == "float32" for c in cfgs) else 1e-9
    worst = assert_same(batched_and_alone(cfgs), rtol)
    with capsys.disabled():
        print(f"\n  {name}: {len(cfgs)} jobs, largest relative deviation batched vs alone {worst:.3g}")


def test_stop_loss_and_divergence_inside_one_batch():
    """Each configuration stops on its own: at its own stop_loss, or where it diverges."""
    cfgs = [compose("experiment=thermometer_handgrad_raw", "train.epochs=3000", f"optimizer.lr={lr}", f"train.stop_loss={stop}",
                    "train.dtype=float64")
            for lr, stop in ((1e-4, 30.0), (1e-4, 29.5), (2e-4, 28.0), (1e-2, 28.0), (5e-5, 31.0), (1e-3, 1.0))]
    pairs = batched_and_alone(cfgs)
    assert len(launch.groups([Job(c) for c in cfgs], 1024)) == 1
    outcomes = [b.history.outcome for b, _ in pairs]
    assert "reached_stop_loss" in outcomes and "diverged" in outcomes
    assert len({b.history.epochs_run for b, _ in pairs}) > 2  # they stopped at different epochs
    assert_same(pairs, 1e-12)


@pytest.mark.parametrize("shuffle,device", [("false", "cpu"), ("true", "cpu"), ("true", "numpy")])
def test_a_configuration_that_diverges_mid_epoch_leaves_the_rest_of_its_minibatches(shuffle, device):
    """Four minibatches an epoch: the configurations still training take the epoch's next
    minibatches without the rows of those that left at its first one."""
    cfgs = [compose("data=line", "data.n_samples=30", "train.batch_size=8", "train.loss=half_sse", f"train.shuffle={shuffle}",
                    "train.epochs=30", f"optimizer.lr={lr}", f"device={device}", "grad=analytic", "optimizer=gd")
            for lr in (1e-3, 30.0, 2e-3)]
    pairs = batched_and_alone(cfgs)
    assert [b.history.outcome for b, _ in pairs] == ["completed", "diverged", "completed"]
    assert_same(pairs, 1e-5)


def test_shuffled_minibatches_and_streams_batch_per_configuration():
    """Each configuration's own generator shuffles its own batches, or draws its own stream."""
    cfgs = [compose("data=line", "train.batch_size=16", "train.shuffle=true", "train.epochs=40", f"train.seed={seed}",
                    f"optimizer.lr={lr}", "data.val_fraction=0.2") for seed in (0, 1) for lr in (1e-3, 3e-2)]
    cfgs += [compose("experiment=noisy_line_batches", "train.epochs=300", f"train.seed={seed}") for seed in (3, 4)]
    assert_same(batched_and_alone(cfgs), 1e-5)


# ------------------------------------------------------------------------ grouping
def test_what_can_share_a_batch():
    base = compose("train.epochs=10")

    def key(*overrides, index=0):
        return launch.batch_key(compose("train.epochs=10", *overrides), index)

    same = [["optimizer.lr=0.5"], ["data.scaling=standardize"], ["train.seed=3"], ["model.start.w=2"],
            ["data.split_seed=4"], ["data.scale_factor=0.5"], ["train.stop_loss=1.0"]]
    for overrides in same:
        assert key(*overrides) == launch.batch_key(base, 0), overrides
    different = [["model=quadratic"], ["data=line"], ["grad=analytic"], ["optimizer=adam"], ["train.epochs=11"],
                 ["train.batch_size=2"], ["train.dtype=float64"], ["device=numpy", "grad=analytic", "optimizer=gd"],
                 ["data.val_fraction=0.5"]]
    for overrides in different:
        assert key(*overrides) != launch.batch_key(base, 0), overrides
    assert key("optimizer=lbfgs", index=0) != key("optimizer=lbfgs", index=1)  # L-BFGS: one at a time


def children(uri: str, experiment: str):
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("gradlab.role") == "sweep"],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def test_a_sweep_of_several_groups_records_every_job_as_the_basic_launcher_does(cli, temp_store):
    grid = ["-m", "model=linear,quadratic", "device=cpu,numpy", "grad=analytic", "optimizer=gd", "optimizer.lr=0.01,0.02",
            "train.epochs=50"]
    code, out, err = cli(*grid, "hydra/launcher=batched", "tracking.experiment=batched")
    assert code == 0, err
    assert "8 jobs in 4 batches (sizes 2, 2, 2, 2)" in out
    code, _, err = cli(*grid, "hydra/launcher=basic", "tracking.experiment=basic")
    assert code == 0, err
    code, out, err = cli("-m", "optimizer=sgd,lbfgs", "optimizer.lr=0.01,0.5", "train.epochs=5", "hydra/launcher=batched",
                         "tracking.experiment=lbfgs", "tracking.plots=none")
    assert code == 0, err
    assert "4 jobs in 3 batches (sizes 2, 1, 1)" in out
    by = {}
    for name in ("batched", "basic"):
        parents, kids = children(temp_store, name)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(kids) == 8
        by[name] = {k.data.tags["gradlab.overrides"].replace(f" tracking.experiment={name}", "").replace(
            f"tracking.experiment={name} ", ""): k for k in kids}
    assert by["batched"].keys() == by["basic"].keys()
    client = mlflow.MlflowClient(temp_store)
    for overrides, b in by["batched"].items():
        a = by["basic"][overrides]
        assert {k: v for k, v in b.data.params.items() if k != "tracking.experiment"} == \
            {k: v for k, v in a.data.params.items() if k != "tracking.experiment"}
        assert b.data.tags["gradlab.outcome"] == a.data.tags["gradlab.outcome"]
        assert history(temp_store, b.info.run_id) == history(temp_store, a.info.run_id)
        assert set(b.data.metrics) == set(a.data.metrics)
        for m, value in a.data.metrics.items():
            if m != "train_seconds":
                assert b.data.metrics[m] == pytest.approx(value, rel=1e-6), m
        assert {x.path for x in client.list_artifacts(b.info.run_id)} == {x.path for x in client.list_artifacts(a.info.run_id)}
        assert {x.path for x in client.list_artifacts(b.info.run_id, "plots")} >= {"plots/loss_curves.png"}
    _, kids = children(temp_store, "lbfgs")
    assert len(kids) == 4 and all(k.info.status in ("FINISHED", "FAILED") for k in kids)


def test_resume_skips_the_finished_jobs_and_batches_the_rest(cli, temp_store):
    base = ["-m", "hydra/launcher=batched", "train.epochs=30", "tracking.plots=none", "tracking.experiment=resume"]
    assert cli(*base, "optimizer.lr=0.01,0.02")[0] == 0
    code, out, err = cli(*base, "optimizer.lr=0.01,0.02,0.03,0.04,0.05", "tracking.skip_finished=true")
    assert code == 0, err
    _, kids = children(temp_store, "resume")
    lrs = sorted(float(k.data.params["optimizer.lr"]) for k in kids)
    assert lrs == [0.01, 0.02, 0.03, 0.04, 0.05]  # 0.01 and 0.02 once: skipped the second time
    assert "5 jobs in 1 batch (sizes 5)" in out


@pytest.mark.slow
def test_ctrl_c_in_a_batched_sweep_leaves_its_runs_killed_with_their_history(temp_store, tmp_path):
    proc = Started([sys.executable, "-m", "gradlab", "-m", "-cd", "sweeps", "-cn", "lr_scale_optimizer",
                             "train.epochs=100000000", "tracking.plots=none", f"hydra.sweep.dir={tmp_path}/ms"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def training():
            if not store_made(temp_store):
                return None
            try:
                _, kids = children(temp_store, "lr_scale_optimizer")
                c = mlflow.MlflowClient(temp_store)
                return kids and all(c.get_metric_history(k.info.run_id, "train_loss") for k in kids) and kids
            except Exception:
                return None

        wait_for(training, timeout=120, proc=proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT, err[-2000:]
    parents, kids = children(temp_store, "lr_scale_optimizer")
    assert parents[0].info.status == "KILLED"
    assert len(kids) == 15  # the first batch started; the others never did
    for k in kids:  # each either diverged before the signal (a result) or was training and is KILLED
        outcome = k.data.tags["gradlab.outcome"]
        assert (k.info.status, outcome) in (("KILLED", "killed"), ("FAILED", "diverged")), (k.info.status, outcome)
        if outcome == "killed":
            rows = history(temp_store, k.info.run_id)
            assert rows and len(rows) == int(k.data.metrics["epochs_run"])  # its history up to the signal
    assert any(k.data.tags["gradlab.outcome"] == "killed" for k in kids)
