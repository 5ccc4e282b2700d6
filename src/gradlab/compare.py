"""The comparison report of a sweep: runs read through MLflow -> a tidy DataFrame -> seaborn
figures and a summary table (CSV and Markdown), written to a folder and logged to the sweep's
parent run under `report/`.

    gradlab-compare                         the latest sweep in the store
    gradlab-compare --experiment NAME       the latest sweep of that experiment
    gradlab-compare --parent RUN_ID         that sweep
    gradlab-compare --experiment NAME --all every run of the experiment, whichever sweep
    options: --out DIR (default reports/<experiment>), --threshold LOSS (time-to-threshold)
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gradlab import report_search
from gradlab.ranking import problem as problem_of
from gradlab.tracking import Store, TrackingError, query
from gradlab.tracking.query import RunRecord

# The axes a sweep varies, as columns of the tidy frame (in the order figures prefer them).
AXES = ["optimizer", "lr", "schedule", "scaling", "batch", "seed", "method", "problem"]
METRICS = ["final_train_loss", "final_val_loss", "best_val_loss", "optimal_train_loss", "excess_loss", "converged",
           "epochs_run", "train_seconds"]
NOT_FINITE = {"diverged": "X", "failed": "s", "killed": "s"}
# Markers of runs without a final loss: black and grey, colours no optimizer's line has.
NOT_FINITE_COLOR = {"diverged": "black", "failed": "0.55", "killed": "0.55"}


class CompareError(RuntimeError):
    """Nothing to compare, or no such sweep: the message says what there is."""


# ----------------------------------------------------------------------------- reading
def tidy(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run: typed params (dotted names), metrics, and the comparison axes."""
    if not records:
        return pd.DataFrame()
    # A resumed sweep may hold a config twice (an old FAILED try, then its re-run): keep the latest.
    latest = {r.tag("config_hash", r.id): r for r in sorted(records, key=lambda r: r.start_time)}
    df = pd.DataFrame([{"run_id": r.id, "run_name": r.name, "status": r.status, "outcome": r.outcome,
                        "overrides": r.tag("overrides"), "trial": float(r.tag("trial") or "nan"), **r.params,
                        **{m: r.metrics.get(m, np.nan) for m in METRICS}} for r in latest.values()])
    df["objective"] = df["final_val_loss"].where(df["final_val_loss"].notna(), df["final_train_loss"])
    df.loc[~df["outcome"].isin(["completed", "converged"]), "objective"] = np.nan
    df["seconds_per_epoch"] = df["train_seconds"] / df["epochs_run"].where(df["epochs_run"] > 0)

    def col(name, default):
        return df[name] if name in df else pd.Series([default] * len(df), index=df.index)

    momentum = col("optimizer.momentum", 0.0).fillna(0.0)
    df["optimizer"] = [f"{n} m={m:.3g}" if m else str(n) for n, m in zip(col("optimizer.name", ""), momentum)]
    df["lr"] = col("optimizer.lr", np.nan).astype(float)
    df["schedule"] = col("schedule.name", "constant").fillna("constant").astype(str)  # runs from before schedules: constant
    scaling, factor = col("data.scaling", "none"), col("data.scale_factor", 1.0)
    df["scaling"] = [f"×{f:g}" if s == "factor" else str(s) for s, f in zip(scaling, factor)]
    df["batch"] = ["full" if pd.isna(b) else str(int(b)) for b in col("train.batch_size", np.nan)]
    df["seed"] = col("train.seed", 0)
    df["method"] = [f"{g}@numpy" if d == "numpy" else str(g) for g, d in zip(col("grad.name", ""), col("device.name", ""))]
    df["problem"] = [problem_of(p) for p in df.to_dict("records")]
    return df.reset_index(drop=True)


def swept(df: pd.DataFrame) -> list[str]:
    """The axes that take more than one value in these runs."""
    return [a for a in AXES if a in df and df[a].nunique(dropna=False) > 1]


