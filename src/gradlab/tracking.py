"""Everything that talks to MLflow. No other module imports mlflow.

- The store: `MLFLOW_TRACKING_URI` when set, else the embedded SQLite store `mlruns/mlflow.db` at
  the project root. It is checked before training (unreachable server, file store, old schema)
  and created once under a file lock, since two processes creating one SQLite store corrupt it.
- Metrics go in batches (`log_batch`), thinned to at most `max_points` per metric; the full
  history goes to `history.csv`.
- Keys and values MLflow would reject or truncate are made valid, with the originals kept in an
  artifact, so nothing is silently lost.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

# MLflow's own defaults retry an unreachable server for minutes; bound them unless the user chose.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # no network here, and no reason to phone home
}
for _k, _v in _ENV_DEFAULTS.items():
    os.environ.setdefault(_k, _v)

# Tells the MLflow UI these are training runs, so it opens on the runs table, not its GenAI view.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
STATUS = {"completed": "FINISHED", "converged": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "killed": "KILLED"}
MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000  # MAX_TAG_VAL_LENGTH
MAX_KEY = 250  # MAX_ENTITY_KEY_LENGTH
BATCH_METRICS = 1000  # MAX_METRICS_PER_BATCH
BATCH_PARAMS = 100  # MAX_PARAMS_TAGS_PER_BATCH
FLUSH_SECONDS = 2.0  # metrics reach the store at least this often during a run


class TrackingError(RuntimeError):
    """The store cannot be used as configured; the message says what to do."""


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_uri() -> str:
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def tracking_uri() -> str:
    """The store to use, a relative SQLite path made absolute against this working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    db = _sqlite_path(uri)
    if db is not None:
        query = uri.split("?", 1)[1] if "?" in uri else ""
        uri = f"sqlite:///{db}" + (f"?{query}" if query else "")
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a SQLite URI, absolute (MLflow reads a relative one against the cwd)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):].split("?")[0]).resolve()


