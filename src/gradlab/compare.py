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
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from gradlab import convergence, ranking, report_search, safe
from gradlab.tracking import Store, TrackingError, masked, query, results
from gradlab.tracking.store import folder_name
from gradlab.tracking.query import RunRecord

# The axes a sweep varies, as columns of the tidy frame (in the order figures prefer them).
AXES = ["optimizer", "lr", "schedule", "scaling", "batch", "seed", "method", "problem"]
METRICS = ["final_train_loss", "final_val_loss", "best_val_loss", "optimal_train_loss", "excess_loss", "at_optimum",
           "epochs_to_optimum", "epochs_to_threshold", "epochs_run", "train_seconds"]


class CompareError(RuntimeError):
    """Nothing to compare, or no such sweep: the message says what there is."""


# ----------------------------------------------------------------------------- reading
def swept_keys(records: list[RunRecord]) -> list[str]:
    """The keys the runs' own overrides give different values (what a sweep varied), in order."""
    values: dict[str, list] = {}
    for r in records:
        for k, v in dict(o.partition("=")[::2] for o in r.tag("overrides").split()).items():
            values.setdefault(k, []).append(v)
    return [k for k, v in values.items() if len(set(v)) > 1 or len(v) < len(records)]


def tidy(records: list[RunRecord]) -> pd.DataFrame:
    """One row per run: typed params (dotted names), metrics, the comparison axes, and its place
    in the ranking (gradlab.ranking: `rank` within its problem, its configuration's `config_rank`,
    `verdict`, `objective`, the score lower is better)."""
    if not records:
        return pd.DataFrame()
    # A resumed sweep may hold a config twice (an old FAILED try, then its re-run): keep the latest.
    latest = list({r.tag("config_hash", r.id): r for r in sorted(records, key=lambda r: r.start_time)}.values())
    varied = swept_keys(latest)
    entries = [ranking.entry(r.id, r.name, r.outcome, r.params, r.metrics, varied, r.tag("overrides")) for r in latest]
    placed = {row["run_id"]: row for row in ranking.rows(entries)}
    df = pd.DataFrame([{"run_id": r.id, "run_name": r.name, "status": r.status, "outcome": r.outcome,
                        "overrides": r.tag("overrides"), "trial": float(r.tag("trial") or "nan"), **r.params,
                        **{m: r.metrics.get(m, np.nan) for m in METRICS},
                        **{k: placed[r.id][k] for k in ("problem", "rank", "config_rank", "configuration", "verdict", "objective")},
                        # the final loss a run reached (gradlab.ranking's rule: validation, else training)
                        "final_loss": ranking.loss("val_loss", r.metrics) if r.outcome in ranking.RESULT else np.nan}
                       for r in latest])
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
    df.attrs["varied"] = varied
    return df.sort_values(["problem", "rank"]).reset_index(drop=True)


def entries(df: pd.DataFrame) -> list[ranking.Entry]:
    """The frame's runs as the ranking reads them (its columns: params, metrics, overrides)."""
    metric_names = set(METRICS)
    out = []
    for row in df.to_dict("records"):
        params = {k: v for k, v in row.items() if "." in k and k not in metric_names and not _missing(v)}
        metrics = {k: row[k] for k in METRICS if k in row and not _missing(row[k])}
        out.append(ranking.entry(row["run_id"], row["run_name"], row["outcome"], params, metrics,
                                 df.attrs.get("varied"), row.get("overrides") or ""))
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def swept(df: pd.DataFrame) -> list[str]:
    """The axes that take more than one value in these runs."""
    return [a for a in AXES if a in df and df[a].nunique(dropna=False) > 1]


def curves(store: Store, df: pd.DataFrame, keys=("train_loss", "val_loss")) -> pd.DataFrame:
    """Long frame of logged loss curves: run_id, step, metric, value (read in bulk)."""
    ids = list(df["run_id"])
    found = {key: query.metric_histories(store, ids, key) for key in keys}
    rows = [(rid, step, key, value) for rid in ids for key in keys for step, value in found[key][rid]]
    return pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def select(store: Store, experiment: str | None, parent: str | None, everything: bool):
    """(experiment name, parent RunRecord or None, tidy frame of the runs to compare)."""
    if parent:
        prun = query.run(store, parent)
        exp_id = prun.experiment_id
    else:
        if experiment and query.experiment_id(store, experiment) is None:
            names = query.experiment_names(store)
            raise CompareError(f"no experiment {experiment!r} in {masked(store.uri)}; there are: {', '.join(names) or 'none'}")
        prun = query.latest_sweep(store, experiment)
        if prun is None and not experiment:
            raise CompareError(f"no sweep in {masked(store.uri)} yet: run one first, e.g. make sweep SWEEP=lr_scale_optimizer")
        exp_id = prun.experiment_id if prun else query.experiment_id(store, experiment)
    name = query.experiment_name(store, exp_id)
    records = query.experiment_runs(store, exp_id) if everything or prun is None else results.children(store, prun)
    df = tidy(records)
    if df.empty:
        what = f"sweep run {prun.id}" if prun is not None and not everything else f"experiment {name!r}"
        raise CompareError(f"{what} has no runs to compare in {masked(store.uri)}; run a sweep first, "
                           "e.g. make sweep SWEEP=lr_scale_optimizer")
    return name, prun, df


