"""Every read gradlab makes of the store, answered as gradlab's own records (`RunRecord`): typed
params, metrics and tags by name, so that no other module sees an MLflow object or column name."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gradlab.tracking import bulk
from gradlab.tracking.spec import RESULTS
from gradlab.tracking.store import Store, TrackingError, masked

PAGE = 5000  # runs a search reads at a time (MLflow answers at most 50,000 a call)
RUNS_PER_QUERY = 500  # runs whose step metrics one bulk query reads


def typed(value: str):
    """A param as MLflow returns it (a string) back to what it was: number, bool, None, list."""
    if value in ("None", "null"):
        return None
    if value in ("True", "False"):
        return value == "True"
    for convert in (int, float):
        try:
            return convert(value)
        except ValueError:
            pass
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


@dataclass
class RunRecord:
    id: str
    name: str
    experiment_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    start_time: int  # ms since the epoch
    params: dict[str, object] = field(default_factory=dict)  # typed
    metrics: dict[str, float] = field(default_factory=dict)  # latest value of each
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return self.tags.get("gradlab.outcome", "unknown")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")

    def tag(self, name: str, default: str = "") -> str:
        """A gradlab tag by its short name: tag("overrides") is gradlab.overrides."""
        return self.tags.get(f"gradlab.{name}", default)


def _record(run) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(info.run_id, info.run_name, info.experiment_id, info.status, info.start_time,
                     {k: typed(v) for k, v in data.params.items()}, dict(data.metrics), dict(data.tags))


def _search(store: Store, experiment_ids: list[str], where: str = "", newest_first: bool = False,
            limit: int | None = None, page: int = PAGE) -> list[RunRecord]:
    """Every run that matches (or the first `limit`), read `page` runs a call with MLflow's page tokens."""
    if not experiment_ids:
        return []
    order = ["attributes.start_time DESC"] if newest_first else None
    out: list[RunRecord] = []
    token = None
    while limit is None or len(out) < limit:
        got = store.client.search_runs(experiment_ids, filter_string=where, order_by=order, page_token=token,
                                       max_results=page if limit is None else min(page, limit - len(out)))
        out += [_record(r) for r in got]
        token = got.token
        if not token or not got:
            break
    return out


def experiment_id(store: Store, name: str) -> str | None:
    exp = store.client.get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None


def experiment_names(store: Store) -> list[str]:
    return sorted(e.name for e in store.client.search_experiments())


def experiment_name(store: Store, exp_id: str) -> str:
    return store.client.get_experiment(exp_id).name


def run(store: Store, run_id: str) -> RunRecord:
    try:
        return _record(store.client.get_run(run_id))
    except Exception:
        raise TrackingError(f"no run {run_id} in {masked(store.uri)}") from None


def finished(store: Store, experiment: str, config_hashes: list[str]) -> dict[str, RunRecord]:
    """config hash -> the latest run of `experiment` with that config that reached a result
    (completed, reached_stop_loss or diverged: a diverged learning rate is a result too)."""
    exp = experiment_id(store, experiment)
    out: dict[str, RunRecord] = {}
    if exp is None:
        return out
    wanted = set(config_hashes)
    # One search for a group; a single job asks for its hash only.
    where = f"tags.`gradlab.config_hash` = '{config_hashes[0]}'" if len(wanted) == 1 else ""
    for r in _search(store, [exp], where, newest_first=True):
        h = r.tag("config_hash")
        if h in wanted and h not in out and r.outcome in RESULTS:
            out[h] = r
    return out


def children(store: Store, parent_id: str, page: int = PAGE) -> list[RunRecord]:
    """The nested runs of a parent run, oldest first: as rows from a SQL store, else (a tracking
    server) through search_runs, `page` runs a call."""
    exp = run(store, parent_id).experiment_id
    if store._sql is not None:
        found = [RunRecord(run_id, name, exp_id, status, start, {k: typed(v) for k, v in params.items()}, metrics, tags)
                 for run_id, name, exp_id, status, start, params, metrics, tags in bulk.children(store._sql, exp, parent_id)]
    else:
        found = _search(store, [exp], f"tags.mlflow.parentRunId = '{parent_id}'", page=page)
    return sorted(found, key=lambda r: (r.start_time, r.id))  # ties in the same order from both