def preflight(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before training, on a store that cannot work; never migrates anything."""
    scheme = urlparse(uri).scheme
    a_path = scheme == "file" or (scheme == "" and (os.sep in uri or uri.startswith((".", "~")) or Path(uri).is_dir()))
    if a_path and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise TrackingError(
            f"tracking URI {uri!r} is an MLflow file store, which MLflow 3 refuses by default. Use a "
            "database instead (e.g. MLFLOW_TRACKING_URI=sqlite:////abs/path/mlflow.db, or unset it for "
            "gradlab's embedded store), or opt in with MLFLOW_ALLOW_FILE_STORE=true."
        )
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                r.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it "
                "(mlflow server --host 127.0.0.1 --port 5000 ...), fix MLFLOW_TRACKING_URI, "
                "or unset it to use gradlab's embedded store."
            ) from None


def _store_ready(db: Path) -> bool:
    """True once MLflow has created its tables (and the Default experiment) in `db`."""
    if not db.is_file() or db.stat().st_size == 0:
        return False
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute("SELECT count(*) FROM experiments WHERE experiment_id = 0").fetchone()[0] == 1
        finally:
            con.close()
    except sqlite3.Error:
        return False


@contextmanager
def _creation_lock(db: Path, blocking: bool = True):
    """The lock held while a store is created; not blocking, BlockingIOError if someone holds it."""
    with open(db.with_name(db.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _translate(e: Exception, uri: str) -> Exception:
    text = str(e)
    if "out-of-date database schema" in text or "db upgrade" in text:
        return TrackingError(
            f"the store {uri} was made by an older MLflow and its schema is out of date. gradlab never "
            f"migrates a store by itself: back it up, then run `mlflow db upgrade {uri}`, or point "
            "MLFLOW_TRACKING_URI at a fresh path."
        )
    return TrackingError(f"cannot use the tracking store {uri}: {text.splitlines()[0] if text else type(e).__name__}")


class Store:
    """An opened tracking store: experiments and runs, through one MlflowClient."""

    def __init__(self, uri: str | None = None):
        self.uri = uri or tracking_uri()  # the recorder passes the URI its trainer resolved
        preflight(self.uri)
        self.db = _sqlite_path(self.uri)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        creating = False
        try:
            if self.db is not None:
                self.db.parent.mkdir(parents=True, exist_ok=True)
                if not _store_ready(self.db):
                    with _creation_lock(self.db):
                        if not _store_ready(self.db):
                            creating = True
                            MlflowClient(self.uri).search_experiments(max_results=1)
                            con = sqlite3.connect(self.db)  # readers (the UI) never block the writer
                            con.execute("PRAGMA journal_mode=WAL")
                            con.close()
            self.client = MlflowClient(self.uri)
            self.client.search_experiments(max_results=1)
        except Exception as e:  # MLflow's, SQLAlchemy's and Alembic's errors (unwritable folder, not a database)
            if not isinstance(e, (MlflowException, OSError, sqlite3.Error)) and \
                    not type(e).__module__.startswith(("sqlalchemy", "alembic")):
                raise
            error = _translate(e, self.uri)
            if creating:  # programs that create one new SQLite store at once break each other's migrations
                error = TrackingError(
                    f"{error}, while creating it: another program (mlflow ui, a script) may have been "
                    f"creating the same new store at that moment. Delete {self.db} and start again."
                )
            raise error from None

    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"experiment {name!r} is deleted in {self.uri}; restore it in the UI, pick another "
                    "tracking.experiment, or purge it with `mlflow gc`"
                )
            for key, value in EXPERIMENT_TAGS.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.db is not None:  # artifacts beside the database, as absolute paths
            safe = re.sub(r"[^\w.-]+", "_", name).strip("._") or "experiment"
            location = (self.db.parent / "artifacts" / safe).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created meanwhile by a concurrent process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_run(self, experiment: str, run_name: str, params: dict, tags: dict,
                  parent_run_id: str | None = None) -> "Run":
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        safe_tags, tag_extra = sanitize(tags, MAX_TAG_VALUE)
        run = self.client.create_run(self.experiment_id(experiment), run_name=run_name, tags=safe_tags)
        r = Run(self, run.info.run_id)
        r.log_params(params)
        if tag_extra:
            r.extra_files["tags_full.json"] = json.dumps(tag_extra, indent=2)
        return r

    def run(self, run_id: str) -> "Run":
        return Run(self, run_id)

    def finished_run(self, experiment: str, config_hash: str) -> tuple[str, str, dict] | None:
        """(run id, outcome, metrics) of the latest run of `experiment` with this config hash that
        reached a result (completed, converged or diverged: a diverged learning rate is a result
        too), or None."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.`gradlab.config_hash` = '{config_hash}'",
                                       order_by=["attributes.start_time DESC"], max_results=100)
        for r in runs:
            outcome = r.data.tags.get("gradlab.outcome")
            if outcome in ("completed", "converged", "diverged"):
                return r.info.run_id, outcome, dict(r.data.metrics)
        return None

    def children(self, parent_id: str) -> list:
        """The nested runs of a parent run."""
        exp_id = self.client.get_run(parent_id).info.experiment_id
        return self.client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                                       max_results=50000)

    def resumable_parent(self, experiment: str, sweep: str, sweep_hash: str) -> "Run | None":
        """The latest parent run of the same sweep (same grid), reopened, to resume into."""
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = self.client.search_runs(
            [exp.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`gradlab.sweep_hash` = '{sweep_hash}' and tags.`gradlab.role` = 'sweep'")
        if not runs:
            return None
        self.client.update_run(runs[0].info.run_id, status="RUNNING")
        run = Run(self, runs[0].info.run_id)
        run.set_tags({"gradlab.outcome": "running"})
        return run

    def download_text(self, run_id: str, path: str) -> str:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="gradlab-") as tmp:
            try:
                local = self.client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError) as e:
                raise TrackingError(f"cannot read {path} of run {run_id} in {self.uri}: {str(e).splitlines()[0]}") from None
            return Path(local).read_text()