# ------------------------------------------------------------------------------ tables
def threshold_steps(store: Store, df: pd.DataFrame, threshold: float) -> pd.Series:
    """First logged step at which each run's training loss is <= threshold (NaN if never)."""
    hit = query.first_steps_at_or_below(store, list(df["run_id"]), "train_loss", threshold)
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
    """Best configuration per problem, optimizer, scaling and schedule where they vary, else per the first axis."""
    return [a for a in ("problem", "optimizer", "scaling", "schedule") if a in axes] or axes[:1]


def configurations(df: pd.DataFrame) -> pd.DataFrame:
    """A row per configuration (its seeds together), best first within each problem: how many
    seeds reached the optimum or diverged, the median epochs there, the objective's loss as mean,
    sd and 95% interval over seeds (gradlab.ranking.Configuration)."""
    rows = []
    for problem, group in ranking.configurations(entries(df)).items():
        for rank, c in enumerate(group, 1):
            low, high = c.interval()
            first = df[df["run_id"] == c.runs[0].run_id].iloc[0]
            rows.append({"problem": problem, "config_rank": rank, "configuration": c.label,
                         **{a: first[a] for a in AXES if a in df and a not in ("seed", "problem")},
                         "seeds": c.n, "at_optimum": c.count("at_optimum"), "slow": c.count("slow"),
                         "diverged": c.count("diverged"), "no_result": c.without_result, "verdict": c.verdict(),
                         "epochs_to_optimum": c.epochs_to_optimum(), "loss_mean": c.mean(), "loss_sd": c.spread(),
                         "loss_ci_low": low, "loss_ci_high": high, "best_run": c.runs[0].label,
                         "best_run_id": c.runs[0].run_id})
    return pd.DataFrame(rows)


def tables(df: pd.DataFrame, axes: list[str]) -> dict[str, pd.DataFrame]:
    """ranking (a row per run), configurations (a row per configuration, seeds together), best
    (the first configuration of each problem, optimizer and scaling), counts; the order is
    gradlab.ranking's, the one every view of a sweep shares."""
    cols = ["rank", "run_name", *axes, "outcome", "verdict", "epochs_to_optimum", "excess_loss", "objective",
            "final_train_loss", "final_val_loss", "epochs_run", "train_seconds", "epochs_to_threshold",
            "seconds_to_threshold", "config_rank", "configuration", "run_id"]
    ranking_table = df[[c for c in cols if c in df]].reset_index(drop=True)
    configs = configurations(df)
    if len(configs) and configs["seeds"].max() == 1:  # no replicates: a configuration is its run
        configs = configs.drop(columns=["seeds", "at_optimum", "slow", "diverged", "no_result", "loss_sd", "loss_ci_low",
                                        "loss_ci_high", "best_run", "best_run_id"]).rename(columns={"loss_mean": "loss"})
        configs["no_result"] = (~configs["verdict"].isin(["at_optimum", "slow", "no_optimum"])).astype(int)
        configs["seeds"] = 1
    group = [g for g in best_group(axes) if g in configs]
    with_result = configs[configs["no_result"] < configs["seeds"]]
    best = with_result.groupby(group, sort=False).head(1) if group else with_result.head(1)
    if (configs["seeds"] == 1).all():
        configs, best = (t.drop(columns=["seeds", "no_result"]) for t in (configs, best))
    counts = df["outcome"].value_counts().rename_axis("outcome").reset_index(name="runs")
    return {"ranking": ranking_table, "configurations": configs, "best": best.reset_index(drop=True), "counts": counts}


# ----------------------------------------------------------------------------- figures
SCALING_ORDER = ["none", "standardize", "minmax"]  # factors (×k) go between none and standardize
OPTIMIZER_ORDER = ["gd", "sgd", "sgd_momentum", "adam", "adamw", "rmsprop", "adagrad", "asgd", "adadelta", "adamax", "nadam",
                   "radam", "rprop", "lbfgs"]
