"""The experiment record under faults: statuses that tell the truth, reaping, stores, provenance,
history.csv, rerun, plots. Subprocess and server tests are in the slow tier (`make test` runs them)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib.metadata
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import ROOT, Started, compose, gradlab, kill_session, start, store_made, wait_for
from gradlab import plots, training, tracking
from gradlab.config import from_container
from gradlab.describe import provenance
from gradlab.record import Job, Origin, record
from gradlab.tracking import RunSpec, processes, reap


def client(uri: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(uri)


def only_run(uri: str, experiment: str = "default"):
    c = client(uri)
    (r,) = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    return r


def artifact(run_id: str, path: str, uri: str) -> str:
    mlflow.set_tracking_uri(uri)
    return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")


def history_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ statuses
def test_exception_marks_the_run_failed_and_keeps_what_was_logged(temp_store, monkeypatch):
    from gradlab import problem

    original, calls = problem.Problem.batches, {"n": 0}

    def batches(self):
        calls["n"] += 1
        if calls["n"] == 31:
            raise RuntimeError("disk on fire at epoch 31")
        return original(self)

    monkeypatch.setattr(problem.Problem, "batches", batches)
    with pytest.raises(RuntimeError, match="disk on fire"):
        record(Job(compose("train.epochs=100")), Origin("default"), quiet=True)
    r = only_run(temp_store)
    assert r.info.status == "FAILED"
    assert r.data.tags["gradlab.outcome"] == "failed"
    assert r.data.tags["gradlab.error.type"] == "RuntimeError"
    assert r.data.tags["gradlab.error.message"] == "disk on fire at epoch 31"
    assert r.data.metrics["epochs_run"] == 30
    steps = [m.step for m in client(temp_store).get_metric_history(r.info.run_id, "train_loss")]
    assert steps == list(range(1, 31))
    rows = history_rows(artifact(r.info.run_id, "history.csv", temp_store))
    assert [int(x["epoch"]) for x in rows] == list(range(1, 31))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_epoch_stops_at_its_end_with_every_history_whole(temp_store, monkeypatch, sig):
    """The signal lands inside the bookkeeping of epoch 20 (between its first run's row and the
    second's): it is held to the epoch's end, so each run has exactly the rows of its epochs run."""
    from gradlab.engine import History
    from gradlab.record import Job, Origin, record_group
    from gradlab.signals import Killed

    original, calls = History.append, {"n": 0}

    def append(self, epoch, row):
        calls["n"] += 1
        if calls["n"] == 2 * 20 - 1:
            os.kill(os.getpid(), sig)
        original(self, epoch, row)

    monkeypatch.setattr(History, "append", append)
    jobs = [Job(compose("train.epochs=100", f"optimizer.lr={lr}", "tracking.plots=none")) for lr in (1e-4, 2e-4)]
    with pytest.raises(Killed):
        record_group(jobs, Origin("default"), quiet=True)
    c = client(temp_store)
    runs = c.search_runs([c.get_experiment_by_name("default").experiment_id])
    assert len(runs) == 2
    for r in runs:
        assert (r.info.status, r.data.tags["gradlab.outcome"]) == ("KILLED", "killed")
        assert r.data.metrics["epochs_run"] == 20
        rows = history_rows(artifact(r.info.run_id, "history.csv", temp_store))
        assert [int(x["epoch"]) for x in rows] == list(range(1, 21))


def test_a_second_signal_while_one_is_held_stops_at_once():
    from gradlab import signals

    with pytest.raises(signals.Killed) as stop, signals.polled():
        os.kill(os.getpid(), signal.SIGINT)  # held: the block goes on
        held = True
        os.kill(os.getpid(), signal.SIGTERM)
        held = False
    assert held and stop.value.signum == signal.SIGINT


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])  # SIGHUP: the terminal closed
def test_signal_marks_the_run_killed_and_exits_as_killed(temp_store, sig):
    proc = Started([sys.executable, "-m", "gradlab", "train.epochs=100000000", "tracking.plots=none"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def logging_started():
            if not store_made(temp_store):
                return None
            try:
                c = client(temp_store)
                exp = c.get_experiment_by_name("default")
                runs = c.search_runs([exp.experiment_id]) if exp else []
                return runs and c.get_metric_history(runs[0].info.run_id, "train_loss") and runs[0]
            except Exception:
                return None

        wait_for(logging_started, timeout=90, proc=proc)
        proc.send_signal(sig)
        _, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -sig, err  # died by the signal, as a killed process does
    r = only_run(temp_store)
    assert r.info.status == "KILLED"
    assert r.data.tags["gradlab.outcome"] == "killed"
    assert r.data.tags["gradlab.signal"] == signal.Signals(sig).name
    epochs = int(r.data.metrics["epochs_run"])
    assert epochs > 0
    rows = history_rows(artifact(r.info.run_id, "history.csv", temp_store))
    assert len(rows) == epochs  # history saved up to that point
    logged = client(temp_store).get_metric_history(r.info.run_id, "train_loss")
    assert logged and max(m.step for m in logged) == epochs


@pytest.mark.slow
def test_a_run_under_nohup_outlives_its_terminal(temp_store):
    """SIGHUP stops a run as Ctrl-C does, unless it is ignored on purpose (nohup): then it trains on."""
    proc = _start_and_wait_for_run(temp_store, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert proc.poll() is None and only_run(temp_store).info.status == "RUNNING"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate()
    assert only_run(temp_store).info.status == "KILLED"


def test_a_recorder_that_dies_as_it_starts_is_said_in_one_line():
    """kill -9 of a recorder before it had said its pid raised EOFError through a traceback."""
    from multiprocessing.connection import Connection

    from gradlab.tracking.recorder.client import Recorder, RecorderGone

    read, write = os.pipe()
    os.close(write)
    rec = Recorder.__new__(Recorder)
    rec._recv = Connection(read, writable=False)
    with pytest.raises(RecorderGone, match="the gradlab recorder process stopped as it started"):
        rec._first_message()


def test_a_folder_as_the_store_is_refused_at_once(tmp_path):
    """It waited 66 s and called the folder a creation that stopped half-way."""
    began = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="is a folder, not a database file"):
        tracking.Store(f"sqlite:///{tmp_path}")
    assert time.monotonic() - began < 30  # no wait on a creation that never comes (the CLI adds torch's import)
    proc = gradlab("train.epochs=5", env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gradlab: error: the store sqlite:///{tmp_path} is a folder, not a database file: point MLFLOW_TRACKING_URI "
        f"at a file in it, e.g. sqlite:///{tmp_path / 'mlflow.db'}"]


def _start_and_wait_for_run(uri: str, **popen):
    popen.setdefault("stderr", subprocess.DEVNULL)
    proc = Started([sys.executable, "-m", "gradlab", "train.epochs=100000000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, **popen)

    def running():
        if not store_made(uri):
            return None
        try:
            exp = client(uri).get_experiment_by_name("default")
            return exp and client(uri).search_runs([exp.experiment_id])
        except Exception:
            return None

    wait_for(running, timeout=90, proc=proc)
    return proc


@pytest.mark.slow
def test_sigkill_of_the_trainer_alone_is_closed_by_the_recorder(temp_store):
    proc = _start_and_wait_for_run(temp_store)
    proc.kill()
    proc.wait(timeout=30)
    r = wait_for(lambda: (x := only_run(temp_store)).info.status != "RUNNING" and x, timeout=60)
    assert r.info.status == "KILLED" and r.data.tags["gradlab.outcome"] == "killed"
    assert "ended before recording its end" in r.data.tags["gradlab.reason"]
    # Its config went with its start, so that the run can be rerun (it was written at the end only).
    assert "epochs: 100000000" in artifact(r.info.run_id, "config.yaml", temp_store)


@pytest.mark.slow
def test_sigkill_of_the_recorder_alone_is_closed_by_the_trainer_with_its_history(temp_store):
    proc = _start_and_wait_for_run(temp_store, stderr=subprocess.PIPE, text=True)
    recorders = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _in_group(int(p.name), proc.pid)
                 and b"recorder.server import serve" in _cmdline(p)]
    assert len(recorders) == 1
    os.kill(recorders[0], signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == 2 and "the gradlab recorder process stopped" in err
    r = only_run(temp_store)
    assert (r.info.status, r.data.tags["gradlab.outcome"]) == ("FAILED", "failed")
    assert r.data.tags["gradlab.error.type"] == "RecorderGone"
    rows = history_rows(artifact(r.info.run_id, "history.csv", temp_store))
    assert rows and len(rows) == int(r.data.metrics["epochs_run"])  # its history, written by the trainer


@pytest.mark.slow
def test_a_stopped_recorder_is_killed_and_its_trainer_goes_on(temp_store):
    """A recorder stopped (SIGSTOP) drained nothing: the trainer's writes waited on its full pipe
    for ever, its exit 300 s a recorder, and its lock on the store failed every other writer.
    Found stopped STUCK_LOOKS times in a row it is killed, and said gone like a dead one."""
    import threading

    from gradlab.tracking.recorder.client import STUCK_LOOKS, WATCH_EVERY, Recorder

    first, sibling = Recorder.group(1)
    try:
        wait_for(lambda: sibling.poll() or sibling.pid, timeout=120, every=0.2)  # a sibling says its pid once forked
        os.kill(sibling.pid, signal.SIGSTOP)
        looks = []

        def watcher():  # Registry's watcher thread, on this recorder alone
            while not sibling.stuck and len(looks) < 100 * STUCK_LOOKS:
                time.sleep(WATCH_EVERY)
                sibling.watch()
                looks.append(1)

        threading.Thread(target=watcher, daemon=True).start()
        points = {1: [("x", 1.0, step) for step in range(20000)]}  # ~300 kB a message: the pipe fills at once
        with pytest.raises(tracking.RecorderGone, match="stopped .SIGSTOP. and stayed so"):
            for _ in range(1000):
                sibling.log(points)
        assert sibling.stuck and len(looks) >= STUCK_LOOKS
        wait_for(lambda: not processes.alive(sibling.pid, None), timeout=60)  # SIGKILLed: gone once the kernel gets to it
        closing = threading.Thread(target=sibling.close, args=(300.0,), daemon=True)
        closing.start()
        closing.join(60)  # it took 300 s: the writer thread stayed blocked on the full pipe
        assert not closing.is_alive()
    finally:
        for rec in (sibling, first):
            if rec.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(rec.pid, signal.SIGKILL)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
def test_hard_death_of_every_process_leaves_running_and_reap_closes_it(temp_store):
    proc = _start_and_wait_for_run(temp_store)
    os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its recorder at once, as a power loss would
    proc.wait(timeout=30)
    time.sleep(1)
    assert only_run(temp_store).info.status == "RUNNING"
    out = gradlab("reap")
    assert out.returncode == 0, out.stderr
    assert "marked" in out.stdout and "KILLED" in out.stdout
    r = only_run(temp_store)
    assert r.info.status == "KILLED" and r.data.tags["gradlab.outcome"] == "killed"
    assert f"process {proc.pid}" in r.data.tags["gradlab.reason"]


def test_reap_leaves_live_and_foreign_runs_alone(temp_store):
    store = tracking.Store()
    me, host = str(os.getpid()), socket.gethostname()
    live = store.start(RunSpec("reap", "live", {}, {"gradlab.host": host, "gradlab.pid": me,
                                                    "gradlab.pid_start": processes.process_start(os.getpid())}))
    reused = store.start(RunSpec("reap", "reused-pid", {}, {"gradlab.host": host, "gradlab.pid": me, "gradlab.pid_start": "1"}))
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = store.start(RunSpec("reap", "gone", {}, {"gradlab.host": host, "gradlab.pid": str(dead.pid), "gradlab.pid_start": "5"}))
    foreign = store.start(RunSpec("reap", "foreign", {}, {"gradlab.host": "elsewhere", "gradlab.pid": "1"}))
    assert any("would mark" in line for line in reap.reap(store, dry_run=True))
    assert client(temp_store).get_run(gone).info.status == "RUNNING"  # dry run changed nothing
    lines = reap.reap(store)
    status = {r: client(temp_store).get_run(r).info.status for r in (live, reused, gone, foreign)}
    assert status == {live: "RUNNING", reused: "KILLED", gone: "KILLED", foreign: "RUNNING"}
    assert any("host 'elsewhere'" in line for line in lines)


# -------------------------------------------------------------------------------- stores
@pytest.mark.slow
def test_concurrent_first_use_of_an_empty_store(tmp_path):
    db = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{db}"
    start = time.time() + 6  # every process imports first, then they all open the store at once
    code = (
        "import sys, time; from gradlab.tracking import RunSpec, Store\n"
        f"time.sleep(max(0, {start} - time.time()))\n"
        "s = Store(); r = s.start(RunSpec('race', 'r' + sys.argv[1], {'i': sys.argv[1]}, {})); s.log_points(r, [('x', 1.0, 0)]); s.end(r, 'FINISHED')\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, stderr=subprocess.PIPE, text=True) for i in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    c = client(uri)
    runs = c.search_runs([c.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.params["i"] for r in runs) == ["0", "1", "2", "3"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_another_program_opening_a_new_store_while_gradlab_creates_it_breaks_neither(tmp_path):
    for attempt in range(3):  # the window is the second or so of MLflow's migrations: try it a few times
        db = tmp_path / f"new{attempt}" / "mlflow.db"
        uri = f"sqlite:///{db}"
        proc = Started([sys.executable, "-m", "gradlab", "train.epochs=200", "tracking.plots=none"], cwd=ROOT,
                                env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        wait_for(lambda: db.with_name("mlflow.db.lock").exists(), timeout=60, every=0.001, proc=proc)
        client(uri).search_experiments()  # what mlflow ui, a notebook or a script does first
        _, err = proc.communicate()
        assert proc.returncode == 0, err[-2000:]
        assert only_run(uri).info.status == "FINISHED"
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_creation_that_fails_leaves_no_half_made_store_behind(temp_store, monkeypatch):
    from alembic.util import CommandError
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    def migrations_fail(self, *args, **kwargs):
        raise CommandError("Online migration expected to match one row when updating 'a' to 'b'; 0 found")

    with monkeypatch.context() as m, pytest.raises(tracking.TrackingError) as e:
        m.setattr(SqlAlchemyStore, "__init__", migrations_fail)
        tracking.Store()
    assert "cannot use the tracking store" in str(e.value) and "0 found" in str(e.value)
    db = Path(temp_store.removeprefix("sqlite:///"))
    assert not db.exists() and not [p for p in db.parent.iterdir() if "creating" in p.name]  # the next try starts clean
    tracking.Store()  # and it does
    assert tracking.store.store_ready(db)


def test_unreachable_server_fails_fast_before_training():
    uri = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    out = gradlab("train.epochs=100000", env={"MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 2
    assert uri in out.stderr and "cannot reach" in out.stderr
    assert "completed" not in out.stdout
    assert time.monotonic() - began < 30  # Python, torch and the check: seconds, not MLflow's minutes of retries


def test_a_server_that_answers_health_but_stalls_its_api_fails_before_training():
    import http.server
    import threading

    class Stalls(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                time.sleep(120)  # the API never answers

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalls)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        out = gradlab("train.epochs=100000", env={"MLFLOW_TRACKING_URI": uri}, timeout=45)  # MLflow's retries took 64 s
    finally:
        server.shutdown()
    assert out.returncode == 2, out.stderr
    assert uri in out.stderr and "API" in out.stderr and "completed" not in out.stdout


def _serve(handler):
    """An HTTP server on loopback with this handler, in a thread; returns (uri, server)."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_a_server_that_drips_its_reply_is_refused_within_the_timeout():
    """A server that answered at 1 byte a second hung gradlab past 200 s: the socket's timeout
    counts each read, and each byte came in time."""
    import http.server

    class Drips(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            except OSError:  # gradlab hung up, as it should
                pass

        def log_message(self, *args):
            pass

    uri, server = _serve(Drips)
    try:
        began = time.monotonic()
        with pytest.raises(tracking.TrackingError, match="cannot reach the MLflow tracking server"):
            tracking.preflight(uri, timeout=1)
        waited = time.monotonic() - began
    finally:
        server.shutdown()
    assert waited < 50  # the whole reply would take 100 s


def test_credentials_in_the_tracking_uri_are_sent_and_never_printed():
    """MLflow's client takes http://user:password@host; gradlab's check tried to resolve
    "user:pw@127.0.0.1" as a host name and printed the password."""
    import base64
    import http.server

    seen = []

    class Asks(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if seen[-1] == "Basic " + base64.b64encode(b"ann:s3cret").decode() else 401)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    uri, server = _serve(Asks)
    try:
        tracking.preflight(uri.replace("http://", "http://ann:s3cret@"), timeout=5)
    finally:
        server.shutdown()
    assert seen and set(seen) == {"Basic " + base64.b64encode(b"ann:s3cret").decode()}
    with pytest.raises(tracking.TrackingError) as refused:
        tracking.preflight(f"http://ann:s3cret@127.0.0.1:{free_port()}", timeout=1)
    assert "s3cret" not in str(refused.value) and "http://ann:***@127.0.0.1" in str(refused.value)


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused_it_would_keep_nothing(uri):
    """It exited 0, reporting a run that was never stored anywhere."""
    with pytest.raises(tracking.TrackingError, match="in memory.*nothing would be kept"):
        tracking.preflight(uri)


def test_relative_sqlite_uri_is_read_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/mlflow.db")
    rec = record(Job(compose("train.epochs=3", "tracking.plots=none")), Origin("rel"), quiet=True)
    assert (tmp_path / "rel" / "mlflow.db").is_file()
    assert client(f"sqlite:///{tmp_path}/rel/mlflow.db").get_run(rec.run_id).info.status == "FINISHED"
    assert (tmp_path / "rel" / "artifacts" / "rel").is_dir()  # artifacts beside the database


def test_databricks_is_not_mistaken_for_a_file_store():
    tracking.preflight("databricks")  # no error: a URI scheme of its own, not a folder


@pytest.mark.parametrize("uri", ["{tmp}/mlruns", "file://{tmp}/mlruns", "./mlruns"])
def test_file_store_uri_is_refused_with_what_to_do(tmp_path, monkeypatch, uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(tmp=tmp_path))
    with pytest.raises(tracking.TrackingError) as e:
        tracking.Store()
    assert "MLFLOW_ALLOW_FILE_STORE" in str(e.value) and "sqlite:///" in str(e.value)


def test_old_schema_is_refused_and_never_migrated(temp_store):
    tracking.Store()  # a current store
    db = temp_store[len("sqlite:///"):]
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # MLflow's first migration
    con.commit()
    out = gradlab("train.epochs=2")  # a new process: MLflow checks the schema once per process
    assert out.returncode == 2
    assert f"mlflow db upgrade {temp_store}" in out.stderr and "never" in out.stderr
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "451aebb31d03"
    con.close()


@pytest.mark.slow
def test_real_tracking_server_round_trip(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    try:
        def healthy():
            try:
                tracking.preflight(uri, timeout=1)
                return True
            except tracking.TrackingError:
                assert server.poll() is None, server.stderr.read()
                return False

        wait_for(healthy, timeout=120, every=0.5)
        out = gradlab("train.epochs=30", "experiment=thermometer_sgd_split", env={"MLFLOW_TRACKING_URI": uri})
        assert out.returncode == 0, out.stderr
        r = only_run(uri, "thermometer_sgd_split")
        assert r.info.status == "FINISHED" and r.data.metrics["epochs_run"] == 30
        assert len(client(uri).get_metric_history(r.info.run_id, "train_loss")) == 30
        names = {a.path for a in client(uri).list_artifacts(r.info.run_id)}
        assert {"config.yaml", "history.csv", "params.json", "plots"} <= names
        assert len(history_rows(artifact(r.info.run_id, "history.csv", uri))) == 30
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_dataset_inserted_meanwhile_by_another_writer_is_linked_not_lost(temp_store, monkeypatch):
    """Two writers logging the same dataset into one experiment through MLflow's log_inputs (a
    tracking server's path) race between its look-up and its insert; the loser sees UNIQUE
    constraint failed. Here the race is made to happen once. (Rows: tests/test_bulk.py.)"""
    from mlflow.exceptions import MlflowException

    store = tracking.Store()
    store._sql = None  # MLflow's own path, as through a server
    real, calls = store.client.log_inputs, []

    def raced(run_id, datasets=None, **kw):
        calls.append(run_id)
        if len(calls) == 1:
            real(run_id, datasets=datasets, **kw)  # the other writer's insert lands first...
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                                  "datasets.name, datasets.digest")  # ...and this one's insert fails
        return real(run_id, datasets=datasets, **kw)

    monkeypatch.setattr(store.client, "log_inputs", raced)
    x, y = np.arange(6.0).reshape(3, 2), np.arange(3.0)
    data = [{"name": "d-training", "context": "training", "features": x, "targets": y, "origin": {"a": "b"}, "digest": "d1"}]
    run_id = store.start(RunSpec("race", "r", {}, {}, inputs=data))
    assert len(calls) == 2
    inputs = client(temp_store).get_run(run_id).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["d-training"]


def test_long_values_and_odd_keys_lose_nothing(temp_store, tmp_path):
    store = tracking.Store()
    long_value = "v" * 7000
    r = store.start(RunSpec("odd", "odd", {"a[0]": "x", "long": long_value, "fine.key": "1"}, {"note": "n" * 9000}))
    store.end(r, "FINISHED")
    got = client(temp_store).get_run(r).data
    assert got.params["a_0_"] == "x" and got.params["fine.key"] == "1"
    assert len(got.params["long"]) <= tracking.store.MAX_PARAM_VALUE and got.params["long"].endswith("full value in artifact]")
    assert len(got.tags["note"]) <= tracking.store.MAX_TAG_VALUE
    full = json.loads(artifact(r, "params_full.json", temp_store))
    assert full == {"a[0]": "x", "long": long_value}
    assert json.loads(artifact(r, "tags_full.json", temp_store)) == {"note": "n" * 9000}


def test_a_csv_with_many_columns_keeps_the_full_input_list(temp_store, tmp_path):
    names = [f"sensor_reading_with_a_long_name_{i:03d}" for i in range(250)]
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 251))
    path = tmp_path / "wide.csv"
    path.write_text(",".join([*names, "y"]) + "\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in values) + "\n")
    rec = record(Job(compose("data=csv", f"data.path={path}", f"data.inputs=[{','.join(names)}]", "data.val_fraction=null",
                         "train.epochs=3", "tracking.plots=none")), Origin("wide"), quiet=True)
    r = client(temp_store).get_run(rec.run_id)
    assert len(r.data.params["data.inputs"]) <= tracking.store.MAX_PARAM_VALUE
    assert json.loads(json.loads(artifact(rec.run_id, "params_full.json", temp_store))["data.inputs"]) == names


# ---------------------------------------------------------------------------- provenance
def test_provenance_is_complete(temp_store):
    rec = record(Job(compose("train.epochs=5", "train.seed=7"), ["train.seed=7"]), Origin("prov"), quiet=True)
    r = client(temp_store).get_run(rec.run_id)
    tags = r.data.tags
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    expected_commit = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert tags["gradlab.git.commit"] == expected_commit
    assert tags["gradlab.git.dirty"] in ({"true", "false"} if head.returncode == 0 else {"unknown"})
    for pkg in ("torch", "hydra-core", "mlflow", "numpy"):
        assert tags[f"gradlab.version.{pkg}"] == importlib.metadata.version(pkg)
    assert tags["gradlab.version.python"] == ".".join(map(str, sys.version_info[:3]))
    assert tags["gradlab.device"] == "cpu" and tags["gradlab.seed"] == "7"
    assert tags["gradlab.overrides"] == "train.seed=7"
    assert "seed: 7" in artifact(rec.run_id, "config.yaml", temp_store)
    # datasets: a digest of all of their values, computed here independently
    s = training.setup(compose("train.epochs=5", "train.seed=7"))
    inputs = {d.dataset.name: d for d in r.inputs.dataset_inputs}
    for context, x, y in (("training", s.prepared[0].raw_train, s.prepared[0].y_train), ("validation", s.prepared[0].raw_val, s.prepared[0].y_val)):
        digest = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:32]
        d = inputs[f"thermometer-{context}"]
        assert d.dataset.digest == digest
        assert d.tags[0].value == context


