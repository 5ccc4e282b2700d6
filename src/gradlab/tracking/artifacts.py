"""A run's last artifacts as the store receives them: its files, history.csv, its figures."""

from __future__ import annotations

import itertools

from gradlab.tracking.spec import RunEnd


def files(end: RunEnd) -> dict[str, object]:
    """A run's last artifacts: its files, history.csv, and its figures, drawn here. A figure that
    cannot be drawn is noted in a tag (gradlab.plot_error) rather than failing a sound run."""
    out = dict(end.files)
    if end.history is not None:
        out["history.csv"] = history_csv(end.history)
    if end.plot_data:
        try:
            from gradlab.plots import files as drawn

            out.update(drawn(end.plot_data))
        except Exception as e:  # noqa: BLE001 - recorded, never lost
            end.tags["gradlab.plot_error"] = f"{type(e).__name__}: {e}"
    return out


def history_csv(table: dict, rows_per_part: int = 10_000):
    """Every recorded epoch at full precision (repr round-trips a float exactly), as parts of
    text to write one after the other: a run of millions of epochs is never one string."""
    yield ",".join(table["columns"]) + "\n"
    if table.get("spilled"):  # the older rows, from the files the history spilled them to
        from gradlab.spill import read_spilled

        for parts in read_spilled(table["spilled"], len(table["columns"])):
            yield from _csv_rows(zip(*parts), rows_per_part)
    yield from _csv_rows(zip(table["epochs"], *table["values"]), rows_per_part)


def _csv_rows(rows, rows_per_part: int):
    while part := list(itertools.islice(rows, rows_per_part)):
        yield "".join(",".join([str(e), *map(repr, row)]) + "\n" for e, *row in part)