DIVERGED = "X"  # the marker of a run without a final loss, in the colour of whose it is


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


def _log_band(values: pd.Series) -> tuple[float, float, float]:
    """The geometric mean of positive values and a band of one sd in log10 (always > 0: it stays
    on a log axis, where an arithmetic mean ± sd falls through the floor)."""
    logs = np.log10(values[values > 0])
    if not len(logs):
        return (np.nan, np.nan, np.nan)
    m, sd = float(logs.mean()), float(logs.std(ddof=1)) if len(logs) > 1 else 0.0
    return 10 ** m, 10 ** (m - sd), 10 ** (m + sd)


def _against_lr(df, y, ylabel, title, hue, col, palette):
    """y against the learning rate, log-log, a panel per `col`, a line per `hue` value. Seeds
    replicate: each seed a faint dot, the line their geometric mean, the band one sd in log10. A
    learning rate where some seed diverged gets an ✖ on the top edge in the colour of whose it is
    (k/n beside it where seeds replicate)."""
    import matplotlib.pyplot as plt

    panels = _order(df[col].dropna()) if col else [None]
    n = len(panels)
    per_row = min(n, 4)
    # the legend sits outside on the right: room for it beside the panels
    fig, axes = plt.subplots(math.ceil(n / per_row), per_row, figsize=(3.9 * per_row + 2.6, 3.5 * math.ceil(n / per_row)),
                             squeeze=False, sharey="problem" not in (col, *df.attrs.get("panel_keys", [])),
                             layout="constrained")
    seeds = df.groupby(["configuration"])["run_id"].count().max() > 1
    hues = list(palette) if palette else [None]
    from matplotlib.transforms import offset_copy

    for ax, panel in zip(axes.flat, panels):
        sub = df[df[col] == panel] if col else df
        for i, h in enumerate(hues):
            d = sub[sub[hue] == h] if h is not None else sub
            if not len(d):
                continue
            colour = palette[h] if palette else "C0"
            ok = d[d[y].notna() & (d[y] > 0)]
            line = [(lr, *_log_band(g[y])) for lr, g in ok.groupby("lr")]
            if line:
                lrs, mean, low, high = map(np.array, zip(*line))
                ax.plot(lrs, mean, "o-", color=colour, lw=1.5, ms=4, label=str(h) if h is not None else None)
                if seeds:
                    ax.fill_between(lrs, low, high, color=colour, alpha=0.18, lw=0)
                    ax.scatter(ok["lr"], ok[y], s=8, color=colour, alpha=0.35, lw=0)
            bad = d[~d["outcome"].isin(ranking.RESULT)].groupby("lr")["run_id"].count()
            total = d.groupby("lr")["run_id"].count()
            # stacked above the top edge, a row per hue: two optimizers diverging at one lr both show
            where = offset_copy(ax.get_xaxis_transform(), fig=fig, y=3 + 9 * i, units="points")
            for lr, k in bad.items():
                ax.scatter([lr], [1.0], transform=where, marker=DIVERGED, s=40, color=colour, clip_on=False, zorder=5)
                if seeds:
                    ax.annotate(f"{k}/{total[lr]}", (lr, 1.0), xycoords=where, xytext=(7, -3),
                                textcoords="offset points", ha="left", fontsize=6, color=colour)
        ax.set(xscale="log", yscale="log", xlabel="learning rate")
        lrs_all = df["lr"][df["lr"] > 0]
        if len(lrs_all):  # every learning rate on the axis, those where nothing finished too (their ✖)
            ax.set_xlim(lrs_all.min() / 1.6, lrs_all.max() * 1.6)
        ax.set_title(str(panel) if panel is not None else " ", pad=6 + 9 * len(hues))  # room for the ✖ rows
    for row in axes:
        row[0].set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[h], marker="o", lw=1.5, label=str(h)) for h in hues] if palette else []
    handles.append(Line2D([], [], color="0.3", marker=DIVERGED, lw=0, ms=8,
                          label="no final loss\n(diverged, failed)" + (": k/n seeds" if seeds else "")))
    fig.legend(handles=handles, loc="outside right center", title=hue, fontsize=8)
    fig.suptitle(title + (" (seeds: geometric mean, band ±1 sd in log10, dots)" if seeds else ""))
    return fig