def test_provenance_outside_git_says_unknown(monkeypatch, tmp_path):
    from gradlab import describe

    monkeypatch.setattr(describe, "project_root", lambda: tmp_path)
    tags = provenance()
    assert tags["gradlab.git.commit"] == "unknown" and tags["gradlab.git.dirty"] == "unknown"


def test_history_csv_equals_the_in_memory_history_and_metrics_are_thinned(temp_store):
    rec = record(Job(compose("train.epochs=5000", "tracking.max_points=100", "tracking.plots=none")), Origin("thin"), quiet=True)
    h = rec.result.history
    rows = history_rows(artifact(rec.run_id, "history.csv", temp_store))
    assert list(rows[0]) == h.columns
    assert [[float(v) for v in r.values()] for r in rows] == [[float(v) for v in row.values()] for row in h.records()]
    for key in ("train_loss", "val_loss", "grad_norm", "param.w", "param.b"):
        steps = sorted(m.step for m in client(temp_store).get_metric_history(rec.run_id, key))
        if key.startswith("param."):  # and the final value, after the last update, at step 5001
            assert steps.pop() == 5001
        assert len(steps) <= 100 and min(steps) == 1 and max(steps) == 5000


def test_rerun_reproduces_the_run(temp_store, monkeypatch, capsys):
    from gradlab import cli

    cfg = compose("optimizer.momentum=0.9", "train.batch_size=3", "train.shuffle=true", "train.epochs=200", "train.seed=5")
    first = record(Job(cfg), Origin("again"), quiet=True)
    monkeypatch.setattr(sys, "argv", ["gradlab", "rerun", first.run_id])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 0
    c = client(temp_store)
    runs = c.search_runs([c.get_experiment_by_name("again").experiment_id], order_by=["start_time ASC"])
    assert len(runs) == 2 and runs[1].data.tags["gradlab.rerun_of"] == first.run_id
    texts = [artifact(r.info.run_id, "history.csv", temp_store) for r in runs]
    assert texts[0] == texts[1]
    assert len(history_rows(texts[0])) == 200


