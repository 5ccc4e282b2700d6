"""tracking.plots: which runs draw figures (all, none, auto: a single run and small sweeps all of
them, a large sweep its best runs at its end), and `gradlab plots RUN_ID` drawing any recorded
run's figures later, from its record: the files a run that drew them itself has."""

from __future__ import annotations

import math
import sys

import mlflow
import pytest
from PIL import Image

from conftest import compose
from gradlab import plots, training
from gradlab.config import Plots, from_container
from gradlab.multirun.run import run_sweep
from gradlab.options import ConfigError
from gradlab.record import Origin, draws_figures

SMALL = ["train.epochs=100", "hydra/launcher=batched"]


def _children(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent_id}'")


def _plots(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, "plots")}


def _files(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def test_which_runs_draw_figures_as_they_end():
    single, small, large, unknown = (Origin("e"), Origin("e", "p", "s", [], 100), Origin("e", "p", "s", [], 101),
                                     Origin("e", "p", "s", []))
    assert [draws_figures(Plots.auto, 100, o) for o in (single, small, large, unknown)] == [True, True, False, False]
    assert all(draws_figures(Plots.all, 0, o) for o in (single, large))
    assert not any(draws_figures(Plots.none, 100, o) for o in (single, small))


def test_tracking_plots_takes_its_three_values_and_says_so_otherwise():
    assert compose().tracking.plots is Plots.auto and compose().tracking.plots_max_children == 100
    from gradlab.api import compose as api_compose
    from gradlab.options import OverrideError

    with pytest.raises(OverrideError, match=r"^tracking.plots: Invalid value 'sometimes', expected one of \[all, none, auto\]$"):
        api_compose(["tracking.plots=sometimes"])
    from gradlab.config import validate

    with pytest.raises(ConfigError, match=r"tracking.plots_max_children=-1 is not allowed"):
        validate(compose("tracking.plots_max_children=-1"))
    # A config recorded when tracking.plots was a flag still reads (gradlab rerun, gradlab plots).
    base = {g: {"name": n} for g, n in (("data", "thermometer"), ("model", "linear"), ("grad", "autograd"),
                                        ("optimizer", "sgd"), ("device", "cpu"))}
    assert from_container({**base, "tracking": {"plots": True}}).tracking.plots is Plots.all
    assert from_container({**base, "tracking": {"plots": False}}).tracking.plots is Plots.none


def _check_choice(children: list, drawn: set[str]) -> None:
    """The documented rule written out for a sweep of one problem and four configurations (all of
    them in its description): one seed of each configuration has figures, the one with the least
    excess loss where its seeds finished (either seed of one whose seeds both diverged)."""
    configs: dict[tuple, list] = {}
    for r in children:
        configs.setdefault((r.data.params["optimizer.name"], r.data.params["optimizer.lr"]), []).append(r)
    assert len(configs) == 4
    for runs in configs.values():
        (one,) = drawn & {r.info.run_id for r in runs}
        if all("excess_loss" in r.data.metrics for r in runs):
            assert one == min(runs, key=lambda r: r.data.metrics["excess_loss"]).info.run_id


def test_a_sweep_above_the_threshold_draws_its_best_runs_and_plots_draws_any_other(temp_store, tmp_path, monkeypatch):
    outcome = run_sweep(["optimizer=gd,adam", "optimizer.lr=0.01,0.1", "train.seed=0,1", *SMALL,
                         "tracking.plots_max_children=3", "tracking.experiment=figs", f"hydra.sweep.dir={tmp_path}"])
    client = mlflow.MlflowClient(temp_store)
    children = _children(client, outcome.parent_id)
    assert len(children) == 8 and outcome.failed == 0
    assert not any(r.data.metrics.get("at_optimum") == 1.0 for r in children)  # the reference's premise
    drawn = {r.info.run_id for r in children if _plots(client, r.info.run_id)}
    _check_choice(children, drawn)
    for r in children:  # every child's record is whole: params, final metrics, history.csv, params.json
        assert r.data.params["optimizer.lr"] in ("0.01", "0.1") and "epochs_run" in r.data.metrics
        assert ("final_train_loss" in r.data.metrics) != ("diverged_step" in r.data.metrics)
        assert {"history.csv", "params.json", "config.yaml"} <= _files(client, r.info.run_id)
    tag = client.get_run(outcome.parent_id).data.tags
    assert tag["gradlab.figures"].startswith("Figures drawn for 4 of 8 children")
    assert "gradlab plots RUN_ID" in tag["gradlab.figures"] and tag["gradlab.figures"] in tag["mlflow.note.content"]

    # `gradlab plots` on a child that has none: the figures a run of that config draws itself.
    other = next(r for r in children if r.info.run_id not in drawn and r.data.tags["gradlab.outcome"] == "completed")
    code = _main(monkeypatch, "plots", other.info.run_id)
    assert code == 0
    p = other.data.params
    alone = training.train(compose("train.epochs=100", f"optimizer={'gd' if p['optimizer.name'] == 'gd' else 'adam'}",
                                   f"optimizer.lr={p['optimizer.lr']}", f"train.seed={p['train.seed']}"))
    expected = set(plots.figures(training.plot_data(alone[0], 0, alone[1], "a title")))
    assert _plots(client, other.info.run_id) == expected == {"plots/loss_curves.png", "plots/fit.png", "plots/trajectory.png"}
    png = client.download_artifacts(other.info.run_id, "plots/loss_curves.png", str(tmp_path))
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (640, 420)  # 6.4 × 4.2 inches at 100 dpi, as a run draws it
        assert len(image.getcolors(1 << 16)) > 10  # something is drawn on it


def test_plots_of_a_run_that_does_not_exist_is_one_line_and_exit_2(monkeypatch, capsys):
    code = _main(monkeypatch, "plots", "0123456789abcdef")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gradlab: error: no run 0123456789abcdef")


@pytest.mark.parametrize("setting", ["none", "all"])
def test_none_draws_no_child_figures_and_all_draws_every_one(setting, temp_store, tmp_path):
    outcome = run_sweep(["optimizer.lr=0.01,0.02,0.03", *SMALL, f"tracking.plots={setting}", "tracking.plots_max_children=1",
                         f"tracking.experiment=figs_{setting}", f"hydra.sweep.dir={tmp_path}"])
    client = mlflow.MlflowClient(temp_store)
    children = _children(client, outcome.parent_id)
    assert len(children) == 3
    for r in children:
        assert "history.csv" in _files(client, r.info.run_id)
        assert _plots(client, r.info.run_id) == (set() if setting == "none" else
                                                 {"plots/loss_curves.png", "plots/fit.png", "plots/trajectory.png"})
    assert f"tracking.plots={setting}" in client.get_run(outcome.parent_id).data.tags["gradlab.figures"]


def _main(monkeypatch, *args: str) -> int:
    import gradlab.cli

    monkeypatch.setattr(sys, "argv", ["gradlab", *args])
    try:
        gradlab.cli.main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def test_draw_plots_reads_a_data_file_a_stored_config_names_only_when_trusted(temp_store, tmp_path):
    import gradlab
    from gradlab.options import DataError
    from gradlab.record import Job, record

    data = tmp_path / "line.csv"
    data.write_text("x,y\n" + "".join(f"{x},{2 * x + 1}\n" for x in range(8)))
    run_id = record(Job(compose("data=csv", f"data.path={data}", "train.epochs=20", "tracking.plots=none")), Origin("csv"),
                    quiet=True).run_id
    client = mlflow.MlflowClient(temp_store)
    assert _plots(client, run_id) == set() and "history.csv" in _files(client, run_id)
    with pytest.raises(DataError, match=f"^run {run_id}'s config reads data.path='{data}' as you; .*--trust-data") as refused:
        gradlab.draw_plots(run_id)
    assert "\n" not in str(refused.value) and _plots(client, run_id) == set()
    drawn = gradlab.draw_plots(run_id, trust_data=True)
    assert drawn == {run_id: ["plots/fit.png", "plots/loss_curves.png", "plots/trajectory.png"]}
    assert _plots(client, run_id) == set(drawn[run_id])


def test_a_large_sweep_chooses_the_best_seed_of_each_configuration_its_description_lists():
    from gradlab import ranking
    from gradlab.multirun.figures import chosen

    def entry(data: str, lr: float, seed: int, loss: float, outcome: str = "completed"):
        return ranking.entry(f"{data}-{lr:g}-{seed}", f"lr={lr:g} seed={seed}", outcome,
                             {"data.name": data, "model.name": "linear", "train.loss": "mse", "optimizer.lr": lr,
                              "train.seed": seed}, {"final_train_loss": loss}, ["optimizer.lr", "train.seed"])

    # One problem, 45 configurations (lr k/100) of two seeds; configuration k's losses k + 0.5 and k
    # (seed 1 the better), except k = 7, whose seeds both diverge: it ranks last.
    one = [entry("aaa", k / 100, seed, k + 0.5 * (1 - seed)) for k in range(1, 46) for seed in (0, 1) if k != 7]
    one += [entry("aaa", 0.07, seed, math.nan, "diverged") for seed in (0, 1)]
    # The description lists a problem's best 40 configurations: here k = 1..41 but 7.
    assert chosen(one, 10) == [f"aaa-{k / 100:g}-1" for k in range(1, 42) if k != 7]
    assert sorted(chosen(one, 90)) == sorted(e.run_id for e in one)  # a sweep that small: every run
    # Two problems: 20 rows each, so each one's 3 configurations are listed, the best seed of each.
    two = [entry(d, lr, seed, loss) for (d, lr), pair in {("aaa", 0.1): (5.0, 6.0), ("aaa", 0.2): (2.0, 1.0),
                                                          ("bbb", 0.1): (8.0, 7.0), ("bbb", 0.2): (9.0, 9.5),
                                                          ("bbb", 0.3): (1.0, 3.0)}.items()
           for seed, loss in enumerate(pair)]
    assert chosen(two, 3) == ["aaa-0.2-1", "aaa-0.1-0", "bbb-0.3-0", "bbb-0.1-1", "bbb-0.2-0"]
