"""The figures of a search's report (an Optuna sweep): its progress against the trial number, each
trial's curve with pruned ones marked, the objective over each searched parameter, and the
parameters' importance as Optuna computed it (tags of the sweep's parent run)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# One colour per fate, the same in every figure; none is shared with another fate.
FATE = {"complete": "#1f77b4", "pruned": "#ff7f0e", "diverged": "#d62728", "failed": "0.45"}
MARKER = {"complete": "o", "pruned": "v", "diverged": "X", "failed": "s"}


def is_search(df: pd.DataFrame) -> bool:
    return "trial" in df and df["trial"].notna().any()


def fates(df: pd.DataFrame) -> pd.Series:
    """complete | pruned | diverged | failed, per run."""
    known = {"completed": "complete", "reached_stop_loss": "complete", "converged": "complete", "pruned": "pruned",
             "diverged": "diverged"}
    return df["outcome"].map(known).fillna("failed")


def searched(df: pd.DataFrame, parent) -> list[str]:
    """The parameters the search varied, as columns of the frame."""
    names = (parent.tag("study.params") if parent is not None else "").split()
    return [n for n in names if n in df]


def reached(df: pd.DataFrame) -> pd.Series:
    """Each trial's final loss (validation, else training: ranking.loss), or where a pruned trial stopped."""
    from gradlab.ranking import loss

    last = pd.Series([loss("val_loss", {k: v for k, v in row.items() if pd.notna(v)})
                      for row in df[["final_val_loss", "final_train_loss"]].to_dict("records")], index=df.index)
    return last.where(fates(df).isin(["complete", "pruned"]))