def test_rerun_treats_a_stored_config_as_data_not_as_interpolations(temp_store, monkeypatch, capsys):
    from gradlab import cli

    cfg = compose("train.epochs=20")
    first = record(Job(cfg), Origin("again"), quiet=True)
    text = artifact(first.run_id, "config.yaml", temp_store).replace("run_name: null", "run_name: ${oc.env:GRADLAB_SECRET}")
    assert "${oc.env:GRADLAB_SECRET}" in text
    store = tracking.Store(temp_store)
    forged = store.start(RunSpec("again", "forged", {}, {}, files={"config.yaml": text}))
    monkeypatch.setenv("GRADLAB_SECRET", "hunter2")
    monkeypatch.setattr(sys, "argv", ["gradlab", "rerun", forged])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "tracking.run_name" in err and "interpolation" in err
    c = client(temp_store)
    runs = c.search_runs([c.get_experiment_by_name("again").experiment_id])
    assert len(runs) == 2 and "hunter2" not in str([r.data for r in runs])  # nothing ran, nothing leaked


def test_rerun_of_a_job_from_a_resumed_sweep_runs_again(temp_store, monkeypatch):
    from gradlab import cli

    first = record(Job(compose("train.epochs=20", "tracking.skip_finished=true")), Origin("resumed"), quiet=True)
    monkeypatch.setattr(sys, "argv", ["gradlab", "rerun", first.run_id])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 0
    c = client(temp_store)
    assert len(c.search_runs([c.get_experiment_by_name("resumed").experiment_id])) == 2  # not skipped


