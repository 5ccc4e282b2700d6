"""Which children of a sweep have figures (tracking.plots), and drawing the chosen ones at its end.

Figures are a third of a small sweep's time and nobody opens a thousand of them. With `auto`, a
sweep of at most tracking.plots_max_children jobs draws every child's as it ends; a larger one
draws none then, and at its end, once the ranking is known, draws those of the runs a person
looks at: the best seed of each configuration its parent's description lists (each problem's
best, 40 in all: ranking.note_rows), from their records (redraw.py: the figures they would have drawn).
"""

from __future__ import annotations

import sys

from gradlab import ranking
from gradlab.config import Plots
from gradlab.record import Origin, draws_figures

DRAWABLE = ("completed", "reached_stop_loss", "converged", "diverged", "pruned")  # runs with a params.json
AGAIN = "`gradlab plots RUN_ID` draws any other child's from its history.csv"


def chosen(entries: list[ranking.Entry], limit: int) -> list[str]:
    """The runs to draw: every one of at most `limit`; else the best seed of each configuration
    the parent's description lists (each problem's best ranking.note_rows)."""
    drawable = [e for e in entries if e.outcome in DRAWABLE]
    if len(entries) <= limit:
        return [e.run_id for e in drawable]
    groups = ranking.configurations(entries)
    rows = ranking.note_rows(len(groups))
    return [c.runs[0].run_id for group in groups.values() for c in group[:rows] if c.runs[0].outcome in DRAWABLE]


def at_end(plots: Plots, limit: int, origin: Origin, children: list, uri: str) -> tuple[str, bool]:
    """Draws the figures a sweep's children did not draw as they ended and should have; says what
    the children have, in a line for the parent run (its tag gradlab.figures), and whether some
    have none (then its description says it too)."""
    setting = f"tracking.plots={plots.value}"
    if draws_figures(plots, limit, origin):
        return f"Figures: every child's that has a result ({setting}).", False
    if plots is Plots.none:
        return f"Figures: none drawn ({setting}); {AGAIN}.", True
    entries = [ranking.entry(c.id, c.name, c.outcome, c.params, c.metrics, origin.varied, c.tag("overrides"))
               for c in children]
    ids = chosen(entries, limit)
    drawn = _draw(ids, uri)
    which = "every child's" if len(children) <= limit else "the best seed of each configuration the description lists"
    return (f"Figures drawn for {drawn} of {len(children)} children, {which} ({setting}, "
            f"tracking.plots_max_children={limit}); {AGAIN}."), True


def _draw(run_ids: list[str], uri: str) -> int:
    """Draws each run's figures into its record; how many were drawn. One that cannot be drawn is
    said, and noted on its run (gradlab.plot_error), as a run's own end does."""
    from gradlab import redraw
    from gradlab.tracking import Store

    if not run_ids:
        return 0
    store = Store(uri)
    drawn = 0
    for run_id in run_ids:
        try:
            redraw.draw(store, run_id, trust_code=True, trust_data=True)  # the sweep ran this config itself
            drawn += 1
        except Exception as e:  # noqa: BLE001 - a figure is never worth a sweep
            print(f"gradlab: the figures of run {run_id} could not be drawn: {type(e).__name__}: {e}", file=sys.stderr)
            store.set_tags(run_id, {"gradlab.plot_error": f"{type(e).__name__}: {e}"})
    return drawn
