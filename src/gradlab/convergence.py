"""The convergence map: a sweep's answer at one glance. One panel per value of what else varied
(input scaling, problem), optimizers down, learning rates across; each cell a configuration,
coloured by its verdict (at the optimum, slow, diverged; "mixed" where its seeds disagree, with
k/n) and labelled with the epochs it took to reach the optimum.

`cells(entries)` is plain data (drawn in the recorder process at a sweep's end, and by the
report); `figure(data)` draws it without pyplot.
"""

from __future__ import annotations

import math

from gradlab import ranking

WIDTH = 9.4  # inches at 100 dpi: what the run page shows of a description's image
MAX_VALUES = 40  # an axis with more values than this is a search's continuum, not a grid: no map
COLOURS = {"at_optimum": "#43a047", "mixed": "#c0ca33", "slow": "#ffb74d", "diverged": "#e53935",
           "no_optimum": "#90caf9", "failed": "#bdbdbd"}
WORDS = {"at_optimum": "at the optimum", "mixed": "seeds disagree (k/n at the optimum)", "slow": "finished, not at the optimum",
         "diverged": "diverged", "no_optimum": "finished (no optimum known: final loss)", "failed": "failed or killed"}
NAMES = {"optimizer.lr": "learning rate", "data.scaling": "input scaling", "train.batch_size": "batch size"}
# Optimizers from the plainest to the most adaptive, as the sweep files list them.
OPTIMIZERS = ["gd", "sgd", "sgd_momentum", "asgd", "adagrad", "adadelta", "rmsprop", "rprop", "adam", "adamw", "adamax",
              "nadam", "radam", "lbfgs"]
SCALINGS = {"raw": 0, "standardize": 2, "minmax": 3}  # factors (×k) go between raw and standardize


def _order(labels: list[str]) -> list[str]:
    """An axis's values in reading order: numbers ascending, scalings raw → ×k → standardized,
    optimizers from the plainest, anything else alphabetically."""
    distinct = list(dict.fromkeys(labels))

    def number(label: str) -> float | None:
        try:
            return float(label.rpartition("=")[2])
        except ValueError:
            return None

    if all(number(v) is not None for v in distinct):
        return sorted(distinct, key=number)
    if all(v in SCALINGS or v.startswith("×") for v in distinct):
        return sorted(distinct, key=lambda v: (SCALINGS.get(v, 1), number(v[1:]) if v.startswith("×") else 0))
    known = [v for v in OPTIMIZERS if v in distinct]
    return known + sorted(v for v in distinct if v not in known)


def cells(entries: list[ranking.Entry]) -> dict | None:
    """The map's panels, rows, columns and cells; None where there is no grid to draw (nothing
    swept but seeds, or a search's continuous values)."""
    groups = ranking.configurations(entries)
    configs = [c for group in groups.values() for c in group]
    keys = list(configs[0].values) if configs else []
    if not keys:
        return None
    col = "optimizer.lr" if "optimizer.lr" in keys else keys[-1]
    rest = [k for k in keys if k != col]
    row = "optimizer" if "optimizer" in rest else (rest[0] if rest else None)
    panel_keys = [k for k in rest if k != row]

    def place(c: ranking.Configuration, by_problem: bool) -> tuple[str, str, str]:
        panel = " · ".join([*(c.values[k] for k in panel_keys), *([c.problem] if by_problem else [])])
        return panel, c.values[row] if row else "", c.values[col]

    # Problems that the swept values do not tell apart get panels of their own.
    seen: dict[tuple, set] = {}
    for c in configs:
        seen.setdefault(place(c, False), set()).add(c.problem)
    by_problem = any(len(p) > 1 for p in seen.values())
    axes = [_order([place(c, by_problem)[i] for c in configs]) for i in range(3)]
    if any(len(a) > MAX_VALUES for a in axes[1:]):
        return None
    out = []
    for c in configs:
        panel, r, k = place(c, by_problem)
        out.append({"panel": panel, "row": r, "col": k, "verdict": c.verdict(), "n": c.n,
                    "at_optimum": c.count("at_optimum"), "diverged": c.count("diverged"),
                    "epochs": c.epochs_to_optimum(), "value": c.mean()})
    return {"panels": axes[0], "rows": axes[1], "cols": axes[2], "row_key": row or "", "col_key": col,
            "panel_keys": [*panel_keys, *(["problem"] if by_problem else [])], "cells": out,
            "seeds": any(c.n > 1 for c in configs)}


def label(cell: dict, seeds: bool) -> str:
    """What a cell says: epochs to the optimum, ✖ where it diverged, k/n where seeds replicate."""
    v, n = cell["verdict"], cell["n"]
    share = f"\n{cell['at_optimum']}/{n}" if seeds else ""
    if v == "at_optimum":
        return f"{cell['epochs']:.0f}" + share
    if v == "mixed":
        epochs = f"{cell['epochs']:.0f}" if not math.isnan(cell["epochs"]) else ""
        diverged = f" ✖{cell['diverged']}" if cell["diverged"] else ""
        return f"{epochs}\n{cell['at_optimum']}/{n}{diverged}".strip()
    if v == "diverged":
        return "✖" + (f"\n{cell['diverged']}/{n}" if seeds else "")
    if v == "slow":
        return "slow" if math.isnan(cell["value"]) else "+" + short(cell["value"])
    if v == "no_optimum":
        return "" if math.isnan(cell["value"]) else short(cell["value"])
    return "failed"


