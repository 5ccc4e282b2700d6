"""gradlab's Optuna sweeper (hydra/sweeper=optuna): the old plugin's search-space syntax, seeded
reproducibility, pruning inside a batch, divergence as a result, bad settings refused before any
run, resume after an interrupt, and the search's report."""

from __future__ import annotations

import importlib.metadata
import math
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from conftest import ROOT, Started, history, store_made, wait_for
from gradlab import compare
from gradlab.multirun import search
from gradlab.multirun.search import Plan, SearchError
from gradlab.tracking import Store

SWEEPS = str(ROOT / "sweeps")


def runs_of(uri: str, experiment: str):
    """(the parent runs, the children) of an experiment."""
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    found = c.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return ([r for r in found if r.data.tags.get("gradlab.role") == "sweep"],
            [r for r in found if "mlflow.parentRunId" in r.data.tags])


def study_of(parent) -> optuna.Study:
    tags = parent.data.tags
    return optuna.load_study(study_name=tags["gradlab.study"], storage=search.open_storage(tags["gradlab.study.storage"]))


# ------------------------------------------------------------------------ the syntax
# hydra-optuna-sweeper 1.3.0 read these as Optuna 2's UniformDistribution(1, 2), IntUniformDistribution,
# LogUniformDistribution, IntLogUniformDistribution, CategoricalDistribution, IntUniformDistribution(step)
# and DiscreteUniformDistribution(q): Optuna 3 renamed them, one for one, to the distributions below.
@pytest.mark.parametrize("override, expected", [
    ("x=interval(1.0, 2.0)", FloatDistribution(1.0, 2.0)),
    ("x=interval(1, 5)", FloatDistribution(1.0, 5.0)),  # Hydra reads an interval's ends as floats
    ("x=tag(log, interval(1e-4, 2.0))", FloatDistribution(1e-4, 2.0, log=True)),
    ("x=tag(log, interval(1, 100))", FloatDistribution(1.0, 100.0, log=True)),
    ("x=choice(adam, sgd, 3)", CategoricalDistribution(["adam", "sgd", 3])),
    ("x=a,b", CategoricalDistribution(["a", "b"])),
    ("x=range(1, 9, 2)", IntDistribution(1, 9, step=2)),
    ("x=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 1.0, step=0.25)),
])
def test_the_old_plugins_search_space_syntax_parses_to_the_same_distributions(override, expected):
    searched, fixed = search.space([override])
    assert searched == {"x": expected} and fixed == {}


def test_a_plain_value_is_fixed_and_the_command_line_fixes_what_the_file_searches():
    plan = Plan.of({"params": {"optimizer.lr": "tag(log, interval(1e-4, 1.0))", "optimizer.momentum": "interval(0, 0.9)"}},
                   ["optimizer.momentum=0.5", "train.epochs=10"])
    assert plan.searched == {"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True)}
    assert plan.fixed == {"optimizer.momentum": "0.5", "train.epochs": "10"}


def test_a_later_entry_of_a_key_wins_whether_it_searches_or_fixes():
    searched, fixed = search.space(["optimizer.momentum=0.9", "optimizer.momentum=interval(0, 0.95)"])
    assert searched == {"optimizer.momentum": FloatDistribution(0.0, 0.95)} and fixed == {}
    searched, fixed = search.space(["optimizer.momentum=interval(0, 0.95)", "optimizer.momentum=0.9"])
    assert searched == {} and fixed == {"optimizer.momentum": "0.9"}


def test_resuming_an_exhausted_grid_with_trials_left_running_does_not_crash(tmp_path):
    plan = Plan.of({"sampler": {"name": "grid"}, "params": {"a": "choice(1, 2)"}}, [])
    study = optuna.create_study(storage=search.open_storage(str(tmp_path / "j.journal")), study_name="g",
                                sampler=plan.sampler)
    for _ in range(2):  # both cells asked, then the process died
        study.ask(plan.searched)
    assert search.recover(study) == 2  # both asked again...
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["a"] for t in waiting) == [1, 2]  # ...with their values


def test_a_trial_running_under_another_live_search_is_left_to_it(tmp_path):
    """Two searches on one study share it: the second neither fails nor asks again what the first
    is training, nor counts it as left to run; once that process is gone its trial is asked again."""
    study = optuna.create_study(storage=search.open_storage(str(tmp_path / "j.journal")), study_name="s")
    other = Started([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live, dead = study.ask({"a": FloatDistribution(0, 1)}), study.ask({"a": FloatDistribution(0, 1)})
        from gradlab.tracking.processes import process_start
        import socket
        live.set_user_attr(search.OWNER, f"{socket.gethostname()}:{other.pid}:{process_start(other.pid)}")
        dead.set_user_attr(search.OWNER, f"{socket.gethostname()}:{other.pid}:not-its-start-time")  # a reused pid
        assert search.running_elsewhere(study) == 1
        assert search.recover(study) == 1  # the dead one only
        assert study.trials[live.number].state == TrialState.RUNNING
        assert study.trials[dead.number].state == TrialState.FAIL
    finally:
        other.kill()
        other.wait()
    assert search.running_elsewhere(study) == 0 and search.recover(study) == 1  # now the live one's turn
    assert study.trials[live.number].state == TrialState.FAIL


@pytest.mark.parametrize("damage", [b"", b"\x00\xff garbage\n"], ids=["torn", "garbage_line"])
def test_a_journal_torn_at_its_end_is_mended_and_its_studies_go_on(cli, temp_store, damage):
    args = ["-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.n_trials=2",
            "train.epochs=2", "tracking.plots=none"]
    assert cli(*args)[0] == 0
    journal = Path(temp_store.removeprefix("sqlite:///")).parent / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-50] if not damage else whole + damage)  # a writer died mid-line, or junk
    code, out, err = cli(*args)
    assert code == 0, err
    assert "ended in a torn record" in out and "Traceback" not in err
    kept = journal.with_name("optuna.journal.torn").read_bytes()
    cut = whole[:-50]
    assert kept == (cut[cut.rfind(b"\n") + 1:] + b"\n" if not damage else damage)  # the torn line, whole
    parents, children = runs_of(temp_store, "default")
    assert len(parents) == 2 and len(children) == 4 and all(p.info.status == "FINISHED" for p in parents)
    for parent in parents:  # both studies read back, the first to its last whole record
        assert len(study_of(parent).trials) == 2


def test_a_damaged_record_inside_a_journal_is_one_line_before_any_run(cli, temp_store):
    args = ["-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.n_trials=2",
            "train.epochs=2", "tracking.plots=none"]
    assert cli(*args)[0] == 0
    journal = Path(temp_store.removeprefix("sqlite:///")).parent / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:2] + [b"{not json\n"] + lines[2:]))
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "has a damaged record" in err and "hydra.sweeper.storage=" in err
    assert len(runs_of(temp_store, "default")[0]) == 1  # no second parent


