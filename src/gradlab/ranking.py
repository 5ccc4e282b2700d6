"""What a sweep found, in order: its runs ranked by what the sweep is for, within each problem.

A run that reached the optimum (`converged`, where one is known) ranks before one that did not,
then by the objective (the final validation loss, else the training loss); runs without a result
(diverged, failed, killed, pruned) come last. Runs on different problems (model, data, loss) are
never ranked against each other: their losses do not compare. Plain data in, plain data out: the
parent run's description (`note`) and the report both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RESULT = ("completed", "converged")  # outcomes whose final losses are a result to rank
NOTE_ROWS = 40  # rows of the parent's description, over all problems


@dataclass
class Entry:
    name: str
    outcome: str
    problem: str  # runs with the same problem compare
    objective: float  # nan without a result
    excess: float  # nan where no optimum is known
    converged: bool | None  # None where no optimum is known


def problem(params: dict) -> str:
    """What a run's losses are losses of: its data, model and loss (runs of one problem compare)."""
    return " · ".join(str(params[k]) for k in ("data.name", "model.name", "train.loss") if params.get(k) not in (None, "none", ""))


def entry(name: str, outcome: str, params: dict, metrics: dict) -> Entry:
    """A run as the ranking reads it, from its params and final metrics."""
    has_result = outcome in RESULT
    objective = metrics.get("final_val_loss", metrics.get("final_train_loss", math.nan)) if has_result else math.nan
    converged = metrics.get("converged")
    return Entry(name, outcome, problem(params), objective, metrics.get("excess_loss", math.nan) if has_result else math.nan,
                 None if converged is None else bool(converged) and has_result)


def _key(e: Entry) -> tuple:
    no_result = math.isnan(e.objective)
    return (no_result, not e.converged, e.objective if not no_result else 0.0, e.name)


def ranked(entries: list[Entry]) -> dict[str, list[Entry]]:
    """problem -> its runs, best first; problems in order of their names."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.problem, []).append(e)
    return {p: sorted(groups[p], key=_key) for p in sorted(groups)}


def _number(v: float) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def table(entries: list[Entry], limit: int = 20) -> str:
    """A markdown table of the best `limit` runs (converged, objective, excess loss)."""
    known = any(e.converged is not None for e in entries)
    head = ["rank", "run", "outcome", *(["at optimum"] if known else []), "objective", "excess loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, e in enumerate(entries[:limit], 1):
        flag = [("yes" if e.converged else "no") if e.converged is not None else "–"] if known else []
        lead = e.name.split(" · ")[0]  # what tells the runs of a sweep apart (describe.run_name)
        lines.append("| " + " | ".join([str(i), lead.replace("|", "/"), e.outcome, *flag, _number(e.objective),
                                         _number(e.excess)]) + " |")
    if len(entries) > limit:
        lines.append(f"\n… and {len(entries) - limit} more (the report's summary.csv has them all)")
    return "\n".join(lines)


def note(sweep: str, varied: list[str], counts: dict[str, int], entries: list[Entry]) -> str:
    """The parent run's description: what the sweep varied, how its jobs ended, its ranking."""
    parts = [f"**Sweep `{sweep}`** varied {', '.join(f'`{k}`' for k in varied) or 'nothing'}: "
             + ", ".join(f"{v} {k}" for k, v in counts.items()) + "."]
    groups = ranked(entries)
    rows = max(3, NOTE_ROWS // max(1, len(groups)))  # MLflow keeps 8000 characters of a tag
    for name, group in groups.items():
        parts.append(f"**{name or 'runs'}**, best first:\n\n{table(group, rows)}")
    parts.append("Ranked: runs at the optimum first (excess loss within tolerance of the closed-form optimum), "
                 "then by the objective (final validation loss, else training loss); runs without a result last. "
                 "Figures: the `report/` artifacts (`make compare`).")
    return "\n\n".join(parts)