def figures(df: pd.DataFrame, cur: pd.DataFrame, axes: list[str], threshold: float) -> dict:
    """The report's figures that apply to what the sweep varied, by file name."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    df = df.copy()  # the panels' column is the figures' own
    # A line per schedule where schedules vary (the question is then which schedule for which lr),
    # else per optimizer; panels for the rest of what varies: problems (whose losses do not share an
    # axis), scalings, optimizers.
    hue = _hue(axes)
    col = _panels(df, [a for a in ("problem", "optimizer", "scaling") if a in axes and a != hue])
    palette = colours(df, hue)
    out = {}
    cells = convergence.cells(entries(df))
    if cells:
        out["convergence_map.png"] = convergence.figure(cells)
    if "lr" in axes:
        out.update(_lr_figures(df, hue, col, palette))
    best = best_runs(df, axes)
    if len(best) and len(cur):
        out["loss_curves_best.png"] = _best_curves(best, cur, _group(axes), axes, palette)
    if "seconds_to_threshold" in df and df["seconds_to_threshold"].notna().any():
        out["time_to_threshold.png"] = _time_to_threshold(df, threshold, hue, palette)
    if "method" in axes:
        out["time_per_epoch.png"] = _time_per_epoch(df)
    return out


def _panels(df: pd.DataFrame, keys: list[str]) -> str | None:
    """The column that names each figure's panel: one axis, or several joined into `panel`."""
    if len(keys) <= 1:
        return keys[0] if keys else None
    df["panel"] = df[keys].astype(str).agg(" · ".join, axis=1)
    df.attrs["panel_keys"] = keys
    return "panel"


def _lr_figures(df, hue, col, palette) -> dict:
    """Final loss and excess loss against the learning rate, log-log, diverged runs marked."""
    out = {"final_loss_vs_lr.png": _against_lr(df, "final_loss", "final loss (validation, else training)",
                                               "Final loss against learning rate", hue, col, palette)}
    if df["excess_loss"].notna().any():
        floor = 1e-9  # float rounding leaves |excess| ~ 1e-8 at the optimum; log axes need > 0
        d = df.assign(excess=df["excess_loss"].clip(lower=floor).where(df["final_loss"].notna()))
        out["excess_loss_vs_lr.png"] = _against_lr(d, "excess", f"excess training loss (floor {floor:g})",
                                                   "Convergence: excess training loss against learning rate",
                                                   hue, col, palette)
    return out


def _hue(axes: list[str]) -> str | None:
    """The axis the figures colour by: schedules where they vary (the question is then which
    schedule for which lr), else optimizers, else the first other axis that varies."""
    return next((a for a in ("schedule", "optimizer") if a in axes), None) or next(
        (a for a in axes if a not in ("lr", "seed", "problem")), None)


def _group(axes: list[str]) -> str | None:
    """What the best-curves figure shows a best run of."""
    return _hue(axes) or (axes[0] if axes else None)


