"""Figures of one run, from plain arrays: loss curves, fit, trajectory, MLP predicted-vs-true.

No I/O and no torch: `figures(data)` returns {artifact path: Figure}; the caller saves them.
`matplotlib.figure.Figure` is used without pyplot, so nothing global is touched and pyplot's
import cost is not paid.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

PNG = {"dpi": 100, "pil_kwargs": {"compress_level": 1}}  # savefig's settings: fast to write, a little larger
# Drawing text is most of a figure's cost: unhinted glyphs render faster (and look the same at this size).
RC = {"text.hinting": "none"}

TRAIN, VAL, OPT, BAD, LR = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


def _plain_log(axis) -> None:
    """Log-axis ticks as plain numbers (0.01, 1, 100) and no minor labels: easier to read, and
    laying out mathtext and minor labels is most of what drawing a figure costs."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _title(ax, text: str) -> None:
    """In a fixed place (placing it costs a layout pass), smaller where its longest line would
    not fit across the figure (about 80 characters at 10 pt on 6.4 inches)."""
    longest = max(len(line) for line in text.splitlines()) if text else 0
    fit = 12.5 * ax.figure.get_figwidth()
    ax.set_title(text, fontsize=10 if longest <= fit else max(7.0, 10 * fit / longest), y=1.0, pad=6)


def _fig(width: float = 6.4, height: float = 4.2, right: float = 0.96):
    # Fixed margins: a constrained layout costs more than drawing the figure (~70 ms each here).
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.8 / width, right=right, bottom=0.55 / height, top=1 - 0.45 / height)
    ax = fig.add_subplot()
    for axis in (ax.xaxis, ax.yaxis):  # at most 6 ticks: each tick label costs about 1 ms to draw
        axis.set_major_locator(MaxNLocator(5, steps=[1, 2, 5, 10]))
    return fig, ax