def short(v: float) -> str:
    """A loss in at most four characters where it can be: 3000, 20, 9.3, 0.12, 0.005, 3e-07."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 0.001 or v == 0:
        return f"{v:.2g}" if v >= 1 else f"{v:.1g}"
    return f"{v:.0e}"


def figure(data: dict):
    """The map as a matplotlib Figure (no pyplot)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    import numpy as np

    panels, rows, cols = data["panels"], data["rows"], data["cols"]
    codes = list(COLOURS)
    # At most WIDTH inches (the MLflow run page shows a description about 950 px wide): the panels
    # of a line share their row labels, wrap onto more lines, and cells narrow where one panel
    # alone would not fit.
    left, gap = 1.3, 0.25  # inches: the row labels; between two panels
    for per_row in range(min(3, len(panels)), 0, -1):  # as many panels a line as fit with cells still legible
        cell_w = min(0.62, (WIDTH - left - 0.2 - (per_row - 1) * gap) / (per_row * len(cols)))
        if cell_w >= 0.45:
            break
    cell_w = max(cell_w, 0.36)
    cell_h = 0.42 if not data["seeds"] else 0.56
    cells_w = cell_w * len(cols)
    lines = math.ceil(len(panels) / per_row)
    width = max(6.0, left + per_row * cells_w + (per_row - 1) * gap + 0.2)
    line_h = cell_h * max(1, len(rows))
    ticks = 0.9 if len(cols) > 6 else 0.5  # room for the column labels, rotated where they are many (the legend below them)
    height = 1.6 + lines * (line_h + ticks + 0.35)
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(lines, per_row, squeeze=False, sharey=True)
    by_place = {(c["panel"], c["row"], c["col"]): c for c in data["cells"]}
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[i]
        grid = np.full((max(1, len(rows)), len(cols)), np.nan)
        for r, row in enumerate(rows):
            for k, col in enumerate(cols):
                cell = by_place.get((panel, row, col))
                if cell is None:
                    continue
                grid[r, k] = codes.index(cell["verdict"])
                text = label(cell, data["seeds"])
                ax.text(k, r, text, ha="center", va="center", fontsize=10 if text == "✖" else 7,
                        color="white" if cell["verdict"] in ("at_optimum", "diverged") else "0.15")
        ax.imshow(np.ma.masked_invalid(grid), cmap=ListedColormap([COLOURS[c] for c in codes]), vmin=-0.5,
                  vmax=len(codes) - 0.5, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=90 if len(cols) > 6 else 0, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xticks(np.arange(-0.5, len(cols)), minor=True)
        ax.set_yticks(np.arange(-0.5, len(rows)), minor=True)
        ax.grid(False)  # a seaborn theme's grid would cross the cells
        ax.grid(which="minor", color="white", lw=1.5)
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel(NAMES.get(data["col_key"], data["col_key"]), fontsize=8, labelpad=2)
        ax.set_title(panel or "", fontsize=9)
    present = [c for c in codes if any(cell["verdict"] == c for cell in data["cells"])]
    fig.legend([Patch(color=COLOURS[c]) for c in present], [WORDS[c] for c in present], loc="lower center",
               ncol=min(3, len(present)), fontsize=8, frameon=False)
    numbers = "epochs to reach the optimum" + (" (median over the seeds there), k/n seeds at it" if data["seeds"] else "")
    if any(c["verdict"] == "slow" for c in data["cells"]):
        numbers += "; +x: the excess loss of a run that did not"
    fig.suptitle(f"Convergence map: {NAMES.get(data['row_key'], data['row_key']) or 'configuration'} × "
                 f"{NAMES.get(data['col_key'], data['col_key'])}\n{numbers}", fontsize=10)
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, top=1 - 0.85 / height, bottom=(0.55 + ticks) / height,
                        hspace=(ticks + 0.35) / line_h, wspace=gap / cells_w)
    return fig


# ---------------------------------------------------------------------- the sweep's page
ROW_COLOURS = {"at_optimum": "#e8f5e9", "slow": "#fff3e0", "diverged": "#ffebee", "": "#f5f5f5"}
COLUMNS = ["config_rank", "configuration", "run", "outcome", "verdict", "epochs_to_optimum", "excess_loss",
           "final_train_loss", "final_val_loss", "seed", "run_id"]


def page(title: str, summary: str, rows: list[dict], map_png: bytes | None) -> str:
    """ranking.html: the map and the whole ranking on one page, for the artifact viewer (every
    value escaped: names come from users' configs)."""
    import base64
    import html

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return html.escape(str(v))

    parts = [f"<h3>{html.escape(title)}</h3>", f"<p>{html.escape(summary)}</p>"]
    if map_png:
        parts.append(f'<img alt="convergence map" style="max-width:100%" src="data:image/png;base64,'
                     f'{base64.b64encode(map_png).decode()}">')
    columns = [c for c in COLUMNS if any(c in r for r in rows)]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        body = "".join(f'<tr style="background:{ROW_COLOURS.get(r["verdict"], "#f5f5f5")}">'
                       + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>"
                       for r in rows if r["problem"] == problem)
        head = "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
        parts.append(f"<h4>{html.escape(problem or 'runs')}</h4><table><tr>{head}</tr>{body}</table>")
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse} "
             "td,th{border:1px solid #ddd;padding:2px 6px;text-align:left} th{background:#eee}")
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(parts)}</body></html>"

