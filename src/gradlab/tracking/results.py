"""A sweep's whole table of results as one artifact on its parent run (`results.parquet`): a row
per child run, written with the parent's end, read back in one go by the report and notebooks.

Columns as `mlflow.search_runs` names them: run_id, run_name, experiment_id, status, start_time
(ms), then what the sweep's answer adds (outcome, verdict, rank, ...), then `params.<key>` (text,
as MLflow keeps params), `metrics.<key>` (each metric's latest value) and `tags.<key>`. A param,
metric or tag a run lacks is null; a NaN metric stays NaN. `decode` gives back the RunRecords a
read of the store gives (tests/test_results.py holds them equal, run by run)."""

from __future__ import annotations

import io
import json

from gradlab.tracking import query
from gradlab.tracking.query import RunRecord, typed
from gradlab.tracking.spec import TABLE, TABLE_TAG
from gradlab.tracking.store import Store, TrackingError

LIMIT = 1 << 30  # bytes of a table gradlab reads (a shared store's file may be anything)
RECORD = ("run_id", "run_name", "experiment_id", "status", "start_time")
KINDS = ("params", "metrics", "tags")


def text(value) -> str:
    """A typed param (query.typed) as text that `typed` reads back as the same value."""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def encode(records: list[RunRecord], extra: dict[str, dict] | None = None) -> bytes:
    """The table of `records` as Parquet; `extra` (run id -> {column: value}) adds columns after
    the record's own (values of a column share one type, or are None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    extra = extra or {}
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([r.id for r in records], pa.string()),
        "run_name": pa.array([r.name for r in records], pa.string()),
        "experiment_id": pa.array([r.experiment_id for r in records], pa.string()),
        "status": pa.array([r.status for r in records], pa.string()),
        "start_time": pa.array([r.start_time for r in records], pa.int64())}
    for name in dict.fromkeys(k for r in records for k in extra.get(r.id, {})):
        columns[name] = pa.array([extra.get(r.id, {}).get(name) for r in records])
    for kind, kind_type in zip(KINDS, (pa.string(), pa.float64(), pa.string())):
        for key in merged(tuple(getattr(r, kind)) for r in records):
            values = [getattr(r, kind).get(key) for r in records]
            if kind == "params":
                values = [None if key not in r.params else text(v) for r, v in zip(records, values)]
            columns[f"{kind}.{key}"] = pa.array(values, kind_type)
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue()


def merged(orders) -> list[str]:
    """The keys of every order, each order's keys kept in its own order where the orders agree (a
    record's params come in its config's order; `decode` gives them back in that order)."""
    out: list[str] = []
    for order in dict.fromkeys(orders):  # the runs of a sweep share a handful of orders
        at = 0
        for key in order:
            if key in out:
                at = out.index(key) + 1
            else:
                out.insert(at, key)
                at += 1
    return out


def decode(data: bytes) -> list[RunRecord]:
    """The RunRecords of a table `encode` wrote; ValueError if it is not one."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - pyarrow's errors have no common base; said as one
        raise ValueError(f"not a Parquet table: {e}") from None
    if not set(RECORD) <= set(table.column_names):
        raise ValueError(f"a results table has the columns {', '.join(RECORD)}")
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    records = [RunRecord(*row) for row in zip(*(cols[c] for c in RECORD))]
    for name, values in cols.items():
        kind, _, key = name.partition(".")
        if kind not in KINDS or not key:
            continue
        for r, v in zip(records, values):
            if v is not None:
                getattr(r, kind)[key] = typed(v) if kind == "params" else v
    return records


def children(store: Store, parent: RunRecord, page: int = query.PAGE) -> list[RunRecord]:
    """A sweep's child runs, oldest first: from its table in one read when its end wrote one (and
    it has not run again since), else from the store, `page` runs a call (a sweep still running,
    one from before tables, a table that cannot be read)."""
    if parent.status != "RUNNING" and parent.tags.get(TABLE_TAG) == TABLE:
        try:
            return sorted(decode(query.artifact_bytes(store, parent.id, TABLE, limit=LIMIT)), key=lambda r: r.start_time)
        except (TrackingError, ValueError):
            pass
    return query.children(store, parent.id, page)