def best_runs(df: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The best run of the best configuration per group (and per problem), of the runs with a
    final loss: the ranking's picks, whose curves the report draws."""
    ok = df[df["final_loss"].notna()]
    group = _group(axes)
    keys = [k for k in ("problem", group) if k and k in axes] or ([group] if group else [])
    ordered = ok.sort_values(["problem", "config_rank", "rank"])
    return ordered.groupby(keys, sort=False).head(1) if keys else ordered.head(1)


def _best_curves(best: pd.DataFrame, cur: pd.DataFrame, group: str | None, axes: list[str], palette):
    """The loss curves of `best` (best_runs), overlaid."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    shades, spare = palette or {}, iter(sns.color_palette("tab10", len(best)))
    for _, r in best.iterrows():
        color = shades[r[group]] if group and r[group] in shades else next(spare)
        where = f"{r['problem']}: " if "problem" in axes else ""
        for metric, ls in (("train_loss", "-"), ("val_loss", "--")):
            c = cur[(cur["run_id"] == r["run_id"]) & (cur["metric"] == metric)]
            if len(c):
                ax.plot(c["step"], c["value"], ls, color=color, lw=1.4,
                        label=f"{where}{r['configuration']} ({metric.split('_')[0]})")
    ax.set(yscale="log", xlabel="epoch", ylabel="loss", title=f"Best run per {group or 'sweep'}: training (solid) and validation (dashed)")
    ax.legend(fontsize=8)
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
           out: str | Path | None = None, threshold: float | None = None, storage: str | None = None) -> Path:
    """Build the report, write it to `out`, log it to the parent run; returns the folder. A
    search's importances come from its study in `storage`, else in the journal beside this
    store (never from a storage that only the store's tags name)."""
    name, prun, df = select(store, experiment, parent, everything)
    axes = swept(df)
    recorded = df["epochs_to_threshold"].notna().any()  # the runs measured one (tracking.threshold)
    threshold = (math.nan if recorded else default_threshold(df)) if threshold is None else threshold
    search = report_search.is_search(df)
    # Only the curves the report draws: every trial's for a search, else the best runs' (a sweep
    # of 10,000 runs holds 6 million points); times to a threshold are counted by the store.
    cur = curves(store, df if search else best_runs(df, axes))
    if math.isfinite(threshold):
        df["epochs_to_threshold"] = threshold_steps(store, df, threshold)
    df["seconds_to_threshold"] = df["epochs_to_threshold"] * df["seconds_per_epoch"]
    if search:  # a search's axes are its parameters, continuous: its own figures, its best trials
        axes = ["trial", *report_search.searched(df, prun)]
    tabs = tables(df, axes)
    runs = entries(df)
    replicated = ranking.replicated(runs)
    comparisons = ranking.significance(runs) if replicated else []
    if search:
        tabs["best"] = tabs["ranking"].head(5).drop(columns="rank")
    found = report_search.importances(prun, storage) if search else {}  # Optuna's evaluator, once: figure and summary
    figs = report_search.figures(df, cur, prun, found) if search else figures(df, cur, axes, threshold)

    folder = Path(out) if out else Path("reports") / folder_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    source = f"sweep run {prun.id} ({prun.name})" if prun is not None and not everything else f"all runs of {name!r}"
    counts = ", ".join(f"{r.runs} {r.outcome}" for r in tabs["counts"].itertuples())
    best_title = ("The five best trials" if search else
                  "Best configuration per " + (" and ".join(best_group(axes)) or "sweep")
                  + (" (its seeds together)" if replicated else ""))
    md = [f"# Comparison: {name}", "", f"{len(df)} runs from {source}: {counts}.", "",
          f"Swept: {', '.join(axes) or 'nothing'}. {ranking.describe_objective(runs)}",
          *([f"Threshold for time-to-threshold: training loss <= {threshold:.4g}."] if math.isfinite(threshold) else []), "",
          *(_search_lines(prun, found, storage) if search else []),
          *(["## Best against the runner-up", "", *(c.sentence(len(comparisons)) for c in comparisons), ""] if comparisons else []),
          "## " + best_title, "", markdown(tabs["best"]),
          *(["## Configurations (seeds together)", "", markdown(tabs["configurations"])] if replicated else []),
          "## Ranking (every run)", "", markdown(tabs["ranking"]), "## Outcomes", "", markdown(tabs["counts"])]
    files = {"summary.md": "\n".join(md), "summary.csv": _csv(tabs["ranking"]), "best.csv": _csv(tabs["best"]),
             "configurations.csv": _csv(tabs["configurations"]), "runs.csv": _csv(df)}
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


def _csv(df: pd.DataFrame) -> str:
    """A table as CSV, each text cell through safe.cell: run names and overrides come from users'
    configs and a shared store."""
    return df.map(safe.cell).to_csv(index=False)


def _search_lines(prun, imp: dict[str, float], storage: str | None = None) -> list[str]:
    """What the study says of itself: its best trial, its trials' fates, the importances."""
    if prun is None or not prun.tag("study"):
        return []
    fates = ", ".join(f"{prun.tag('study.' + s)} {s}" for s in ("complete", "pruned", "fail") if prun.tag("study." + s))
    lines = [f"Search: Optuna study {safe.text(prun.tag('study'))!r} in {safe.uri(safe.text(prun.tag('study.storage')))} ({fates})."]
    untouched = report_search.study_storage(prun, storage)
    if untouched:
        lines.append(untouched)
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
    p.add_argument("--storage", help="a search's Optuna storage, for its importances (default: the journal beside "
                   "the MLflow store; a storage that only the store's tags name is never opened)")
    a = p.parse_args(argv)
    safe.guard_output()  # names from a shared store: no escape sequence reaches the terminal
    import matplotlib

    matplotlib.use("Agg")  # files only; from a notebook (gradlab.api) the figures stay inline
    try:
        store = Store()
        folder = report(store, a.experiment, a.parent, a.all, a.out, a.threshold, a.storage)
    except (CompareError, TrackingError) as e:
        print(f"gradlab-compare: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"gradlab-compare: report in {folder}/ (summary.md, summary.csv, figures)" +
          ("" if a.all else "; also logged to the sweep's parent run under report/"))
    print((folder / "summary.md").read_text().split("## Ranking")[0].strip())