def latest_sweep(store: Store, experiment: str | None = None, sweep_hash: str | None = None) -> RunRecord | None:
    """The newest parent run of a sweep: in `experiment` (else any), of that grid (else any)."""
    if experiment is not None:
        exp = experiment_id(store, experiment)
        exps = [exp] if exp is not None else []
    else:
        exps = [e.experiment_id for e in store.client.search_experiments()]
    where = "tags.`gradlab.role` = 'sweep'" + (f" and tags.`gradlab.sweep_hash` = '{sweep_hash}'" if sweep_hash else "")
    found = _search(store, exps, where, newest_first=True, limit=1)
    return found[0] if found else None


def experiment_runs(store: Store, exp_id: str) -> list[RunRecord]:
    """Every run of an experiment but sweeps' parent runs."""
    return [r for r in _search(store, [exp_id]) if r.tag("role") != "sweep"]


def running(store: Store) -> list[RunRecord]:
    """Runs marked RUNNING, in every experiment."""
    return _search(store, [e.experiment_id for e in store.client.search_experiments()], "attributes.status = 'RUNNING'")


def metric_history(store: Store, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.client.get_metric_history(run_id, key)]


def first_steps_at_or_below(store: Store, run_ids: list[str], key: str, threshold: float,
                            per_query: int = RUNS_PER_QUERY) -> dict[str, int]:
    """run id -> the first recorded step at which its step metric `key` is at or below
    `threshold`, for the runs that reached it: counted by a database store (tracking.bulk),
    else from the histories."""
    if store._sql is not None:
        return bulk.first_steps_at_or_below(store._sql, run_ids, key, threshold, per_query)
    return {rid: min(s for s, v in h if v <= threshold)
            for rid, h in metric_histories(store, run_ids, key, per_query).items() if any(v <= threshold for _, v in h)}


def metric_histories(store: Store, run_ids: list[str], key: str,
                     per_query: int = RUNS_PER_QUERY) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] of a step metric, for many runs: a database store answers
    `per_query` runs in one query (as rows: tracking.bulk); a tracking server, a run at a time.
    In the order get_metric_history gives (time, step, value)."""
    if store._sql is not None:  # as rows (tracking.bulk)
        return bulk.histories(store._sql, run_ids, key, per_query)
    out: dict[str, list[tuple[int, float]]] = {rid: [] for rid in run_ids}
    read = getattr(store.client._tracking_client.store, "get_metric_history_bulk", None)
    if read is None:
        return {rid: metric_history(store, rid, key) for rid in run_ids}
    for i in range(0, len(run_ids), per_query):
        for m in read(run_ids[i:i + per_query], key, max_results=2**62):
            out[m.run_id].append((m.step, m.value))
    return out


def artifact_paths(store: Store, run_id: str, folder: str = "") -> list[str]:
    """The artifacts of a run directly under `folder`, as paths."""
    return [a.path for a in store.client.list_artifacts(run_id, folder or None)]


def artifact_text(store: Store, run_id: str, path: str) -> str:
    return artifact_bytes(store, run_id, path).decode()


def artifact_bytes(store: Store, run_id: str, path: str, limit: int | None = None) -> bytes:
    """An artifact's bytes; TrackingError if it cannot be read, or holds more than `limit` bytes
    (refused before it is read: a store is shared, and its files may be anything)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="gradlab-") as tmp:
        try:
            local = Path(store.client.download_artifacts(run_id, path, tmp))
            size = local.stat().st_size
            if limit is not None and size > limit:
                raise TrackingError(f"{path} of run {run_id} holds {size:,} bytes, more than the {limit:,} "
                                    f"gradlab reads of it; it is not one gradlab wrote")
            return local.read_bytes()
        except (MlflowException, OSError) as e:
            raise TrackingError(f"cannot read {path} of run {run_id} in {masked(store.uri)}: {str(e).splitlines()[0]}") from None