def sanitize(values: dict, max_value: int) -> tuple[dict[str, str], dict[str, str]]:
    """Keys made valid for MLflow, values cut to its limit; returns (safe, originals that changed)."""
    safe, changed = {}, {}
    for key, value in values.items():
        value = "" if value is None else str(value)
        k = re.sub(r"[^\w./\- ]", "_", key)[:MAX_KEY] or "_"
        v = value
        if len(value) > max_value:
            note = " …[truncated; full value in artifact]"
            v = value[: max_value - len(note)] + note
        if k != key or v != value:
            changed[key] = value
        safe[k] = v
    return safe, changed


class Run:
    """One MLflow run: params, batched metrics, artifacts, and its end."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.client, self.id = store, store.client, run_id
        self.extra_files: dict[str, str] = {}  # artifacts that keep originals MLflow could not take

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        safe, changed = sanitize(params, MAX_PARAM_VALUE)
        items = [Param(k, v) for k, v in safe.items()]
        for i in range(0, len(items), BATCH_PARAMS):
            self.client.log_batch(self.id, params=items[i:i + BATCH_PARAMS], synchronous=True)
        if changed:
            self.extra_files["params_full.json"] = json.dumps(changed, indent=2)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        safe, changed = sanitize(tags, MAX_TAG_VALUE)
        items = [RunTag(k, v) for k, v in safe.items()]
        for i in range(0, len(items), BATCH_PARAMS):
            self.client.log_batch(self.id, tags=items[i:i + BATCH_PARAMS], synchronous=True)
        if changed:
            full = json.loads(self.extra_files.get("tags_full.json", "{}"))
            self.extra_files["tags_full.json"] = json.dumps({**full, **changed}, indent=2)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.log_points([(k, v, step) for k, v in metrics.items()])

    def log_points(self, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) triples in batches; non-finite values are never sent."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(s)) for k, v, s in points if math.isfinite(v)]
        for i in range(0, len(items), BATCH_METRICS):
            self.client.log_batch(self.id, metrics=items[i:i + BATCH_METRICS], synchronous=True)

    def log_inputs(self, datasets: list[dict]) -> None:
        """datasets: dicts with name, context, features, targets (arrays), digest, and either
        path (a file) or origin (a dict describing how the data were generated)."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for d in datasets:
            source = d.get("path") or CodeDatasetSource(d["origin"])
            with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                ds = mlflow.data.from_numpy(d["features"], targets=d["targets"], source=source,
                                            name=d["name"], digest=d["digest"])
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", d["context"])]))
        self.client.log_inputs(self.id, datasets=inputs)

    def log_artifacts(self, files: dict[str, object]) -> None:
        """Write files (relative path -> str, bytes or a matplotlib Figure) and log them in one call."""
        files = {**self.extra_files, **files}
        with tempfile.TemporaryDirectory(prefix="gradlab-") as tmp:
            for rel, content in files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    path.write_text(content)
                elif isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    content.savefig(path, dpi=100)
            self.client.log_artifacts(self.id, tmp)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.id, status)

    def finish(self, status: str, metrics: dict, step: int, tags: dict, files: dict, plot_data: dict | None = None) -> None:
        """The end of a run in one go: metrics, tags, artifacts and figures, then the status,
        which is set whatever failed before it. A figure that cannot be drawn is noted in a tag
        (gradlab.plot_error) rather than failing a run whose results are sound."""
        try:
            self.log_metrics(metrics, step=step)
            if plot_data:
                try:
                    from gradlab.plots import figures

                    files = {**files, **figures(plot_data)}
                except Exception as e:  # noqa: BLE001 - recorded, never lost
                    tags = {**tags, "gradlab.plot_error": f"{type(e).__name__}: {e}"}
            self.set_tags(tags)
            self.log_artifacts(files)
        finally:
            self.end(status)