def curves(store: Store, df: pd.DataFrame, keys=("train_loss", "val_loss")) -> pd.DataFrame:
    """Long frame of logged loss curves: run_id, step, metric, value."""
    rows = [(rid, step, key, value) for rid in df["run_id"] for key in keys
            for step, value in query.metric_history(store, rid, key)]
    return pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def select(store: Store, experiment: str | None, parent: str | None, everything: bool):
    """(experiment name, parent RunRecord or None, tidy frame of the runs to compare)."""
    if parent:
        prun = query.run(store, parent)
        exp_id = prun.experiment_id
    else:
        if experiment and query.experiment_id(store, experiment) is None:
            names = query.experiment_names(store)
            raise CompareError(f"no experiment {experiment!r} in {store.uri}; there are: {', '.join(names) or 'none'}")
        prun = query.latest_sweep(store, experiment)
        if prun is None and not experiment:
            raise CompareError(f"no sweep in {store.uri} yet: run one first, e.g. make sweep SWEEP=lr_scale_optimizer")
        exp_id = prun.experiment_id if prun else query.experiment_id(store, experiment)
    name = query.experiment_name(store, exp_id)
    records = query.experiment_runs(store, exp_id) if everything or prun is None else query.children(store, prun.id)
    df = tidy(records)
    if df.empty:
        what = f"sweep run {prun.id}" if prun is not None and not everything else f"experiment {name!r}"
        raise CompareError(f"{what} has no runs to compare in {store.uri}; run a sweep first, "
                           "e.g. make sweep SWEEP=lr_scale_optimizer")
    return name, prun, df


# ------------------------------------------------------------------------------ tables
def threshold_steps(df: pd.DataFrame, cur: pd.DataFrame, threshold: float) -> pd.Series:
    """First logged step at which each run's training loss is <= threshold (NaN if never)."""
    train = cur[cur["metric"] == "train_loss"]
    hit = train[train["value"] <= threshold].groupby("run_id")["step"].min()
    return df["run_id"].map(hit)


def default_threshold(df: pd.DataFrame) -> float:
    """5% above the best reachable loss: the closed-form optimum where known, else the best run's."""
    if df["problem"].nunique() > 1:  # one threshold cannot fit different problems' losses
        return float("nan")
    opt = df["optimal_train_loss"].dropna()
    base = opt.min() if len(opt) else df["final_train_loss"].min()
    return float(base * 1.05) if pd.notna(base) and base > 0 else float("nan")


def markdown(df: pd.DataFrame) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def best_group(axes: list[str]) -> list[str]:
    """Best configuration per problem, optimizer and scaling where they vary, else per the first axis."""
    return [a for a in ("problem", "optimizer", "scaling") if a in axes] or axes[:1]


def ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Best first within each problem (runs on different problems never rank against each other):
    at the optimum first, then by the objective; runs without a result last (ranking.py's order)."""
    key = df.assign(_none=df["objective"].isna(), _off=~(df["converged"] == 1), _obj=df["objective"].fillna(np.inf))
    return key.sort_values(["problem", "_none", "_off", "_obj", "run_name"]).drop(columns=["_none", "_off", "_obj"])


def tables(df: pd.DataFrame, axes: list[str]) -> dict[str, pd.DataFrame]:
    cols = ["run_name", *axes, "outcome", "converged", "objective", "excess_loss", "final_train_loss", "final_val_loss",
            "epochs_run", "train_seconds", "epochs_to_threshold", "seconds_to_threshold"]
    order = ranked(df)
    ranking = order[[c for c in cols if c in order]].reset_index(drop=True)
    ranking.insert(0, "rank", order.groupby("problem", sort=False).cumcount().to_numpy() + 1)  # within its problem
    group = best_group(axes)
    ok = ranked(df[df["objective"].notna()])
    best = ok.groupby(group, sort=False).head(1) if group and len(ok) else ok.head(1)
    best = best[[c for c in cols if c in best]].reset_index(drop=True)
    counts = df["outcome"].value_counts().rename_axis("outcome").reset_index(name="runs")
    return {"ranking": ranking, "best": best, "counts": counts}


# ----------------------------------------------------------------------------- figures
SCALING_ORDER = ["none", "standardize", "minmax"]  # factors (×k) go between none and standardize
OPTIMIZER_ORDER = ["gd", "sgd", "sgd_momentum", "adam", "adamw", "rmsprop", "adagrad", "asgd", "adadelta", "adamax", "nadam",
                   "radam", "rprop", "lbfgs"]


def colours(df: pd.DataFrame, hue: str | None) -> dict | None:
    """One colour per value of the hue (an optimizer keeps its colour in every figure of a report)."""
    if hue is None:
        return None
    import seaborn as sns

    values = sorted(df[hue].dropna().unique(), key=lambda v: (OPTIMIZER_ORDER.index(str(v).split()[0])
                                                              if str(v).split()[0] in OPTIMIZER_ORDER else 99, str(v)))
    if hue != "optimizer":
        values = _order(df[hue])
    return dict(zip(values, sns.color_palette("tab10" if len(values) <= 10 else "husl", len(values))))


def _order(values) -> list:
    vals = sorted(set(values), key=str)
    if any(str(v).startswith("×") or v in SCALING_ORDER for v in vals):
        rank = {"none": 0, "standardize": 2, "minmax": 3}
        return sorted(vals, key=lambda v: (rank.get(v, 1), str(v)))
    return vals


def _against_lr(df, y, ylabel, title, hue, col, axes, palette):
    import seaborn as sns

    g = sns.relplot(data=df[df[y].notna()], x="lr", y=y, hue=hue, col=col, kind="line", marker="o", height=3.6,
                    aspect=1.1, facet_kws={"sharey": col != "problem"}, errorbar=("sd" if "seed" in axes else None),
                    hue_order=list(palette) if palette else None, palette=palette,
                    col_order=_order(df[col]) if col else None)
    g.set(xscale="log", yscale="log")
    panels = [(None, g.ax)] if col is None else list(zip(g.col_names, g.axes.flat))
    for value, ax in panels:
        sub = df[df[col] == value] if col else df
        bottom, top = ax.get_ylim()
        for outcome, marker in NOT_FINITE.items():
            bad = sub[sub["outcome"] == outcome]
            if len(bad):
                ax.scatter(bad["lr"], [top] * len(bad), marker=marker, s=70, zorder=5, clip_on=False,
                           color=NOT_FINITE_COLOR[outcome], label=f"{outcome} (no final loss)")
        ax.set_ylim(bottom, top)  # the markers sit on the top edge; they are not values
        ax.set_xlabel("learning rate")
    g.set_ylabels(ylabel)
    extra = {}
    for _, ax in panels:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            extra.setdefault(lab, h)
    if extra:  # the diverged/failed markers join the hue legend
        if g.legend is not None:
            for h, t in zip(g.legend.legend_handles, g.legend.texts):
                extra.setdefault(t.get_text(), h)
            g.legend.remove()
            g.figure.subplots_adjust(right=0.99)  # give back the room seaborn kept for its own legend
        g.figure.legend(list(extra.values()), list(extra), loc="center left", bbox_to_anchor=(1.0, 0.5), title=hue)
    g.figure.suptitle(title, y=1.03)
    return g.figure


def figures(df: pd.DataFrame, cur: pd.DataFrame, axes: list[str], threshold: float) -> dict:
    """The report's figures that apply to what the sweep varied, by file name."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    hue = "optimizer" if "optimizer" in axes else next((a for a in axes if a not in ("lr", "seed", "problem")), None)
    # Panels by problem where problems differ (their losses do not share an axis), else by scaling
    col = "problem" if "problem" in axes else ("scaling" if "scaling" in axes and hue != "scaling" else None)
    palette = colours(df, hue)
    out = {}
    if "lr" in axes:
        out.update(_lr_figures(df, hue, col, axes, palette))
    if len(axes) >= 2:
        out["best_loss_heatmap.png"] = _grid_heatmap(df, axes)
    ok = df[df["objective"].notna()]
    if len(ok) and len(cur):
        out["loss_curves_best.png"] = _best_curves(ok, cur, hue or (axes[0] if axes else None), axes, palette)
    if "seed" in axes:
        out["seed_spread.png"] = _seed_spread(df, cur, axes)
    if "seconds_to_threshold" in df and df["seconds_to_threshold"].notna().any():
        out["time_to_threshold.png"] = _time_to_threshold(df, threshold, hue, palette)
    if "method" in axes:
        out["time_per_epoch.png"] = _time_per_epoch(df)
    return out


def _lr_figures(df, hue, col, axes, palette) -> dict:
    """Final loss and excess loss against the learning rate, log-log, diverged runs marked."""
    out = {"final_loss_vs_lr.png": _against_lr(df, "objective", "final loss (validation, else training)",
                                               "Final loss against learning rate", hue, col, axes, palette)}
    if df["excess_loss"].notna().any():
        floor = 1e-9  # float rounding leaves |excess| ~ 1e-8 at the optimum; log axes need > 0
        d = df.assign(excess=df["excess_loss"].clip(lower=floor).where(df["objective"].notna()))
        out["excess_loss_vs_lr.png"] = _against_lr(d, "excess", f"excess training loss (floor {floor:g})",
                                                   "Convergence: excess training loss against learning rate",
                                                   hue, col, axes, palette)
    return out


def _grid_heatmap(df: pd.DataFrame, axes: list[str]):
    """The best value of each cell of the grid's first two axes (min over the others): the excess
    loss where an optimum is known (how close each got), else the objective; cells never run and
    cells without a result say so."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows, cols = ("optimizer", "lr") if {"optimizer", "lr"} <= set(axes) else tuple(axes[:2])
    # the excess where every finished run has one (an optimum is known for each problem), else the objective
    finished = df["objective"].notna()
    value = "excess_loss" if finished.any() and df.loc[finished, "excess_loss"].notna().all() else "objective"
    table = df.assign(excess_loss=df["excess_loss"].clip(lower=1e-9).where(df["objective"].notna())).pivot_table(
        index=rows, columns=cols, values=value, aggfunc="min", dropna=False)
    ran = df.pivot_table(index=rows, columns=cols, values="run_id", aggfunc="count", dropna=False).reindex_like(table)
    floor = "≤1e-9" if value == "excess_loss" else None  # at the optimum, to round-off

    def label(v, n) -> str:
        if pd.isna(v):
            return "no result" if n else "not run"
        return floor if floor and v <= 1e-9 else f"{v:.3g}"

    labels = pd.DataFrame([[label(v, n) for v, n in zip(tv, nv)] for tv, nv in zip(table.to_numpy(), ran.fillna(0).to_numpy())],
                          index=table.index, columns=table.columns)
    what = "excess training loss" if value == "excess_loss" else "final loss"
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table.columns), 1.2 + 0.6 * len(table.index)), layout="constrained")
    sns.heatmap(np.log10(table.where(table > 0)), annot=labels, fmt="", cmap="viridis_r", mask=table.isna(),
                cbar_kws={"label": f"log10 {what}"}, ax=ax, linewidths=0.5, annot_kws={"fontsize": 8})
    ax.tick_params(axis="y", rotation=0)
    ax.set_facecolor("#f2c4c4")
    for i, j in zip(*np.nonzero(table.isna().to_numpy())):  # seaborn leaves masked cells unlabelled
        ax.text(j + 0.5, i + 0.5, labels.iat[i, j], ha="center", va="center", fontsize=8, color="0.25")
    ax.set_title(f"Best {what} over the grid (min over the other axes); red: no run of the cell finished")
    return fig