def loss_curves(d: dict) -> Figure:
    """Training and validation loss by epoch; the learning rate on a second axis where a schedule moved it."""
    lr = np.asarray(d["lr"]) if d.get("lr") is not None and len(d["lr"]) and np.ptp(d["lr"]) > 0 else None
    fig, ax = _fig(right=0.86 if lr is not None else 0.96)  # room for the lr axis's labels
    epochs = np.asarray(d["epoch"])
    for key, label, color in (("train_loss", "training", TRAIN), ("val_loss", "validation", VAL)):
        if d.get(key) is not None and len(d[key]):
            ax.plot(epochs, d[key], label=f"{label} loss", color=color, lw=1.5)
    positive = [v for k in ("train_loss", "val_loss") if d.get(k) is not None for v in d[k] if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 10
    if log:
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.minorticks_off()
    opt = d.get("optimal_loss")
    if opt is not None and (opt > 0 or not log):
        ax.axhline(opt, color=OPT, ls="--", lw=1, label=f"closed-form optimum {opt:.4g}")
    if d.get("stop_step") is not None:
        ax.axvline(d["stop_step"], color=BAD, ls=":", lw=1.5)
        ax.annotate(f"{d.get('outcome', 'diverged')} at step {d['stop_step']}", (d["stop_step"], 0.95), xycoords=("data", "axes fraction"),
                    ha="right", va="top", color=BAD, fontsize=9, rotation=90)
    ax.set_xlabel("epoch" if not d.get("stream") else "step")
    ax.set_ylabel(f"loss ({d['loss_name']}{', log scale' if log else ''})")
    _title(ax, d["title"])
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if lr is not None:
        lr_ax = ax.twinx()
        handles += lr_ax.plot(epochs, lr, color=LR, lw=1, ls="--", label="learning rate")
        labels.append("learning rate")
        positive = lr[lr > 0]
        if len(positive) and positive.max() / positive.min() > 10:
            lr_ax.set_yscale("log")
            _plain_log(lr_ax.yaxis)
            lr_ax.minorticks_off()
        else:
            lr_ax.yaxis.set_major_locator(MaxNLocator(5))
        lr_ax.set_ylabel("learning rate", color=LR)
        lr_ax.tick_params(axis="y", colors=LR)
    ax.legend(handles, labels, fontsize=9, loc="upper right")  # "best" searches every point: slow
    return fig


def fit(d: dict) -> Figure:
    """Data and fitted curve on the original input units (scaling undone)."""
    fig, ax = _fig()
    ax.scatter(d["x_train"], d["y_train"], s=18, color=TRAIN, label="training", zorder=3)
    if d.get("x_val") is not None:
        ax.scatter(d["x_val"], d["y_val"], s=30, color=VAL, marker="D", label="validation", zorder=3)
    ax.plot(d["grid_x"], d["grid_y"], color="k", lw=1.5, label="fitted model")
    if d.get("grid_opt") is not None:
        ax.plot(d["grid_x"], d["grid_opt"], color=OPT, lw=1, ls="--", label="closed-form optimum")
    ax.set_xlabel(d["x_label"])
    ax.set_ylabel(d["y_label"])
    _title(ax, d["title"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")  # "best" searches every point: slow
    return fig


def trajectory(d: dict) -> Figure:
    """Loss contours over the plane of the two parameters, and the optimizer's path."""
    fig, ax = _fig(6.8, 5.0, right=0.86)  # room for the colour bar and its label
    z = np.asarray(d["grid_loss"], dtype=float)
    finite = z[np.isfinite(z) & (z > 0)]
    if finite.size:
        lo, hi = finite.min(), finite.max()
        levels = np.geomspace(lo, hi, 25) if hi > lo else None
        cs = ax.contourf(d["grid_a"], d["grid_b"], np.clip(z, lo, hi), levels=levels, norm=LogNorm(lo, hi), cmap="viridis", alpha=0.85)
        fig.colorbar(cs, ax=ax, label=f"loss ({d['loss_name']}, log scale)", format="%.3g", fraction=0.05, pad=0.02)
    path = np.asarray(d["path"], dtype=float)
    # A marker every k-th step: thousands of markers cost more than the rest of the figure.
    ax.plot(path[:, 0], path[:, 1], color="w", lw=1.2, marker=".", ms=2.5, markevery=max(1, len(path) // 150), label="path")
    ax.plot(*path[0], "o", color="w", mec="k", ms=8, label="start")
    ax.plot(*path[-1], "s", color=BAD, mec="k", ms=8, label="end")
    if d.get("optimum") is not None:
        ax.plot(*d["optimum"], "*", color=OPT, mec="k", ms=14, label="optimum")
    ax.set_xlabel(d["names"][0])
    ax.set_ylabel(d["names"][1])
    _title(ax, d["title"])
    ax.legend(fontsize=9, loc="upper right", framealpha=0.8)
    return fig


def race(d: dict) -> Figure:
    """Optimizers racing to a minimum: each one's path over one function's contour (a sweep's)."""
    fig, ax = _fig(7.6, 5.6, right=0.84)
    z = np.asarray(d["grid_loss"], dtype=float)
    finite = z[np.isfinite(z)]
    if finite.size:
        shift = finite.min()  # a function may be negative (a saddle's minima): the log scale reads f − min f
        lo, hi = max(float(np.percentile(finite - shift, 1)), 1e-12), float(finite.max() - shift)
        if hi > lo:
            cs = ax.contourf(d["grid_a"], d["grid_b"], np.clip(z - shift, lo, hi), levels=np.geomspace(lo, hi, 25),
                             norm=LogNorm(lo, hi), cmap="Greys_r", alpha=0.75)
            label = "f − min f on the grid (log scale)" if shift else "f (log scale)"
            fig.colorbar(cs, ax=ax, label=label, format="%.3g", fraction=0.05, pad=0.02)
    colours = matplotlib.colormaps["tab20"]
    for k, run in enumerate(d["paths"]):
        path = np.asarray(run["path"], dtype=float)
        label = run["label"] + (" ✓" if run.get("at_optimum") else "")
        ax.plot(path[:, 0], path[:, 1], color=colours(k % 20), lw=1.4, label=label)
        ax.plot(*path[-1], "o", color=colours(k % 20), mec="k", ms=5)
    start = np.asarray(d["paths"][0]["path"], dtype=float)[0]
    ax.plot(*start, "o", color="w", mec="k", ms=9, label="start", zorder=5)
    if d.get("optimum") is not None:
        ax.plot(*d["optimum"], "*", color=OPT, mec="k", ms=16, label="optimum", zorder=5)
    ax.set_xlabel(d["names"][0])
    ax.set_ylabel(d["names"][1])
    _title(ax, d["title"])
    ax.legend(fontsize=7, loc="upper right", framealpha=0.85, ncol=2)
    return fig


def predicted_vs_true(d: dict) -> Figure:
    fig, ax = _fig(5.2, 5.0)
    ax.scatter(d["y_train"], d["pred_train"], s=14, color=TRAIN, alpha=0.7, label="training")
    if d.get("y_val") is not None:
        ax.scatter(d["y_val"], d["pred_val"], s=18, color=VAL, alpha=0.8, marker="D", label="validation")
    both = np.concatenate([np.ravel(d["y_train"]), np.ravel(d["pred_train"])])
    lo, hi = float(both.min()), float(both.max())
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, ls="--", label="prediction = target")
    ax.set_xlabel(f"true {d['y_label']}")
    ax.set_ylabel(f"predicted {d['y_label']}")
    _title(ax, d["title"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")  # "best" searches every point: slow
    return fig


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context(RC):
        fig.savefig(buf, format="png", **PNG)
    return buf.getvalue()


def files(data: dict) -> dict[str, object]:
    """The artifacts drawn from plot data: a run's figures as PNG, or a sweep's map and ranking page."""
    if "sweep" in data:  # a sweep's parent: the convergence map, and the ranking page that shows it
        from gradlab import convergence

        sweep = data["sweep"]
        image = png(convergence.figure(sweep["map"])) if sweep.get("map") else None
        page = {"ranking.html": convergence.page(sweep["title"], sweep["summary"], sweep["rows"], image)}
        races = {f"race/{function}.png": png(race(d)) for function, d in (sweep.get("race") or {}).items()}
        return {**page, **({"convergence_map.png": image} if image else {}), **races}
    return {path: png(fig) for path, fig in figures(data).items()}


def figures(data: dict) -> dict[str, Figure]:
    """Every figure that applies to this run, by artifact path."""
    out = {"plots/loss_curves.png": loss_curves(data["loss"])}
    if "fit" in data:
        out["plots/fit.png"] = fit(data["fit"])
    if "trajectory" in data:
        out["plots/trajectory.png"] = trajectory(data["trajectory"])
    if "predicted" in data:
        out["plots/predicted_vs_true.png"] = predicted_vs_true(data["predicted"])
    return out

