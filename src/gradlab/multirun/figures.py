"""Which children of a sweep have figures (tracking.plots), and drawing the chosen ones at its end.

Figures are a third of a small sweep's time and nobody opens a thousand of them. With `auto`, a
sweep of at most tracking.plots_max_children jobs draws every child's as it ends; a larger one
draws none then, and at its end, once the ranking is known, draws those of the runs a person
looks at: the best seed of each configuration its parent's description lists (each problem's
best, 40 in all: ranking.note_rows), from their records (redraw.py: the figures they would have
drawn), in the sweep's recorder processes side by side.
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


def at_end(plots: Plots, limit: int, origin: Origin, children: list, draw) -> tuple[str, bool]:
    """Draws the figures a sweep's children did not draw as they ended and should have (`draw`:
    run ids -> (how many were drawn, [(run id, why not)...]), the recorders' Draw); says what the
    children have, in a line for the parent run (its tag gradlab.figures), and whether some have
    none (then its description says it too)."""
    setting = f"tracking.plots={plots.value}"
    if draws_figures(plots, limit, origin):
        return f"Figures: every child's that has a result ({setting}).", False
    if plots is Plots.none:
        return f"Figures: none drawn ({setting}); {AGAIN}.", True
    entries = [ranking.entry(c.id, c.name, c.outcome, c.params, c.metrics, origin.varied, c.tag("overrides"))
               for c in children]
    ids = chosen(entries, limit)
    drawn, failed = draw(ids) if ids else (0, [])
    for run_id, why in failed:  # noted on the run by the recorder too (gradlab.plot_error)
        print(f"gradlab: the figures of run {run_id} could not be drawn: {why}", file=sys.stderr)
    which = "every child's" if len(children) <= limit else "the best seed of each configuration the description lists"
    return (f"Figures drawn for {drawn} of {len(children)} children, {which} ({setting}, "
            f"tracking.plots_max_children={limit}); {AGAIN}."), True

