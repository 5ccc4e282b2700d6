"""A sweep's table of results (results.parquet on its parent) against its children read one by
one through MlflowClient; the report's frame with and without it; reads in pages and in bulk."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest

import gradlab
from gradlab.tracking import Store, query, results
from gradlab.tracking.query import RunRecord, typed

SMALL = ("experiment=thermometer_sgd_split", "train.epochs=300", "tracking.plots=none")
GRID = {"optimizer": ["gd", "adam"], "optimizer.lr": [1e-3, 0.05, 10.0]}  # gd at lr 10 diverges


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def table_of(client: mlflow.MlflowClient, parent_id: str, tmp_path) -> pd.DataFrame:
    return pd.read_parquet(client.download_artifacts(parent_id, "results.parquet", str(tmp_path)))


def test_a_sweeps_table_holds_each_child_as_the_store_holds_it(temp_store, tmp_path):
    s = gradlab.sweep(GRID, *SMALL)
    client = mlflow.MlflowClient(temp_store)
    parent = client.get_run(s.parent_id)
    assert parent.data.tags["gradlab.results"] == "results.parquet"
    table = table_of(client, s.parent_id, tmp_path)
    exp = parent.info.experiment_id
    ids = [r.info.run_id for r in client.search_runs([exp], f"tags.mlflow.parentRunId = '{s.parent_id}'")]
    assert sorted(table["run_id"]) == sorted(ids) and len(ids) == 6
    assert set(table["outcome"]) >= {"diverged"}  # the verdicts of the ranking ride along
    for row in table.to_dict("records"):
        run = client.get_run(row["run_id"])  # one by one: the reference
        assert (row["run_name"], row["status"], row["start_time"]) == (run.info.run_name, run.info.status, run.info.start_time)
        assert row["outcome"] == run.data.tags["gradlab.outcome"]
        assert row["verdict"] == run.data.params.get("verdict", "")
        params = {k[len("params."):]: v for k, v in row.items() if k.startswith("params.") and not pd.isna(v)}
        assert params.keys() == run.data.params.keys()
        assert all(typed(params[k]) == typed(v) for k, v in run.data.params.items())  # the same values, as MLflow's text
        metrics = {k[len("metrics."):]: v for k, v in row.items() if k.startswith("metrics.") and not pd.isna(v)}
        assert metrics.keys() <= run.data.metrics.keys()
        assert all(same(metrics.get(k, math.nan), v) for k, v in run.data.metrics.items())
        tags = {k[len("tags."):]: v for k, v in row.items() if k.startswith("tags.") and not pd.isna(v)}
        assert tags == run.data.tags


def test_compare_reads_the_table_and_gets_the_frame_the_store_gives(temp_store, monkeypatch):
    s = gradlab.sweep(GRID, *SMALL)
    with monkeypatch.context() as m:  # from the table only: reading the children from the store fails
        m.setattr(query, "children", lambda *a, **k: pytest.fail("read the children from the store"))
        from_table = gradlab.runs(sweep=s.parent_id)
    mlflow.MlflowClient(temp_store).set_tag(s.parent_id, "gradlab.results", "")  # as a resumed sweep's parent
    from_store = gradlab.runs(sweep=s.parent_id)
    assert len(from_table) == 6
    pd.testing.assert_frame_equal(from_table, from_store)
    assert from_table.attrs == from_store.attrs


def test_reads_in_pages_and_in_bulk_return_every_run(temp_store):
    s = gradlab.sweep(GRID, *SMALL)
    store = Store(temp_store)
    as_rows = query.children(store, s.parent_id)  # a SQL store's children come as rows (tracking.bulk)
    sql, store._sql = store._sql, None  # ... and through search_runs, as from a tracking server
    calls = []
    search = store.client.search_runs
    store.client.search_runs = lambda *a, **k: calls.append(k["max_results"]) or search(*a, **k)
    kids = query.children(store, s.parent_id, page=4)  # 6 children: a page of 4, then one of 2
    store._sql = sql
    assert calls == [4, 4] and len(kids) == len({k.id for k in kids}) == 6
    assert [repr(k) for k in as_rows] == [repr(k) for k in kids]
    client = mlflow.MlflowClient(temp_store)
    for k in kids:  # each as MLflow reads it alone
        run = client.get_run(k.id)
        assert (k.name, k.status, k.tags) == (run.info.run_name, run.info.status, run.data.tags)
        assert k.params == {p: typed(v) for p, v in run.data.params.items()}
    ids = [k.id for k in kids]
    for key in ("train_loss", "val_loss"):
        bulk = query.metric_histories(store, ids, key, per_query=4)
        assert bulk == {i: [(m.step, m.value) for m in client.get_metric_history(i, key)] for i in ids}
        assert all(bulk[i] for i in ids)


def test_a_table_gives_back_the_records_it_was_made_of():
    params = {"none": None, "flag": True, "n": 7, "big": 2**70, "lr": 1e-4, "ten": 10, "one": 1.0, "list": [1, 2.5],
              "map": {"a": 1}, "name": "=adam", "empty": "", "text": "1e-4x"}
    a = RunRecord("a" * 32, "run a", "1", "FINISHED", 1_700_000_000_123, params,
                  {"loss": 0.5, "nan": math.nan, "inf": math.inf, "param.w": -1.25}, {"gradlab.outcome": "completed"})
    b = RunRecord("b" * 32, "run b", "1", "FAILED", 1_700_000_000_456, {"lr": 10.0}, {}, {"gradlab.outcome": "diverged", "x": ""})
    back = results.decode(results.encode([a, b], {a.id: {"rank": 1}, b.id: {"rank": 2}}))
    assert [r.id for r in back] == [a.id, b.id]
    assert back[1] == b and back[0].params == params and back[0].tags == a.tags
    assert back[0].metrics.keys() == a.metrics.keys() and all(same(back[0].metrics[k], v) for k, v in a.metrics.items())
    assert isinstance(back[0].params["ten"], int) and isinstance(back[1].params["lr"], float)
    with pytest.raises(ValueError):
        results.decode(b"not parquet")


def test_keys_come_back_in_each_records_order():
    assert results.merged([("a", "c"), ("a", "b", "c"), ("a", "c"), ("d", "a")]) == ["d", "a", "b", "c"]
    a = RunRecord("a", "a", "1", "FINISHED", 1, {"z": 1, "y": 2})
    b = RunRecord("b", "b", "1", "FINISHED", 2, {"z": 1, "x": 0, "y": 2})
    assert [list(r.params) for r in results.decode(results.encode([a, b]))] == [["z", "y"], ["z", "x", "y"]]