def test_logged_config_round_trips_to_the_same_typed_config():
    from omegaconf import OmegaConf

    from gradlab.config import to_yaml

    cfg = compose("experiment=mlp_sigmoid", "optimizer=adam", "optimizer.betas=[0.8,0.9]")
    again = from_container(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))))
    assert again == cfg


# --------------------------------------------------------------------------------- plots
PLOTS = [
    (["experiment=thermometer_sgd_split", "train.epochs=50"], {"loss_curves", "fit", "trajectory"}),
    (["experiment=doubling_per_sample_quadratic", "train.epochs=5"], {"loss_curves", "fit"}),
    (["experiment=mlp_sigmoid", "train.epochs=20"], {"loss_curves", "predicted_vs_true"}),
    (["experiment=rosenbrock_gd", "train.epochs=50"], {"loss_curves", "trajectory"}),
    (["experiment=bowl_gd"], {"loss_curves"}),
    (["experiment=bias_column_numpy", "train.epochs=50"], {"loss_curves", "fit", "trajectory"}),
    (["experiment=noisy_line_batches", "train.epochs=50"], {"loss_curves", "trajectory"}),
    (["data=teacher", "model=linear", "train.epochs=5"], {"loss_curves", "predicted_vs_true"}),
    (["experiment=thermometer_handgrad_raw", "optimizer.lr=1e-2", "train.epochs=500"], {"loss_curves", "trajectory"}),
]