def test_a_sampled_string_that_hydra_would_read_otherwise_is_quoted():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for value in ["adam", "a,b", "1", "true", "null", "it's", "[1]", "a=b", "x y", "c:\\d\\"]:
        text = search.override_value(value)
        assert OverridesParser.create().parse_override(f"k={text}").value() == value, text
    assert search.override_value(0.5) == "0.5" and search.override_value(3) == "3"


@pytest.mark.slow
def test_a_second_search_on_a_live_study_leaves_the_first_ones_trials_alone(temp_store, tmp_path):
    """Before: the second search failed the first's running trials and asked them again."""
    common = ["-cd", "sweeps", "-cn", "optuna_lr_momentum", "hydra.sweeper.study_name=shared",
              "hydra.sweeper.n_jobs=2", "tracking.plots=none"]
    first = Started([sys.executable, "-m", "gradlab", *common, "hydra.sweeper.n_trials=2", "train.epochs=100000000",
                     "train.log_every=1000", f"hydra.sweep.dir={tmp_path}/a"], cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: store_made(temp_store) and len(runs_of(temp_store, "optuna_lr_momentum")[1]) >= 2,
                 timeout=180, proc=first)  # its two trials training
        second = subprocess.run([sys.executable, "-m", "gradlab", *common, "hydra.sweeper.n_trials=4", "train.epochs=5",
                                 f"hydra.sweep.dir={tmp_path}/b"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "2 trials to run of 4" in second.stdout and "interrupted" not in second.stdout, second.stdout
        study = optuna.load_study(study_name="shared", storage=search.open_storage(
            str(Path(temp_store.removeprefix("sqlite:///")).parent / "optuna.journal")))
        states = sorted(t.state.name for t in study.trials)
        assert states == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]  # the first's still its own
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate()


def test_the_grid_sampler_takes_every_value_and_caps_the_trials():
    plan = Plan.of({"sampler": {"name": "grid"}, "n_trials": 100,
                    "params": {"a": "choice(1, 2, 3)", "b": "range(0.0, 1.0, 0.5)"}}, [])
    assert plan.n_trials == 3 * 3  # b: 0.0, 0.5, 1.0 (Optuna's ends are both included)
    assert isinstance(plan.sampler, optuna.samplers.GridSampler)
    with pytest.raises(SearchError, match=r"hydra.sweeper.params.a: the grid sampler needs a finite set"):
        Plan.of({"sampler": {"name": "grid"}, "params": {"a": "interval(0.0, 1.0)"}}, [])


@pytest.mark.parametrize("kind, name, cls", [
    ("sampler", "tpe", optuna.samplers.TPESampler), ("sampler", "random", optuna.samplers.RandomSampler),
    ("sampler", "cmaes", optuna.samplers.CmaEsSampler), ("sampler", "qmc", optuna.samplers.QMCSampler),
    ("pruner", "none", optuna.pruners.NopPruner), ("pruner", "median", optuna.pruners.MedianPruner),
    ("pruner", "percentile", optuna.pruners.PercentilePruner),
    ("pruner", "successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ("pruner", "hyperband", optuna.pruners.HyperbandPruner),
])
def test_every_sampler_and_pruner_is_built_with_its_settings(kind, name, cls):
    settings = {"name": name, **({"percentile": 30.0} if name == "percentile" else {}), **({"seed": 3} if kind == "sampler" else {})}
    plan = Plan.of({kind: settings, "params": {"x": "interval(0.0, 1.0)"}}, [])
    assert type(getattr(plan, kind)) is cls


@pytest.mark.parametrize("settings, message", [
    ({"pruner": {"name": "bogus"}}, "hydra.sweeper.pruner.name='bogus' is not one of: none, median, percentile"),
    ({"pruner": {"name": "median", "percentile": 30.0}}, "hydra.sweeper.pruner.percentile: the median pruner takes n_startup_trials"),
    ({"sampler": {"name": "random", "n_startup_trials": 5}}, "hydra.sweeper.sampler.n_startup_trials: the random sampler takes seed"),
    ({"direction": "maximize"}, "hydra.sweeper.direction='maximize': a search minimises gradlab's objective, a loss"),
    ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0 is out of range"),
    ({"max_failure_rate": 2.0}, "hydra.sweeper.max_failure_rate=2.0 is out of range (between 0 and 1)"),
])
def test_a_bad_setting_names_itself_and_what_it_may_be(settings, message):
    with pytest.raises(SearchError) as e:
        Plan.of({"params": {"x": "interval(0.0, 1.0)"}, **settings}, [])
    assert message in str(e.value)


def test_turning_pruning_off_leaves_the_other_pruners_settings_unused():
    plan = Plan.of({"pruner": {"name": "none", "n_warmup_steps": 200}, "params": {"x": "interval(0.0, 1.0)"}}, [])
    assert type(plan.pruner) is optuna.pruners.NopPruner


def test_optuna_is_current_and_the_old_plugin_is_gone():
    assert int(importlib.metadata.version("optuna").split(".")[0]) >= 5
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("hydra-optuna-sweeper")


# ------------------------------------------------------------------------- searches
def test_a_bad_search_is_refused_before_any_run_exists(cli, temp_store):
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.pruner.name=bogus")
    assert code == 2 and "hydra.sweeper.pruner.name='bogus' is not one of" in err
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.direction=maximize")  # a loss
    assert code == 2 and "hydra.sweeper.direction='maximize': a search minimises" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "optimizer=gd")  # gd has no momentum to search
    assert code == 2 and "a trial [optimizer.lr=0.0001 optimizer.momentum=0.0 optimizer=gd] cannot run" in err
    assert not store_made(temp_store) or runs_of(temp_store, "optuna_lr_momentum") == ([], [])


BAD_SEARCHES = [  # (the sweep's overrides, the words of its one line): each refused before any run exists
    (["optimizer.lr=interval(1,0)"], ["hydra.sweeper.params.optimizer.lr='interval(1,0)'", "its low end 1 is above its high end 0"]),
    (["optimizer.lr=tag(log,interval(-1,1))"], ["optimizer.lr='tag(log,interval(-1,1))'", "a log scale needs a low end > 0"]),
    (["train.seed=range(1,10,0)"], ["hydra.sweeper.params.train.seed='range(1,10,0)'", "its step must be > 0"]),
    (["train.seed=range(10,1)"], ["train.seed='range(10,1)'", "its low end 10 is above its high end 1"]),
    (["optimizer.lr=interval(1e-4, inf)"], ["optimizer.lr='interval(1e-4, inf)'", "ends must be finite numbers"]),
    (["optimizer.lr=choice(0.1,abc)"], ["a trial [optimizer.lr=abc", "cannot run", "optimizer.lr: Value 'abc'"]),
    (["optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.storage=postgresql://u:secret@127.0.0.1:1/db"],
     ["hydra.sweeper.storage='postgresql://u:***@127.0.0.1:1/db'", "cannot be opened"]),
    (["optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.storage=/proc/version"],
     ["hydra.sweeper.storage='/proc/version'", "cannot be opened"]),
    (["optimizer.lr=0.1"], ["nothing to search"]),
    (["optimizer.lr=interval(0.01,0.1)", "hydra.sweeper.n_jobs=200000"], ["hydra.sweeper.n_jobs=200000", "at most 10,000"]),
]


@pytest.mark.parametrize("args,words", BAD_SEARCHES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_search_space_or_storage_is_one_line_before_any_run(cli, temp_store, args, words):
    code, out, err = cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2", "train.epochs=2", *args)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err
    assert "secret" not in out + err
    assert not store_made(temp_store) or runs_of(temp_store, "default") == ([], [])


def test_the_hint_of_nothing_to_search_is_an_override_that_works(cli, temp_store):
    import re
    import shlex

    code, _, err = cli("-m", "hydra/sweeper=optuna", "optimizer.lr=0.1")
    assert code == 2
    hint = re.search(r"e\.g\. (.*?)(?: on the command line|$)", err.strip()).group(1)
    code, _, err = cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1", "train.epochs=2", *shlex.split(hint))
    assert code == 0, err


def test_a_seeded_search_is_reproducible(cli, temp_store):
    args = ["-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=3",
            "train.epochs=200", "tracking.plots=none"]
    for _ in range(2):
        code, _, err = cli(*args)
        assert code == 0, err
    parents, children = runs_of(temp_store, "optuna_lr_momentum")
    assert len(parents) == 2 and len(children) == 12
    by_parent = {p.info.run_id: {} for p in parents}
    for c in children:
        by_parent[c.data.tags["mlflow.parentRunId"]][int(c.data.tags["gradlab.trial"])] = (
            c.data.params["optimizer.lr"], c.data.params["optimizer.momentum"], c.data.metrics.get("final_val_loss"))
    first, second = by_parent.values()
    assert sorted(first) == list(range(6)) and first == second  # same trials, same values
    assert len({v[:2] for v in first.values()}) == 6  # six different configurations
    assert parents[0].data.tags["gradlab.study.best_value"] == parents[1].data.tags["gradlab.study.best_value"]
    assert parents[0].data.tags["gradlab.study"] != parents[1].data.tags["gradlab.study"]  # a study per sweep


def test_a_diverging_trial_is_a_result_and_the_study_goes_on(cli, temp_store):
    code, out, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.sampler.name=grid",
                         "optimizer.lr=choice(0.001,50.0)", "optimizer.momentum=0.5", "train.epochs=300", "tracking.plots=none")
    assert code == 0, err
    (parent,), children = runs_of(temp_store, "optuna_lr_momentum")
    fate = {c.data.params["optimizer.lr"]: (c.info.status, c.data.tags["gradlab.outcome"]) for c in children}
    assert fate == {"0.001": ("FINISHED", "completed"), "50.0": ("FAILED", "diverged")}
    trials = {t.params["optimizer.lr"]: t for t in study_of(parent).trials}
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    assert trials[50.0].value == math.inf and math.isfinite(trials[0.001].value)
    assert parent.info.status == "FINISHED" and parent.data.tags["gradlab.study.best_params"] == "optimizer.lr=0.001"


def test_a_search_stops_once_more_trials_fail_than_it_tolerates(cli, temp_store, monkeypatch):
    from gradlab import training

    fit = training.fit

    def crashing(s, *args, **kw):  # a failure no check before the search can foresee (every value is checked)
        if any(c.optimizer.lr == 0.02 for c in s.cfgs):
            raise RuntimeError("injected: the trial's training crashed")
        return fit(s, *args, **kw)

    monkeypatch.setattr(training, "fit", crashing)
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.sampler.name=grid", "hydra.sweeper.n_jobs=1",
                       "optimizer.lr=choice(0.01,0.02)", "optimizer.momentum=0.5", "train.epochs=50", "tracking.plots=none")
    assert code == 1, err
    assert "injected" in err and "more than hydra.sweeper.max_failure_rate=0" in err
    (parent,), _ = runs_of(temp_store, "optuna_lr_momentum")
    assert parent.info.status == "FAILED" and "the search stopped" in parent.data.tags["gradlab.error.message"]
    failed = [t for t in study_of(parent).trials if t.state == TrialState.FAIL]
    assert [t.params["optimizer.lr"] for t in failed] == [0.02] and failed[0].user_attrs[search.FAILED]