class MetricStream:
    """Per-epoch rows -> thinned points, sent in batches at least every FLUSH_SECONDS.

    Keeps every `stride`-th row so each metric has at most `max_points` points; the first row is
    kept and the last one is added by `close`. history.csv has every row regardless. Rows are
    turned into points only when flushed: this is called every epoch, inside the training loop.
    """

    def __init__(self, run, columns: list[str], expected_rows: int, max_points: int):
        self.run, self.columns = run, columns
        self.stride = max(1, math.ceil(expected_rows / (max_points - 1)))
        self.kept: list = []
        self.seen = 0
        self.last_sent_step = None
        self.last_row = None
        self.last_flush = time.monotonic()

    def __call__(self, row: list[float]) -> None:
        self.last_row = row
        if self.seen % self.stride == 0:
            self.kept.append(row)
        self.seen += 1
        if self.kept and (time.monotonic() - self.last_flush > FLUSH_SECONDS
                          or len(self.kept) * len(self.columns) >= BATCH_METRICS):
            self.flush()

    def flush(self) -> None:
        if self.kept:
            keys = self.columns[1:]
            self.run.log_points([(k, v, int(r[0])) for r in self.kept for k, v in zip(keys, r[1:])])
            self.last_sent_step = int(self.kept[-1][0])
            self.kept = []
        self.last_flush = time.monotonic()

    def close(self) -> None:
        if self.last_row is not None and self.last_sent_step != int(self.last_row[0]) \
                and not (self.kept and self.kept[-1] is self.last_row):
            self.kept.append(self.last_row)
        self.flush()


def runs_frame(store: Store, experiment_ids: list[str], filter_string: str = ""):
    """Runs as MLflow's own pandas DataFrame (params come back as strings)."""
    import mlflow

    mlflow.set_tracking_uri(store.uri)  # the fluent search reads the global URI
    return mlflow.search_runs(experiment_ids, filter_string=filter_string, max_results=50000,
                              output_format="pandas")


def metric_history(store: Store, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in store.client.get_metric_history(run_id, key)]