@pytest.mark.parametrize("overrides,expected", PLOTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_plot_is_produced_where_it_applies(overrides, expected):
    s, result = training.train(compose(*overrides))
    figs = plots.figures(training.plot_data(s, 0, result, "title"))
    assert {Path(k).stem for k in figs} == expected
    ax = figs["plots/loss_curves.png"].axes[0]
    if result.history.outcome == "diverged":  # the divergence point is marked
        assert any(list(line.get_xdata()) == [result.history.stop_step] * 2 for line in ax.lines)
    if "optimal_train_loss" in result.metrics and result.metrics["optimal_train_loss"] > 0:  # the optimum drawn
        assert any(set(line.get_ydata()) == {result.metrics["optimal_train_loss"]} for line in ax.lines)
    for fig in figs.values():
        fig.savefig(io.BytesIO(), format="png")
        assert all(a.get_xlabel() and a.get_ylabel() for a in fig.axes if a.get_label() != "<colorbar>")


@pytest.mark.slow
def test_a_store_deleted_mid_run_is_an_error_not_a_success(temp_store):
    db = Path(temp_store.removeprefix("sqlite:///"))
    proc = Started([sys.executable, "-m", "gradlab", "train.epochs=100000", "tracking.plots=none"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def started():
        try:
            return store_made(temp_store) and only_run(temp_store)
        except (AttributeError, ValueError):  # the experiment, or its run, is not there yet
            return None

    wait_for(started, timeout=90, proc=proc)
    for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        p.unlink(missing_ok=True)
    out, err = proc.communicate()
    assert proc.returncode == 2, (out, err)
    assert "was deleted or replaced while gradlab recorded into it" in err
    assert "completed after" not in out  # no summary that claims a record


def test_a_recorder_is_known_by_its_pid_and_start_time_not_a_reused_pid():
    from gradlab.tracking.processes import alive as _running
    from gradlab.tracking.processes import process_start as _start_time

    me = os.getpid()
    assert _running(me, _start_time(me))
    assert not _running(me, "0")  # the same pid, another process's start: not the recorder we started


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB file system of its own (tmpfs; needs root, as CI has), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _outcomes(db: Path) -> list[tuple]:
    with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as con:
        return con.execute("SELECT r.status, t.value FROM runs r LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
                           "AND t.key = 'gradlab.error.message'").fetchall()


@pytest.mark.slow
def test_a_disk_that_fills_mid_run_fails_the_run_with_the_disk_error(small_disk):
    """It ended KILLED "the training process ended before recording its end", under 90 lines of
    MLflow's logged tracebacks."""
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    proc = gradlab("train.epochs=2000000", "tracking.max_points=100000", "tracking.plots=none",
                   env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"gradlab: error: cannot write to the store {uri}: database or disk is full; its disk is full: free some "
        "space, or point MLFLOW_TRACKING_URI at another disk"]
    [(status, message)] = _outcomes(small_disk / "mlflow.db")
    assert status == "FAILED" and "database or disk is full" in message


@pytest.mark.slow
def test_reap_on_a_full_disk_says_what_it_could_not_mark_in_one_line_each(small_disk):
    """gradlab reap printed "marked ... KILLED" for runs it could not write, under MLflow's logged
    tracebacks, and exited 0."""
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    proc = start("train.epochs=100000000", "tracking.plots=none", env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: store_made(uri) and _outcomes(small_disk / "mlflow.db"), timeout=90, proc=proc)
    kill_session(proc.pid)  # the trainer and its recorder at once: the run stays RUNNING
    proc.wait()
    with open(small_disk / "filler", "wb") as filler:  # the disk fills to its last byte
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"x" * 65536)
                filler.flush()
    out = gradlab("reap", env={"MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    [line] = out.stdout.strip().splitlines()
    assert line.startswith("could not mark") and "disk is full" in line, line
    (small_disk / "filler").unlink()
    assert gradlab("reap", env={"MLFLOW_TRACKING_URI": uri}).returncode == 0  # space again: it is marked
    assert [status for status, _ in _outcomes(small_disk / "mlflow.db")] == ["KILLED"]


@pytest.mark.slow
def test_a_read_only_store_is_refused_in_one_line_naming_the_fix(small_disk):
    """It got "start_run: (raised as a result of Query-invoked autoflush…)" and 89 lines of
    MLflow's logging. (A read-only file cannot be made for root; a read-only mount can.)"""
    uri = f"sqlite:///{small_disk / 'mlflow.db'}"
    assert gradlab("train.epochs=5", "tracking.plots=none", env={"MLFLOW_TRACKING_URI": uri}).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        proc = gradlab("train.epochs=5", env={"MLFLOW_TRACKING_URI": uri})
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gradlab: error: cannot write to the store {uri}: attempt to write a readonly database; the store or its "
        "folder is read-only: make it writable, or point MLFLOW_TRACKING_URI at a store you can write"]
    assert [status for status, _ in _outcomes(small_disk / "mlflow.db")] == ["FINISHED"]  # nothing half-made


def test_a_failed_write_is_said_by_its_root_cause_under_mlflows_wrappers():
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    from gradlab.tracking.store import write_error

    root = sqlite3.OperationalError("attempt to write a readonly database")
    wrapped = sqlalchemy.exc.OperationalError("INSERT INTO runs ...", {}, root)
    try:
        try:
            raise wrapped
        except sqlalchemy.exc.OperationalError as e:
            raise MlflowException(message=e) from e
    except MlflowException as e:
        said = str(write_error(e, "sqlite:///x.db"))
    assert said.startswith("cannot write to the store sqlite:///x.db: attempt to write a readonly database; ")
    assert "autoflush" not in said and "INSERT" not in said
    assert str(write_error(OSError(28, "No space left on device"), "u")).endswith("point MLFLOW_TRACKING_URI at another disk")


@pytest.mark.parametrize("where, said", [(0, "file is not a database"), (100, "database disk image is malformed")])
def test_a_damaged_store_is_said_to_be_damaged_at_once(temp_store, where, said):
    """A store holding runs, damaged (its header, its schema page): it was blamed on a creation
    that stopped half-way, after a 60 s wait."""
    assert gradlab("train.epochs=5", "tracking.plots=none").returncode == 0
    db = Path(temp_store.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file, none in the log
    with open(db, "r+b") as f:
        f.seek(where)
        f.write(b"\xab" * 4000)
    began = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="is not a database SQLite can read"):
        tracking.Store(temp_store)
    assert time.monotonic() - began < 30  # no wait on a creation that never comes (the CLI adds torch's import)
    proc = gradlab("train.epochs=5", "tracking.plots=none")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"gradlab: error: {db} is not a database SQLite can read ({said}): damaged, or not an MLflow store. Keep a "
        "copy, then try `sqlite3 mlflow.db .recover`, restore it from a backup, or move it away (gradlab then makes a new one)"]


def test_an_empty_store_file_is_said_at_once_and_one_being_made_is_waited_for(tmp_path):
    """A 0-byte mlflow.db waited 60 s for a creation that never came; a store another program is
    making in place (its files changing) is still waited for, however long that takes."""
    import threading

    empty = tmp_path / "empty" / "mlflow.db"
    empty.parent.mkdir()
    empty.touch()
    began = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="is an empty file that nothing is writing"):
        tracking.Store(f"sqlite:///{empty}")
    assert time.monotonic() - began < 30

    db = tmp_path / "made" / "mlflow.db"
    db.parent.mkdir()
    db.touch()

    def another_program():  # busy for longer than the quiet spell, then makes its store in place, as mlflow ui does
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        journal = db.with_name("mlflow.db-journal")
        for k in range(16):
            journal.write_bytes(b"x" * (k + 1))
            time.sleep(0.5)
        journal.unlink()
        SqlAlchemyStore(f"sqlite:///{db}", (tmp_path / "artifacts").as_uri()).engine.dispose()

    writer = threading.Thread(target=another_program)
    writer.start()
    try:
        store = tracking.Store(f"sqlite:///{db}")
        assert not writer.is_alive()  # it waited for the other program to finish
        assert store is not None
    finally:
        writer.join()


def test_a_terminal_that_closed_stops_the_progress_line_not_the_run(monkeypatch):
    """After a hang-up every write to the terminal fails with EIO: the progress line raised it out
    of the run's end (the run then ended KILLED without its history)."""
    import errno

    from gradlab.progress import Progress

    class Gone:
        def write(self, text):
            raise OSError(errno.EIO, "Input/output error")

        def flush(self):
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sys, "stderr", Gone())
    progress = Progress(10, ["train_loss"], enabled=True)
    progress.next = 0.0
    progress(1, [0], [[0.5]])  # would raise
    progress.close()
    assert progress.enabled is False