def test_a_sweeper_that_crashes_before_any_trial_fails_its_parent(cli, temp_store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the study's storage is locked")

    monkeypatch.setattr(search, "run", broken)
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "train.epochs=20", "tracking.plots=none")
    assert code == 1 and "the study's storage is locked" in err
    (parent,), children = runs_of(temp_store, "optuna_lr_momentum")
    assert children == [] and parent.info.status == "FAILED"  # not FINISHED with nothing in it
    assert parent.data.tags["gradlab.error.message"] == "the study's storage is locked"
    assert parent.data.tags["gradlab.error.type"] == "RuntimeError"


def test_a_stored_study_made_to_maximise_is_not_resumed_as_one(cli, temp_store, tmp_path):
    journal = str(tmp_path / "old.journal")
    optuna.create_study(storage=search.open_storage(journal), study_name="old", direction="maximize")
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "train.epochs=20", "tracking.plots=none",
                       f"hydra.sweeper.storage={journal}", "hydra.sweeper.study_name=old")
    assert code == 1 and "the study 'old'" in err and "maximises" in err
    (parent,), children = runs_of(temp_store, "optuna_lr_momentum")
    assert children == [] and parent.info.status == "FAILED"


def test_the_pruner_stops_trials_inside_their_batch_and_their_runs_say_pruned(cli, temp_store, tmp_path):
    epochs, warmup = 600, 100
    code, out, err = cli("-cd", SWEEPS, "-cn", "optuna_pruned_mlp", "hydra.sweeper.n_trials=16", f"train.epochs={epochs}",
                         f"hydra.sweeper.pruner.n_warmup_steps={warmup}")
    assert code == 0, err
    assert out.count("8 jobs in 1 batch (sizes 8)") == 2  # two batches of 8 trials, each one program
    (parent,), children = runs_of(temp_store, "optuna_pruned_mlp")
    study = study_of(parent)
    states = {t.number: t.state for t in study.trials}
    pruned = [c for c in children if c.data.tags["gradlab.outcome"] == "pruned"]
    second = [c for c in children if int(c.data.tags["gradlab.trial"]) >= 8]
    assert pruned and all(int(c.data.tags["gradlab.trial"]) >= 8 for c in pruned)  # n_startup_trials=8
    assert any(c.data.tags["gradlab.outcome"] == "completed" for c in second)  # the others of its batch went on
    assert {int(c.data.tags["gradlab.trial"]) for c in pruned} == {n for n, s in states.items() if s == TrialState.PRUNED}
    startup = [t for t in study.trials if t.number < 8]
    for c in pruned:
        step = int(c.data.tags["gradlab.pruned_step"])
        assert c.info.status == "FINISHED" and warmup <= step < epochs
        assert c.data.metrics["epochs_run"] == step
        assert int(history(temp_store, c.info.run_id)[-1]["epoch"]) == step  # its history kept, up to that step
        trial = study.trials[int(c.data.tags["gradlab.trial"])]
        # The median rule by hand: worse than the median of the finished trials at that step.
        assert trial.intermediate_values[step] > statistics.median(t.intermediate_values[step] for t in startup)
    for c in second:
        if c.data.tags["gradlab.outcome"] == "completed":
            assert c.data.metrics["epochs_run"] == epochs

    folder = compare.report(Store(), parent=parent.info.run_id, out=tmp_path / "report")
    assert {"search_progress.png", "search_curves.png", "search_space.png", "search_importance.png"} <= {
        p.name for p in folder.iterdir()}
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best trial {best.number}: " in (folder / "summary.md").read_text()
    found = optuna.importance.get_param_importances(study)  # Optuna's own numbers, in the report
    assert set(found) == {"optimizer.lr", "optimizer.momentum"}
    assert f"optimizer.lr {found['optimizer.lr']:.2f}" in (folder / "summary.md").read_text()
    assert int(parent.data.tags["gradlab.jobs_pruned"]) == len(pruned)


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_repeating_its_finished_trials(temp_store, tmp_path):
    args = [sys.executable, "-m", "gradlab", "-cd", "sweeps", "-cn", "optuna_lr_momentum", "hydra.sweeper.n_trials=6",
            "hydra.sweeper.n_jobs=2", "train.epochs=100000", "train.log_every=100", "tracking.plots=none",
            f"hydra.sweep.dir={tmp_path}/ms"]
    proc = Started(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: store_made(temp_store) and len(runs_of(temp_store, "optuna_lr_momentum")[1]) >= 3,
                 timeout=180, proc=proc)  # the first batch recorded, the second training
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGINT, err[-2000:]
    (parent,), children = runs_of(temp_store, "optuna_lr_momentum")
    assert parent.info.status == "KILLED"
    first = {c.data.tags["gradlab.trial"]: c for c in children if c.data.tags["gradlab.outcome"] != "killed"}
    killed = [c for c in children if c.data.tags["gradlab.outcome"] == "killed"]
    assert set(first) == {"0", "1"} and len(killed) == 2

    done = subprocess.run([*args, "tracking.skip_finished=true"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (resumed,), children = runs_of(temp_store, "optuna_lr_momentum")
    assert resumed.info.run_id == parent.info.run_id and resumed.info.status == "FINISHED"
    study = study_of(resumed)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6  # n_trials, the interrupted ones not counted
    params = [(t.params["optimizer.lr"], t.params["optimizer.momentum"]) for t in complete]
    assert len(set(params)) == 6  # nothing finished was run again...
    interrupted = {(float(c.data.params["optimizer.lr"]), float(c.data.params["optimizer.momentum"])) for c in killed}
    assert interrupted <= set(params)  # ...and what a signal stopped ran to its end
    results = [c for c in children if c.data.tags["gradlab.outcome"] != "killed"]
    assert len(results) == 6 and {c.data.tags["gradlab.trial"] for c in first.values()} <= {
        c.data.tags["gradlab.trial"] for c in results}


@pytest.mark.parametrize("objective", ["auto", "train_loss"])
def test_a_search_minimises_the_sweeps_objective_and_its_best_trial_is_the_parents_best_run(cli, temp_store, objective):
    code, _, err = cli("-cd", SWEEPS, "-cn", "optuna_lr_momentum", "hydra.sweeper.sampler.name=grid",
                       "optimizer.lr=choice(0.001,0.01,0.1)", "optimizer.momentum=0.9", "train.epochs=1500",
                       "tracking.plots=none", f"tracking.objective={objective}")
    assert code == 0, err
    (parent,), children = runs_of(temp_store, "optuna_lr_momentum")
    run_of = {int(c.data.tags["gradlab.trial"]): c for c in children}
    for t in study_of(parent).trials:
        m = run_of[t.number].data.metrics
        if run_of[t.number].data.tags["gradlab.outcome"] == "diverged":
            expected = math.inf  # a result, the worst one
        elif objective == "train_loss":
            expected = m["final_train_loss"]
        elif m["at_optimum"] == 1.0:  # auto, an optimum known: the epochs to reach it...
            expected = m["epochs_to_optimum"]
        else:  # ...else more than the budget of 1500, by log10 of how far above the tolerance it ended
            expected = 1501 + math.log10(m["excess_loss"] / (1e-3 * m["optimal_train_loss"] + 1e-9))
        assert t.value == pytest.approx(expected, rel=1e-12)
    assert {c.data.params["verdict"] for c in children} == {"at_optimum", "slow", "diverged"}
    best = min((t for t in study_of(parent).trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert parent.data.tags["gradlab.best_run"] == run_of[best.number].info.run_id