def _best_curves(ok: pd.DataFrame, cur: pd.DataFrame, group: str | None, axes: list[str], palette):
    """The loss curves of the best run per group (and per problem), overlaid."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    keys = [k for k in ("problem", group) if k and k in axes] or ([group] if group else [])
    best = ranked(ok).groupby(keys, sort=False).head(1) if keys else ranked(ok).head(1)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    shades, spare = palette or {}, iter(sns.color_palette("tab10", len(best)))
    for _, r in best.iterrows():
        color = shades[r[group]] if group and r[group] in shades else next(spare)
        where = f"{r['problem']}: " if "problem" in axes else ""
        for metric, ls in (("train_loss", "-"), ("val_loss", "--")):
            c = cur[(cur["run_id"] == r["run_id"]) & (cur["metric"] == metric)]
            if len(c):
                ax.plot(c["step"], c["value"], ls, color=color, lw=1.4,
                        label=f"{where}{r[group] if group else r['run_name']} ({metric.split('_')[0]})")
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title=f"Best run per {group or 'sweep'}: training (solid) and validation (dashed)")
    ax.legend(fontsize=8)
    return fig


def _seed_spread(df: pd.DataFrame, cur: pd.DataFrame, axes: list[str]):
    """Mean and spread across seeds: the training curves, and the final losses."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    others = [a for a in axes if a != "seed"]
    label = df.set_index("run_id")[others].astype(str).agg(" ".join, axis=1) if others else pd.Series("config", index=df["run_id"])
    c = cur[cur["metric"] == "train_loss"].assign(config=lambda x: x["run_id"].map(label))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    sns.lineplot(data=c, x="step", y="value", hue="config" if others else None, errorbar="sd", ax=a1)
    a1.set(yscale="log", xlabel="epoch", ylabel="training loss", title="Mean ± sd across seeds")
    d = df.assign(config=df["run_id"].map(label))
    sns.stripplot(data=d, x="config", y="objective", ax=a2, size=6, alpha=0.7)
    sns.pointplot(data=d, x="config", y="objective", errorbar="sd", ax=a2, color="k", markers="_", linestyles="none")
    a2.set(yscale="log", xlabel="", ylabel="final loss", title=f"Final loss over {df['seed'].nunique()} seeds (mean ± sd)")
    return fig


