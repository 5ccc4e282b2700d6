"""What a sweep found, said on its parent run at the sweep's end: its best run per problem, the
description (the convergence map first, then the ranking), the whole ranking as a file, and the
data of the map and the ranking page that the recorder draws (gradlab.ranking is the one source
of "best")."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gradlab import convergence, ranking
from gradlab.multirun import race


@dataclass
class Answer:
    tags: dict[str, str]
    files: dict[str, str]
    plot_data: dict | None


def of(name: str, parent_id: str, varied: list[str], children: list, search: bool, ask=None) -> Answer:
    """The answer of a sweep over `children` (tracking.query.RunRecord); `ask` reads the store
    (a recorder's ask) for what the records of the children hold beyond their final values."""
    entries = [ranking.entry(c.id, c.name, c.outcome, c.params, c.metrics, varied, c.tag("overrides")) for c in children]
    if not entries:
        return Answer({}, {}, None)
    best = ranking.best(entries)
    tags = {}
    if len({e.problem for e in entries}) == 1 and best:  # one problem: its best run; several: one each, never across
        (run,) = best.values()
        overrides = next((c.tag("overrides") for c in children if c.id == run.run_id), "")
        tags.update({"gradlab.best_run": run.run_id, "gradlab.best_overrides": overrides,
                     "gradlab.best_objective": repr(run.score), "gradlab.best_verdict": run.verdict or ""})
    elif best:  # JSON: MLflow's tag keys cannot hold a problem's name
        tags["gradlab.best_runs"] = json.dumps({p: r.run_id for p, r in best.items()})
    comparisons = ranking.significance(entries) if ranking.replicated(entries) else []
    cells = None if search else convergence.cells(entries)
    map_link = f"get-artifact?path=convergence_map.png&run_uuid={parent_id}" if cells else None
    tags["mlflow.note.content"] = ranking.note(name, varied, len(children), entries, comparisons, map_link)
    rows = ranking.rows(entries)
    summary = ranking.describe_objective(entries) + "".join(" " + c.sentence(len(comparisons)) for c in comparisons)
    races = race.data(name, children, entries, ask) if ask is not None and not search else {}
    return Answer(tags, {"ranking.csv": ranking.csv_text(rows)},
                  {"sweep": {"map": cells, "rows": rows, "title": f"Sweep {name}: the ranking", "summary": summary,
                             "race": races}})
