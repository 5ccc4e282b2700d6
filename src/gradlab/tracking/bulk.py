"""A run's step metrics written into a SQL store (SQLite, PostgreSQL) as one multi-row insert,
and many runs' curves read back as rows.

Through MlflowClient.log_batch each point costs about 0.1 ms here (a validated ORM object per
point); a sweep's child logs about a thousand, so points were most of what recording a child cost.
Inserted as rows into MLflow's own `metrics` table, they cost about a fifth of that, and the
`latest_metrics` rows are kept by MLflow's own code (SqlAlchemyStore._update_latest_metrics_if_necessary)
from one point per key. MLflow's schema, below its public API: checked against mlflow 3.17
(tests/test_bulk.py compares every point and latest value with MlflowClient.log_batch's). Where a
point is there already (a retried write) the insert fails whole and the caller logs through
MLflow's own log_batch, which leaves out what it has. Read back, a thousand runs' curves come as
plain rows, where get_metric_history_bulk builds an ORM object a point (16 s for 380,000 points)."""

from __future__ import annotations


def sql_store(client):
    """The SqlAlchemyStore a client writes to, or None (a tracking server: its REST API only)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_points(store, run_id: str, metrics: list) -> bool:
    """Insert finite mlflow.entities.Metric points of one run; False where one was there already
    (nothing written then)."""
    import sqlalchemy as sa
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    if not metrics:
        return True
    rows, latest = {}, {}
    for m in metrics:
        rows[(m.key, m.timestamp, m.step, m.value)] = {"run_uuid": run_id, "key": m.key, "value": m.value,
                                                      "timestamp": m.timestamp, "step": m.step, "is_nan": False}
        if m.key not in latest or (m.step, m.timestamp, m.value) > (latest[m.key].step, latest[m.key].timestamp,
                                                                      latest[m.key].value):
            latest[m.key] = m
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            session.execute(sa.insert(SqlMetric.__table__), list(rows.values()))
            store._update_latest_metrics_if_necessary(
                [SqlMetric(run_uuid=run_id, key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, is_nan=False)
                 for m in latest.values()], session)
    except MlflowException as e:  # the session's error, MLflow's way: a duplicate is an IntegrityError
        if isinstance(e.__cause__, sa.exc.IntegrityError):
            return False
        raise
    return True


def histories(store, run_ids: list[str], key: str, per_query: int) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] of metric `key`, in get_metric_history's order (time, step, value)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    table = SqlMetric.__table__
    out: dict[str, list[tuple[int, float]]] = {rid: [] for rid in run_ids}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), per_query):
            rows = session.execute(
                sa.select(table.c.run_uuid, table.c.step, table.c.value, table.c.is_nan)
                .where(table.c.run_uuid.in_(run_ids[i:i + per_query]), table.c.key == key)
                .order_by(table.c.run_uuid, table.c.timestamp, table.c.step, table.c.value))
            for run_id, step, value, is_nan in rows:
                out[run_id].append((step, float("nan") if is_nan else value))
    return out