def _time_to_threshold(df: pd.DataFrame, threshold: float, hue, palette):
    """The 25 fastest runs to a training loss at or below the threshold."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    d = df[df["seconds_to_threshold"].notna()].nsmallest(25, "seconds_to_threshold")
    d = d.assign(run=d["run_name"].str.split(" · ").str[0])  # what tells a sweep's runs apart
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.28 * len(d)), layout="constrained")
    sns.barplot(data=d, y="run", x="seconds_to_threshold", hue=hue, dodge=False, ax=ax, palette=palette,
                hue_order=list(palette) if palette else None)
    ax.set(xlabel="seconds of training to reach it", ylabel="",
           title=f"Time to a training loss <= {threshold:.4g} ({(df['seconds_to_threshold'].isna()).sum()} runs never did)")
    return fig


def _time_per_epoch(df: pd.DataFrame):
    """Gradient methods: the time per epoch on each problem."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    sns.barplot(data=df.assign(ms=df["seconds_per_epoch"] * 1e3), x="problem", y="ms", hue="method", ax=ax)
    ax.set(yscale="log", ylabel="milliseconds per epoch", xlabel="", title="Time per epoch by gradient method")
    return fig


# --------------------------------------------------------------------------------- run
def report(store: Store, experiment: str | None = None, parent: str | None = None, everything: bool = False,
           out: str | Path | None = None, threshold: float | None = None) -> Path:
    """Build the report, write it to `out`, log it to the parent run; returns the folder."""
    name, prun, df = select(store, experiment, parent, everything)
    axes = swept(df)
    cur = curves(store, df)
    threshold = default_threshold(df) if threshold is None else threshold
    if math.isfinite(threshold):
        df["epochs_to_threshold"] = threshold_steps(df, cur, threshold)
        df["seconds_to_threshold"] = df["epochs_to_threshold"] * df["seconds_per_epoch"]
    search = report_search.is_search(df)
    if search:  # a search's axes are its parameters, continuous: its own figures, its best trials
        axes = ["trial", *report_search.searched(df, prun)]
    tabs = tables(df, axes)
    if search:
        tabs["best"] = tabs["ranking"].head(5).drop(columns="rank")
    found = report_search.importances(prun) if search else {}  # Optuna's evaluator, once: figure and summary
    figs = report_search.figures(df, cur, prun, found) if search else figures(df, cur, axes, threshold)

    folder = Path(out) if out else Path("reports") / folder_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    source = f"sweep run {prun.id} ({prun.name})" if prun is not None and not everything else f"all runs of {name!r}"
    counts = ", ".join(f"{r.runs} {r.outcome}" for r in tabs["counts"].itertuples())
    md = [f"# Comparison: {name}", "", f"{len(df)} runs from {source}: {counts}.", "",
          f"Swept: {', '.join(axes) or 'nothing'}. Objective: final validation loss (training loss without a split).",
          *([f"Threshold for time-to-threshold: training loss <= {threshold:.4g}."] if math.isfinite(threshold) else []),
          "Ranked within each problem: runs at the optimum (`converged`) first, then by the objective.", "",
          *(_search_lines(prun, found) if search else []),
          "## " + ("The five best trials" if search else "Best configuration per " + (" and ".join(best_group(axes)) or "sweep")), "",
          markdown(tabs["best"]), "## Ranking", "", markdown(tabs["ranking"]), "## Outcomes", "", markdown(tabs["counts"])]
    files = {"summary.md": "\n".join(md), "summary.csv": tabs["ranking"].to_csv(index=False),
             "best.csv": tabs["best"].to_csv(index=False), "runs.csv": df.to_csv(index=False)}
    for rel, text in files.items():
        (folder / rel).write_text(text)
    for rel, fig in figs.items():
        fig.savefig(folder / rel, dpi=110, bbox_inches="tight")
    if prun is not None and not everything:
        images = {rel: (folder / rel).read_bytes() for rel in figs}
        store.log_artifacts(prun.id, {f"report/{k}": v for k, v in {**files, **images}.items()})
    import matplotlib.pyplot as plt

    for fig in figs.values():  # seaborn draws through pyplot, which keeps every figure until closed
        plt.close(fig)
    return folder