def figures(df: pd.DataFrame, cur: pd.DataFrame, parent, found: dict[str, float] | None = None) -> dict:
    """The search's figures; `found`: its importances, where the caller has them already."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    d = df.assign(fate=fates(df), reached=reached(df)).sort_values("trial")
    out = {"search_progress.png": progress(d), "search_curves.png": trial_curves(d, cur)}
    params = searched(d, parent)
    if params:
        out["search_space.png"] = over_params(d, params)
    found = importances(parent) if found is None else found
    if found:
        out["search_importance.png"] = importance(found)
    return out


def importances(parent, storage: str | None = None) -> dict[str, float]:
    """The searched parameters' importances, computed by Optuna from the parent run's study in
    the storage the user names (`storage`: gradlab-compare --storage), else in the default
    journal beside this MLflow store. A storage only the store names is not opened: anyone who
    can write a shared store could point it at any path or database (study_storage says so)."""
    if parent is None or not parent.tag("study"):
        return {}
    from gradlab.multirun import search

    where = storage or own_storage()
    if storage is None and parent.tag("study.storage") != where:
        return {}
    return search.importances(parent.tag("study"), where)


def own_storage() -> str:
    """The storage a search keeps its study in by default here: the journal beside this store."""
    from gradlab.multirun.search import default_storage
    from gradlab.tracking import tracking_uri

    return default_storage(tracking_uri())


def study_storage(parent, storage: str | None = None) -> str | None:
    """Why the importances were left out, when the study is in a storage the user did not name."""
    named = parent.tag("study.storage") if parent is not None and parent.tag("study") else None
    if named is None or storage is not None or named == own_storage():
        return None
    from gradlab import safe

    return (f"Importance: not computed; the study is in {safe.text(named)}, which only the store names "
            "(gradlab opens no path or URL a store names): gradlab-compare --storage STORAGE reads it.")


def _subplots(*shape, **kw):
    import matplotlib.pyplot as plt

    return plt.subplots(*shape, layout="constrained", **kw)


def _mark_fates(ax, d: pd.DataFrame, x: str) -> None:
    """Each trial at its objective; diverged and failed ones on the top edge (they have none)."""
    top = ax.get_ylim()[1]
    for fate, marker in MARKER.items():
        sub = d[d["fate"] == fate]
        if len(sub):
            y = sub["reached"] if fate in ("complete", "pruned") else pd.Series(top, index=sub.index)
            ax.scatter(sub[x], y, marker=marker, s=46, color=FATE[fate], zorder=4, clip_on=False,
                       label=f"{fate} ({len(sub)})" + (" (no final loss)" if fate in ("diverged", "failed") else ""))


def progress(d: pd.DataFrame):
    """The objective of each trial against its number, and the best so far."""
    fig, ax = _subplots(figsize=(7.5, 4.2))
    # The best so far by the sweep's objective (its score, gradlab.ranking), drawn at its final loss.
    score = d["objective"].where(d["fate"] == "complete")
    leader = [score.iloc[:i + 1].idxmin() if score.iloc[:i + 1].notna().any() else None for i in range(len(d))]
    best = [d.at[k, "reached"] if k is not None else np.nan for k in leader]
    ax.step(d["trial"], best, where="post", color="k", lw=1.5, label="best so far (by the objective)")
    ax.set_yscale("log")
    ax.set_ylim(*_limits(d["reached"]))
    _mark_fates(ax, d, "trial")
    ax.set(xlabel="trial", ylabel="final loss (validation, else training)",
           title="Search progress: each trial (pruned: where it stopped) and the best so far")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def trial_curves(d: pd.DataFrame, cur: pd.DataFrame):
    """Every trial's objective curve; pruned ones end in a marker at the step they stopped."""
    fig, ax = _subplots(figsize=(7.5, 4.4))
    metric = "val_loss" if (cur["metric"] == "val_loss").any() else "train_loss"
    c = cur[cur["metric"] == metric]
    best = d.loc[d["objective"].idxmin(), "run_id"] if d["objective"].notna().any() else None
    for r in d.itertuples():
        run = c[c["run_id"] == r.run_id]
        if not len(run):
            continue
        color, lw, alpha = (("k", 2.0, 1.0) if r.run_id == best else (FATE[r.fate], 0.9, 0.55))
        ax.plot(run["step"], run["value"], color=color, lw=lw, alpha=alpha, zorder=3 if r.run_id == best else 2)
        if r.fate == "pruned":
            ax.scatter(run["step"].iloc[-1:], run["value"].iloc[-1:], marker="v", s=30, color=FATE["pruned"], zorder=4)
    handles = [_line(FATE["complete"], "complete"), _line(FATE["pruned"], "pruned (▼ where it stopped)"),
               _line("k", "best trial", lw=2.0)]
    ax.set(yscale="log", xlabel="epoch", ylabel=metric.replace("_", " "), title=f"Each trial's {metric.replace('_', ' ')}")
    ax.legend(handles=handles, fontsize=8)
    return fig


def _line(color, label, lw=1.2):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, lw=lw, label=label)


def over_params(d: pd.DataFrame, params: list[str]):
    """The objective over each searched parameter (log axis where it spans two decades)."""
    fig, axes = _subplots(1, len(params), figsize=(4.2 * len(params), 3.9), squeeze=False)
    for ax, p in zip(axes.flat, params):
        values = pd.to_numeric(d[p], errors="coerce")
        if values.notna().all() and values.min() > 0 and values.max() / values.min() > 100:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(*_limits(d["reached"]))
        _mark_fates(ax, d, p)
        ax.set(xlabel=p, ylabel="final loss")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Final loss over each searched parameter")
    return fig


def importance(importances: dict[str, float]):
    fig, ax = _subplots(figsize=(6.5, 1.4 + 0.45 * len(importances)))
    names = sorted(importances, key=importances.get)
    ax.barh(names, [importances[n] for n in names], color=FATE["complete"])
    ax.set(xlabel="importance (Optuna's PED-ANOVA; they sum to 1)", xlim=(0, 1),
           title="Which searched parameter mattered")
    return fig


def _limits(values: pd.Series) -> tuple[float, float]:
    v = values[np.isfinite(values) & (values > 0)]
    if not len(v):
        return 1e-3, 1.0
    return float(v.min()) / 1.5, float(v.max()) * 1.5