# --------------------------------------------------------------------- the recorder
class Recorder:
    """A background process that does this process's MLflow work: opening the store, logging,
    drawing the figures. It starts before torch is imported, so importing mlflow and opening the
    store overlap the import of torch, and logging overlaps training; runs stream to it through
    a pipe. On two cores, the MLflow side costs the trainer little more than the final wait.

    The child executes calls on its Store and Run objects in the order they were sent. Calls that
    return nothing are not waited for; an error in one comes back and is raised as TrackingError
    at the next call. The child ignores SIGINT/SIGTERM (the trainer handles them and sends the
    end of its run); if the trainer dies without ending a run, the child marks it KILLED.
    """

    _shared: "Recorder | None" = None

    def __init__(self):
        import atexit
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        # A plain interpreter on two inherited pipes: nothing of this process crosses over (no
        # SQLite handle, no start method of a launcher's worker pool, no __main__ re-import).
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"from gradlab.tracking import _serve; _serve({down_r}, {up_w})"],
            pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL)
        os.close(down_r)
        os.close(up_w)
        self._send = Connection(down_w, readable=False)
        self._recv = Connection(up_r, writable=False)
        self._keys = 0
        self.run_ids: dict[int, str] = {}
        self.runs_started = False  # until then the child holds nothing worth waiting for
        self.uri: str | None = None
        atexit.register(Recorder.shutdown)

    def alive(self) -> bool:
        return self._proc.poll() is None

    @classmethod
    def shared(cls) -> "Recorder":
        if cls._shared is None or not cls._shared.alive():
            cls._shared = cls()
        return cls._shared

    @classmethod
    def shutdown(cls, timeout: float = 300.0) -> None:
        """Let the child finish what it was sent, then go."""
        rec, cls._shared = cls._shared, None
        if rec is None:
            return
        if not rec.runs_started and rec._stop_idle():
            return
        try:
            rec._send.send(None)
        except OSError:
            pass
        if not rec.runs_started:  # it is creating a store: let it finish alone, nothing of ours waits on it
            return
        try:
            rec._proc.wait(timeout)
        except Exception:  # noqa: BLE001 - a stuck recorder must not hang the exit forever
            rec._proc.kill()

    def _stop_idle(self) -> bool:
        """Kill a recorder that holds no run, unless it is creating a SQLite store (killing that
        could leave a half-made database): holding the creation lock proves it is not."""
        db = _sqlite_path(self.uri) if self.uri else None
        if db is None or not db.parent.is_dir():
            self._proc.kill()
            self._proc.wait()
            return True
        try:
            with _creation_lock(db, blocking=False):
                self._proc.kill()
                self._proc.wait()
        except BlockingIOError:
            return False
        return True

    def key(self) -> int:
        self._keys += 1
        return self._keys

    def _handle(self, message) -> tuple[bool, object]:
        """(is the reply to a waited call, its value); raises what failed."""
        if message[0] == "run":
            self.run_ids[message[1]] = message[2]
            return False, None
        if message[0] == "error":
            raise TrackingError(message[1])
        return True, message[1]

    def _receive(self):
        try:
            return self._recv.recv()
        except (EOFError, OSError):
            raise TrackingError("the gradlab recorder process stopped; a run it held may need `gradlab reap`") from None

    def poll(self) -> None:
        """Raise now if something sent earlier failed (never blocks)."""
        while self._recv.poll():
            self._handle(self._receive())

    def call(self, target: int, method: str, *args, wait: bool = False, **kwargs):
        self.poll()
        try:
            self._send.send((target, method, args, kwargs, wait))
        except OSError:
            raise TrackingError("the gradlab recorder process stopped; a run it held may need `gradlab reap`") from None
        while wait:
            done, value = self._handle(self._receive())
            if done:
                return value

    def run_id(self, key: int) -> str:
        while key not in self.run_ids:
            self._handle(self._receive())
        return self.run_ids[key]

    def sync(self) -> None:
        """Block until everything sent so far has been done; raise what failed."""
        self.call(0, "sync", wait=True)

    def store(self, uri: str | None = None) -> "RemoteStore":
        uri = uri or tracking_uri()
        preflight(uri)  # fail fast in this process: it needs no mlflow
        key = self.key()
        self.uri = uri
        self.call(0, "open_store", key, uri)
        return RemoteStore(self, key, uri)


class RemoteStore:
    """A Store living in the recorder process."""

    def __init__(self, recorder: Recorder, key: int, uri: str):
        self.recorder, self.key, self.uri = recorder, key, uri

    def start_run(self, experiment, run_name, params, tags, parent_run_id=None) -> "RemoteRun":
        self.recorder.runs_started = True
        key = self.recorder.key()
        self.recorder.call(self.key, "start_run", experiment, run_name, params, tags, parent_run_id, _key=key)
        return RemoteRun(self.recorder, key)

    def finished_run(self, experiment: str, config_hash: str):
        return self.recorder.call(self.key, "finished_run", experiment, config_hash, wait=True)


class RemoteRun:
    """A Run living in the recorder process; the same methods, sent down the pipe."""

    def __init__(self, recorder: Recorder, key: int):
        self.recorder, self.key = recorder, key

    @property
    def id(self) -> str:
        return self.recorder.run_id(self.key)

    def metric_stream(self, columns, expected_rows, max_points) -> "MetricStream":
        return MetricStream(self, columns, expected_rows, max_points)

    def __getattr__(self, method):
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self.recorder.call(self.key, method, *args, **kwargs)