def test_a_job_skipped_for_a_pruned_twin_is_pruned_for_its_search_too(temp_store):
    """A resumed search's trial whose configuration a pruner already stopped was told COMPLETE,
    with the pruned run's loss as its result."""
    from gradlab.record import record_group

    class Watch:  # a search's eye on a run: stops it at its first report from epoch 40 on
        def __init__(self):
            self.pruned_at = None

        def __call__(self, epoch, value):
            if epoch >= 40 and self.pruned_at is None:
                self.pruned_at = epoch
                return True
            return False

    cfg = compose("train.epochs=200", "tracking.plots=none", "tracking.skip_finished=true")
    first, again = Watch(), Watch()
    (pruned,) = record_group([Job(cfg, watch=first)], Origin("resume"), quiet=True)
    assert pruned.outcome == "pruned" and first.pruned_at is not None
    (skipped,) = record_group([Job(cfg, watch=again)], Origin("resume"), quiet=True)
    assert skipped.run_id == pruned.run_id and skipped.result is None  # not trained again
    assert again.pruned_at == first.pruned_at  # what the search then tells Optuna: pruned there


def test_a_job_reaching_a_worker_whose_launcher_is_gone_starts_no_run(monkeypatch):
    """The orphan watcher saw the worker idle and left with os._exit; a job already queued to it
    could start between that look and the exit, and leave its run RUNNING. Once the watcher has
    decided, a job is refused before its run exists."""
    from gradlab import signals

    ran = []
    with signals.ended_with(None, lambda: None):  # a job before: runs
        ran.append("before")
    monkeypatch.setattr(signals, "_orphaned", threading.Event())
    signals._orphaned.set()  # what the watcher sets, under the same lock a job takes to start
    with pytest.raises(signals.Killed):
        with signals.ended_with(None, lambda: None):
            ran.append("after")
    assert ran == ["before"]