def folder_name(experiment: str) -> str:
    """The experiment's name as one safe folder name: no separators, no leading dot, so that an
    experiment called ../../x or /abs/path is written under reports/ like any other."""
    safe = re.sub(r"[^\w.-]", "_", experiment)
    return safe if safe and not safe.startswith(".") else "_" + safe


def _search_lines(prun, imp: dict[str, float]) -> list[str]:
    """What the study says of itself: its best trial, its trials' fates, the importances."""
    if prun is None or not prun.tag("study"):
        return []
    fates = ", ".join(f"{prun.tag('study.' + s)} {s}" for s in ("complete", "pruned", "fail") if prun.tag("study." + s))
    lines = [f"Search: Optuna study {prun.tag('study')!r} in {prun.tag('study.storage')} ({fates})."]
    if prun.tag("study.best_trial"):
        lines.append(f"Best trial {prun.tag('study.best_trial')}: {prun.tag('study.best_params')} -> "
                     f"{float(prun.tag('study.best_value')):.6g}.")
    if imp:
        lines.append("Importance (Optuna, PED-ANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) + ".")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="gradlab-compare", description="Comparison report of a gradlab sweep.")
    p.add_argument("--experiment", "-e", help="the experiment (default: the latest sweep's)")
    p.add_argument("--parent", help="the sweep's parent run id (default: the latest sweep)")
    p.add_argument("--all", action="store_true", help="every run of the experiment, not only the latest sweep's")
    p.add_argument("--out", "-o", help="folder for the report (default: reports/<experiment>)")
    p.add_argument("--threshold", type=float, help="training loss for time-to-threshold (default: 1.05 × the best reachable)")
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only; from a notebook (gradlab.api) the figures stay inline
    try:
        store = Store()
        folder = report(store, a.experiment, a.parent, a.all, a.out, a.threshold)
    except (CompareError, TrackingError) as e:
        print(f"gradlab-compare: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"gradlab-compare: report in {folder}/ (summary.md, summary.csv, figures)" +
          ("" if a.all else "; also logged to the sweep's parent run under report/"))
    print((folder / "summary.md").read_text().split("## Ranking")[0].strip())