def _serve(read_fd: int, write_fd: int) -> None:
    """The recorder process: execute calls in order until the pipe closes."""
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # Ctrl-C reaches the whole group; the trainer decides
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    from multiprocessing.connection import Connection

    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    import mlflow.tracking  # noqa: F401 - the slow import, done while the trainer imports torch
    objects: dict[int, object] = {}
    stores: dict[str, Store] = {}
    open_runs: dict[int, Run] = {}
    spent: dict[str, float] = {}  # seconds per kind of call, for the benchmark's breakdown
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            break
        target, method, args, kwargs, wait = message
        began = time.perf_counter()
        try:
            if method == "sync":
                result = None
            elif method == "timings":
                import resource

                result = {"seconds": dict(spent), "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
            elif method == "open_store":
                key, uri = args
                if uri not in stores:
                    stores[uri] = Store(uri)
                objects[key] = stores[uri]
                result = None
                spent["open_store"] = spent.get("open_store", 0.0) + time.perf_counter() - began
                began = time.perf_counter()
                method = "preload_matplotlib"
                import gradlab.plots  # noqa: F401 - matplotlib loads now, while the trainer is busy
            elif method == "start_run":
                key = kwargs.pop("_key")
                run = objects[target].start_run(*args, **kwargs)
                objects[key] = open_runs[key] = run
                outbox.send(("run", key, run.id))
                result = None
            else:
                result = getattr(objects[target], method)(*args, **kwargs)
                if method in ("end", "finish"):
                    open_runs.pop(target, None)
            spent[method] = spent.get(method, 0.0) + time.perf_counter() - began
            if wait:
                outbox.send(("ok", result, method, True))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the trainer
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            try:
                outbox.send(("error", text if isinstance(e, TrackingError) else f"{method}: {text}", method, wait))
            except OSError:
                pass
    for run in open_runs.values():  # the trainer went away without ending these
        try:
            run.set_tags({"gradlab.outcome": "killed", "gradlab.reason": "the training process ended before recording its end"})
            run.end("KILLED")
        except Exception:  # noqa: BLE001 - nothing left to tell; reap can close it
            pass
    # Every write is committed; tearing down mlflow, SQLAlchemy and matplotlib only costs time.
    outbox.close()
    os._exit(0)


def find_runs(store: Store, filter_string: str, experiment_ids: list[str] | None = None) -> list:
    """Runs matching an MLflow filter, across all experiments unless given."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in store.client.search_experiments()]
    if not experiment_ids:
        return []
    return store.client.search_runs(experiment_ids, filter_string=filter_string, max_results=50000)


def process_start(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "unknown"


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = process_start(pid)
    return start in (None, "", "unknown") or now == "unknown" or now == start


def reap_runs(store: Store, dry_run: bool = False) -> list[str]:
    """Mark KILLED the RUNNING runs whose recorded process on this host is gone; report each."""
    host, lines = socket.gethostname(), []
    for r in find_runs(store, "attributes.status = 'RUNNING'"):
        tags, rid = r.data.tags, r.info.run_id
        label = f"{rid} ({r.info.run_name})"
        if tags.get("gradlab.host") != host:
            lines.append(f"left alone {label}: recorded on host {tags.get('gradlab.host', 'unknown')!r}, not this one")
            continue
        pid = int(tags.get("gradlab.pid") or 0)
        if pid and _alive(pid, tags.get("gradlab.pid_start")):
            lines.append(f"left alone {label}: process {pid} is alive")
            continue
        reason = f"reaped: process {pid} on {host} is gone"
        if not dry_run:
            run = store.run(rid)
            run.set_tags({"gradlab.outcome": "killed", "gradlab.reason": reason})
            run.end("KILLED")
        lines.append(f"{'would mark' if dry_run else 'marked'} {label} KILLED: {reason}")
    if not lines:
        lines.append("no RUNNING runs")
    return lines
