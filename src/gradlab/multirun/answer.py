"""What a sweep found, said on its parent run at the sweep's end: its best run per problem, the
description (the convergence map first, then the ranking), the whole ranking as a file, the table
of every child's results (tracking.results: what the report and notebooks read), and the data of
the map and the ranking page that the recorder draws (gradlab.ranking is the one source of "best")."""

from __future__ import annotations

import json
from dataclasses import dataclass

from gradlab import convergence, ranking
from gradlab.multirun import race
from gradlab.tracking import results
from gradlab.tracking.spec import TABLE, TABLE_TAG

# What the ranking adds to a sweep's table of results, a column each.
TABLE_COLUMNS = ("outcome", "verdict", "problem", "rank", "config_rank", "configuration", "objective")


@dataclass
class Answer:
    tags: dict[str, str]
    files: dict[str, str]
    plot_data: dict | None


def of(name: str, parent_id: str, varied: list[str], children: list, search: bool, ask=None, every: list | None = None) -> Answer:
    """The answer of a sweep over `children` (tracking.query.RunRecord); `ask` reads the store
    (a recorder's ask) for what the records of the children hold beyond their final values;
    `every` child run found (a resumed sweep's earlier tries too) makes its table of results."""
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
    files = {"ranking.csv": ranking.csv_text(rows)}
    if every:
        placed = {r["run_id"]: {k: r[k] for k in TABLE_COLUMNS} for r in rows}
        files[TABLE] = results.encode(every, placed)
        tags[TABLE_TAG] = TABLE
    return Answer(tags, files,
                  {"sweep": {"map": cells, "rows": rows, "title": f"Sweep {name}: the ranking", "summary": summary,
                             "race": races}})
