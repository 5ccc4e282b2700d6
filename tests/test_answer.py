"""A sweep's answer: what "best" means (tracking.objective), a run's outcome and verdict, seeds as
replicates, the convergence map; the parent run, the report, the API and a search agree on it.

References are written out here: the thermometer's updates as a plain NumPy loop (its epochs to
the optimum and its verdict), orders by the rule spelled out, p-values of the exact signed-rank
distribution by hand."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from gradlab import compare, convergence, ranking
from gradlab.tracking import Store, query

T_U = np.array([35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4])
T_C = np.array([0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0])


def runs_of(uri: str, experiment: str):
    c = mlflow.MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("gradlab.role") == "sweep"],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


# ------------------------------------------------------------------ a plain loop's answer
def plain_loop(optimizer: str, lr: float, epochs: int) -> dict:
    """The thermometer ×0.1, w·x + b from (1, 0), mean squared error, float64: torch.optim.SGD's
    update written out (momentum 0.9 for sgd_momentum). Its verdict and epochs to the optimum as
    gradlab defines them: within 1e-3·optimum + 1e-9 of the least-squares loss at the end, and the
    first epoch from which every later loss stays there."""
    x, y = 0.1 * T_U, T_C
    design = np.stack([x, np.ones_like(x)], 1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    optimum = float(((design @ coef - y) ** 2).mean())
    level = optimum + 1e-3 * optimum + 1e-9
    w, b, buf, losses = 1.0, 0.0, None, []
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(epochs):
            err = w * x + b - y
            loss = float((err ** 2).mean())
            g = np.array([(2 * err * x).mean(), (2 * err).mean()])
            if not (math.isfinite(loss) and np.isfinite(g).all()):
                return {"verdict": "diverged"}
            losses.append(loss)
            if optimizer == "sgd_momentum":
                buf = g if buf is None else 0.9 * buf + g
                g = buf
            w, b = w - lr * g[0], b - lr * g[1]
        final = float(((w * x + b - y) ** 2).mean())
    if not math.isfinite(final):
        return {"verdict": "diverged"}
    if final > level:
        return {"verdict": "slow", "excess": final - optimum}
    above = [k for k, v in enumerate(losses) if v > level]
    return {"verdict": "at_optimum", "epochs": above[-1] + 1 if above else 0}


GRID = ["optimizer=gd,sgd_momentum", "optimizer.lr=0.001,0.01,0.1", "data.scaling=factor", "data.val_fraction=null",
        "train.dtype=float64", "model.start.w=1", "model.start.b=0", "train.epochs=3000", "tracking.plots=none",
        "hydra/launcher=batched", "tracking.experiment=answer"]


def test_rank_one_the_best_run_and_the_reports_best_row_are_one_run_at_the_optimum_and_the_fastest(cli, temp_store, tmp_path):
    code, _, err = cli("-m", *GRID)
    assert code == 0, err
    (parent,), children = runs_of(temp_store, "answer")
    truth = {(c.data.params["optimizer.name"] + ("_momentum" if c.data.params.get("optimizer.momentum", "0.0") != "0.0" else ""),
              float(c.data.params["optimizer.lr"])): c for c in children}
    reference = {k: plain_loop(k[0], k[1], 3000) for k in truth}
    assert {v["verdict"] for v in reference.values()} == {"at_optimum", "slow", "diverged"}  # the grid has all three
    for k, c in truth.items():  # each run's verdict and epochs, as the plain loop has them
        assert c.data.params["verdict"] == reference[k]["verdict"], k
        if reference[k]["verdict"] == "at_optimum":
            assert c.data.metrics["epochs_to_optimum"] == reference[k]["epochs"], k
    order = sorted(truth, key=lambda k: ({"at_optimum": 0, "slow": 1, "diverged": 2}[reference[k]["verdict"]],
                                         reference[k].get("epochs", reference[k].get("excess", 0)), truth[k].info.run_name))
    first = truth[order[0]].info.run_id
    assert parent.data.tags["gradlab.best_run"] == first and parent.data.tags["gradlab.best_verdict"] == "at_optimum"
    note = parent.data.tags["mlflow.note.content"]
    rows = [line.split(" | ")[1] for line in note.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows == [truth[k].info.run_name.split(" · ")[0] for k in order]  # diverged ones included, last
    folder = compare.report(Store(), experiment="answer", out=tmp_path / "report")
    assert pd.read_csv(folder / "summary.csv")["run_id"].tolist() == [truth[k].info.run_id for k in order]
    assert pd.read_csv(folder / "best.csv")["configuration"].iloc[0] == truth[order[0]].info.run_name.split(" · ")[0]
    import gradlab

    frame = gradlab.runs(sweep=parent.info.run_id)
    assert frame.loc[frame["rank"] == 1, "run_id"].tolist() == [first]
    # the parent holds the whole ranking and the map, drawn at the sweep's end
    client = mlflow.MlflowClient(temp_store)
    assert {"ranking.csv", "ranking.html", "convergence_map.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    whole = pd.read_csv(client.download_artifacts(parent.info.run_id, "ranking.csv", str(tmp_path)))
    assert whole["run_id"].tolist() == [truth[k].info.run_id for k in order]
    # the map's cells against the runs' verdicts: optimizers down, learning rates across
    entries = compare.entries(compare.tidy(query.children(Store(), parent.info.run_id)))
    cells = convergence.cells(entries)
    assert (cells["row_key"], cells["col_key"], cells["rows"], cells["cols"]) == (
        "optimizer", "optimizer.lr", ["gd", "sgd_momentum"], ["0.001", "0.01", "0.1"])
    for cell in cells["cells"]:
        ref = reference[(cell["row"], float(cell["col"]))]
        assert cell["verdict"] == ref["verdict"]
        assert convergence.label(cell, False) == {"at_optimum": str(ref.get("epochs")), "diverged": "✖"}.get(
            ref["verdict"], "+" + convergence.short(ref.get("excess", 0.0)))


def test_a_sweep_over_two_problems_names_a_best_run_for_each_and_never_compares_them(cli, temp_store):
    code, _, err = cli("-m", "model=linear,quadratic", "optimizer=adam", "optimizer.lr=0.01,0.1", "data.val_fraction=null",
                       "train.epochs=300", "tracking.plots=none", "hydra/launcher=batched", "tracking.experiment=two")
    assert code == 0, err
    (parent,), children = runs_of(temp_store, "two")
    assert "gradlab.best_run" not in parent.data.tags  # no one best across problems
    best = json.loads(parent.data.tags["gradlab.best_runs"])
    assert set(best) == {"thermometer · linear · mse", "thermometer · quadratic · mse"}
    for problem, run_id in best.items():
        model = problem.split(" · ")[1]
        mine = [c for c in children if c.data.params["model.name"] == model]
        lowest = min(mine, key=lambda c: (c.data.metrics["at_optimum"] == 0, c.data.metrics.get("epochs_to_optimum", 0),
                                          c.data.metrics["excess_loss"]))
        assert run_id == lowest.info.run_id
    note = parent.data.tags["mlflow.note.content"]
    assert note.count("best first:") == 2 and note.count("| 1 | ") == 2


# ------------------------------------------------------------------------------- rules
def entry(name, outcome, metrics, objective="auto", seed="", settings=(("k", "v"),), problem_="p"):
    e = ranking.entry(name, name, outcome, {"tracking.objective": objective, "train.epochs": 100}, metrics)
    e.seed, e.settings, e.problem = seed, settings, problem_
    return e


OPT = {"optimal_train_loss": 1.0}


def test_what_best_means_is_the_objective_the_sweep_chose():
    runs = {"fast": {**OPT, "final_train_loss": 1.0, "final_val_loss": 9.0, "best_val_loss": 9.0, "excess_loss": 0.0, "at_optimum": 1.0, "epochs_to_optimum": 10.0},
            "slow_there": {**OPT, "final_train_loss": 1.0, "final_val_loss": 8.0, "best_val_loss": 8.0, "excess_loss": 1e-9, "at_optimum": 1.0, "epochs_to_optimum": 90.0},
            "near": {**OPT, "final_train_loss": 1.01, "final_val_loss": 2.0, "best_val_loss": 1.5, "excess_loss": 0.01, "at_optimum": 0.0},
            "far": {**OPT, "final_train_loss": 3.0, "final_val_loss": 1.0, "best_val_loss": 0.5, "excess_loss": 2.0, "at_optimum": 0.0}}
    expected = {"auto": ["fast", "slow_there", "near", "far", "blew"],
                "epochs_to_optimum": ["fast", "slow_there", "near", "far", "blew"],
                "excess": ["fast", "slow_there", "near", "far", "blew"],  # at the optimum they tie: fewest epochs first
                "train_loss": ["fast", "slow_there", "near", "far", "blew"],
                "val_loss": ["far", "near", "slow_there", "fast", "blew"],
                "best_val_loss": ["far", "near", "slow_there", "fast", "blew"]}
    for objective, order in expected.items():
        es = [entry(n, "completed", m, objective) for n, m in runs.items()] + [entry("blew", "diverged", {**OPT}, objective)]
        assert [e.name for e in ranking.ranked(es)["p"]] == order, objective
        scores = {e.name: e.score for e in es}  # what a search minimises: the same order
        assert sorted(scores, key=lambda n: (scores[n], n)) == order, objective
    # where no optimum is known, auto is the validation loss; a run without a result ranks last
    plain = [entry("a", "completed", {"final_train_loss": 1.0, "final_val_loss": 3.0}),
             entry("b", "completed", {"final_train_loss": 2.0, "final_val_loss": 2.0}),
             entry("c", "pruned", {"final_train_loss": 0.1}), entry("d", "killed", {})]
    assert [e.name for e in ranking.ranked(plain)["p"]] == ["b", "a", "c", "d"]
    assert [e.verdict for e in plain] == ["no_optimum", "no_optimum", "no_optimum", None]


def test_the_outcome_and_the_verdict_are_columns_and_codes_the_ui_can_use():
    params, codes = ranking.fate("completed", {**OPT, "at_optimum": 1.0, "epochs_to_optimum": 7.0}, "auto", 100)
    assert params == {"outcome": "completed", "verdict": "at_optimum"}
    assert codes == {"outcome_code": 0.0, "verdict_code": 0.0, "objective": 7.0}
    params, codes = ranking.fate("diverged", {**OPT, "at_optimum": 0.0}, "auto", 100)
    assert params == {"outcome": "diverged", "verdict": "diverged"} and "objective" not in codes
    assert codes["verdict_code"] == ranking.VERDICTS.index("diverged") == 2
    params, _ = ranking.fate("killed", {}, "auto", 100)
    assert params == {"outcome": "killed"}  # no verdict without a result
    # slow: more than the budget of epochs, growing with the excess (tolerance 1e-3·1 + 1e-9)
    _, slow = ranking.fate("completed", {**OPT, "at_optimum": 0.0, "excess_loss": 0.1}, "auto", 100)
    assert slow["objective"] == pytest.approx(101 + math.log10(0.1 / (1e-3 + 1e-9)))


def test_seeds_are_replicates_of_a_configuration():
    a = [entry(f"a seed={k}", "completed", {**OPT, "final_train_loss": 1.0, "excess_loss": 0.0, "at_optimum": 1.0,
                                         "epochs_to_optimum": float(10 + k)}, seed=f"s={k}", settings=(("c", "a"),))
         for k in range(4)]
    b = [entry(f"b seed={k}", "completed" if k < 3 else "diverged",
               {**OPT, "final_train_loss": 1.0 + k, "excess_loss": float(k), "at_optimum": float(k == 0),
                **({"epochs_to_optimum": 5.0} if k == 0 else {})}, seed=f"s={k}", settings=(("c", "b"),))
         for k in range(4)]
    (group,) = ranking.configurations(a + b).values()
    assert [c.label for c in group] == ["a", "b"]  # 4/4 at the optimum before 1/4, however fast that one was
    first, second = group
    assert (first.n, first.count("at_optimum"), first.epochs_to_optimum()) == (4, 4, 11.5)  # median of 10..13
    assert (second.count("at_optimum"), second.count("slow"), second.count("diverged"), second.verdict()) == (1, 2, 1, "mixed")
    assert second.mean() == pytest.approx(1.0) and second.spread() == pytest.approx(1.0)  # excess 0, 1, 2 with a result
    lo, hi = second.interval()
    assert (lo, hi) == pytest.approx((1.0 - 4.302652729911275 / math.sqrt(3), 1.0 + 4.302652729911275 / math.sqrt(3)))
    assert ranking.best(a + b)["p"].name == "a seed=0"  # the best configuration's best seed
    # the map: a cell per configuration, k/n where seeds replicate
    for e in a + b:
        e.values = {"optimizer": e.name[0]}
    cells = convergence.cells(a + b)
    labels = {c["col"]: convergence.label(c, cells["seeds"]) for c in cells["cells"]}
    assert labels == {"a": "12\n4/4", "b": "5\n1/4 ✖1"}


def test_the_best_configuration_beats_the_runner_up_only_beyond_seed_noise():
    def problem(name: str, gap: float) -> list:
        return [entry(f"{c} seed={k}", "completed", {"final_train_loss": 1.0 + (gap if c == "worse" else 0) + 0.01 * k,
                                               "final_val_loss": 1.0 + (gap if c == "worse" else 0) + 0.01 * k},
                      seed=f"seed={k}", settings=(("c", c),), problem_=name) for c in ("better", "worse") for k in range(6)]

    (one,) = ranking.significance(problem("p", 0.5))
    # better on all 6 seeds: the exact two-sided signed-rank p is 2·(1/2)^6
    assert (one.best, one.runner_up, one.pairs) == ("better", "worse", 6) and one.p == pytest.approx(0.03125)
    assert "beats the runner-up `worse` beyond seed noise" in one.sentence(1)
    two = ranking.significance(problem("p", 0.5) + problem("q", 0.5))
    # Holm over two comparisons: the smaller p times 2, the next kept at least as large
    assert [c.p_holm for c in two] == pytest.approx([0.0625, 0.0625])
    assert all("is not distinguishable" in c.sentence(2) and "Holm-adjusted over 2 comparisons" in c.sentence(2) for c in two)
    (tie,) = ranking.significance(problem("p", 0.0))
    assert math.isnan(tie.p) and "tie on every one of 6 seeds" in tie.sentence(1)


def test_a_ranking_file_never_carries_a_live_spreadsheet_formula():
    import csv
    import io

    text = ranking.csv_text([{"run": "=HYPERLINK(\"http://x\")", "loss": 1.0}, {"run": "+1", "loss": math.nan}])
    assert list(csv.reader(io.StringIO(text))) == [["run", "loss"], ["'=HYPERLINK(\"http://x\")", "1.0"], ["'+1", ""]]


# ------------------------------------------------------------------------------ seeds
def test_the_seeds_sweeps_tables_have_a_row_per_configuration_with_its_spread(cli, temp_store, tmp_path):
    code, _, err = cli("-cd", str(ROOT / "sweeps"), "-cn", "seeds", "train.seed=0,1,2,3,4,5", "optimizer.lr=0.01,0.02",
                       "train.epochs=150", "tracking.plots=none")
    assert code == 0, err
    (parent,), children = runs_of(temp_store, "seeds")
    folder = compare.report(Store(), parent=parent.info.run_id, out=tmp_path / "report")
    configs = pd.read_csv(folder / "configurations.csv")
    assert len(configs) == 2 and configs["seeds"].tolist() == [6, 6]
    for row in configs.itertuples():
        lr = float(row.configuration.split("lr=")[1].split()[0])
        mine = [c for c in children if float(c.data.params["optimizer.lr"]) == lr]
        rule = "excess_loss" if "optimal_train_loss" in mine[0].data.metrics else "final_val_loss"
        values = [c.data.metrics[rule] for c in mine]
        assert row.loss_mean == pytest.approx(np.mean(values)) and row.loss_sd == pytest.approx(np.std(values, ddof=1))
    md = (folder / "summary.md").read_text()
    assert "## Best against the runner-up" in md and "Wilcoxon signed-rank over 6 paired seeds" in md
    df = compare.tidy(query.children(Store(), parent.info.run_id))
    figure = compare.figures(df, compare.curves(Store(), df), compare.swept(df), math.nan)["final_loss_vs_lr.png"]
    assert "seeds: geometric mean, band ±1 sd in log10" in figure._suptitle.get_text()


def test_the_convergence_maps_column_labels_clear_its_legend_at_25_learning_rates():
    """A dense grid's map (4 optimizers × 25 learning rates × 2 seeds): its rotated column labels,
    the axis title and the legend below them do not overlap (extents from matplotlib's renderer)."""
    lrs = [f"{v:.3g}" for v in np.logspace(-4, 1, 25)]
    varied = ["optimizer.name", "optimizer.lr", "train.seed"]
    entries = [ranking.entry(f"{o}{lr}{s}", f"{o} {lr} {s}", "diverged" if float(lr) > 1 else "completed",
                             {"optimizer.name": o, "optimizer.lr": float(lr), "train.seed": s, "train.epochs": 100},
                             {"final_train_loss": 2.0, "optimal_train_loss": 1.0, "excess_loss": 1.0}, varied,
                             f"optimizer={o} optimizer.lr={lr} train.seed={s}")
               for o in ("gd", "sgd_momentum", "adam", "rmsprop") for lr in lrs for s in (0, 1)]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = convergence.figure(convergence.cells(entries))
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = [a for a in fig.axes if a.get_visible()]
    legend = fig.legends[0].get_window_extent(renderer)
    below_cells = [t.get_window_extent(renderer) for t in ax.get_xticklabels()] + [ax.xaxis.label.get_window_extent(renderer)]
    assert all(not box.overlaps(legend) for box in below_cells)
    assert min(box.y0 for box in below_cells) > legend.y1  # the legend sits below them all
