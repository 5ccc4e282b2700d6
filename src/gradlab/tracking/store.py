"""The tracking store: which one, the checks before training, its creation, and every write.

- The store is `MLFLOW_TRACKING_URI` when set, else the embedded SQLite store `mlruns/mlflow.db`
  at the project root. `preflight` refuses a store that cannot work before anything trains
  (unreachable server, file store); an old schema is refused when the store opens. The store is
  created once, under a file lock: two processes creating one SQLite store corrupt it.
- Writes go in few round-trips: params and tags in one `log_batch`, metrics in batches.
- Keys and values MLflow would reject or truncate are made valid, with the originals kept in an
  artifact, so nothing is silently lost.

mlflow is imported inside the methods: the trainer imports this module for the URI checks and
never pays for mlflow.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from gradlab import timings
from gradlab.tracking import bulk
from gradlab.tracking.spec import START_TOKEN, TABLE_TAG, RunEnd, RunSpec

# MLflow's own defaults retry an unreachable server for minutes; bound them unless the user chose.
_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_DISABLE_TELEMETRY": "true",  # no network here, and no reason to phone home
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # gradlab prints its own progress, or none
}
for _k, _v in _ENV_DEFAULTS.items():
    os.environ.setdefault(_k, _v)

# Marks the experiments as training (not GenAI) ones. Which page the UI opens on is the browser's
# own setting, though: the URLs that `gradlab ui` prints choose it (tracking/ui.py).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MAX_PARAM_VALUE = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
MAX_TAG_VALUE = 8000  # MAX_TAG_VAL_LENGTH
MAX_KEY = 250  # MAX_ENTITY_KEY_LENGTH
BATCH_METRICS = 1000  # MAX_METRICS_PER_BATCH
BATCH_PARAMS = 100  # MAX_PARAMS_TAGS_PER_BATCH
INPUT_ATTEMPTS = 5  # log_inputs, when a concurrent writer inserts the same dataset first
# what a database says of that insert: SQLite; PostgreSQL (through a tracking server too); MySQL
DUPLICATE = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry")


class TrackingError(RuntimeError):
    """The store cannot be used as configured; the message says what to do. It may quote a URI
    or a server's reply: its passwords are masked and its escape sequences shown (gradlab.safe),
    from the Python API as from the command line."""

    def __init__(self, message: str = ""):
        from gradlab import safe

        super().__init__(safe.message(message))


# ------------------------------------------------------------------------- which store
def project_root() -> Path:
    return Path(__file__).resolve().parents[3]


def default_uri() -> str:
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def tracking_uri() -> str:
    """The store to use, a relative SQLite path made absolute against this working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_uri()
    db = sqlite_path(uri)
    if db is not None:
        query = uri.split("?", 1)[1] if "?" in uri else ""
        uri = f"sqlite:///{db}" + (f"?{query}" if query else "")
    return uri


def sqlite_path(uri: str) -> Path | None:
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
    if scheme == "sqlite" and uri.split("?")[0] in ("sqlite://", "sqlite:///:memory:"):
        raise TrackingError(f"tracking URI {uri!r} is a SQLite database in memory: nothing would be kept once gradlab "
                            "exits. Name a file (MLFLOW_TRACKING_URI=sqlite:////abs/path/mlflow.db), or unset it for "
                            "gradlab's embedded store.")
    if scheme in ("http", "https"):
        _answers(uri, "/health", timeout, "cannot reach the MLflow tracking server at {uri} ({reason})")
        # A server may answer /health while its API (its database behind it) stalls: MLflow's own
        # retries would then take a minute per call. Ask the API itself, once, as briefly, with
        # the credentials MLflow's client will send: a server with basic auth refuses them here.
        # Twice the time: such a server hashes the password of each request it has not cached
        # (scrypt, 0.3 s of a core here), more on a loaded machine.
        status = _answers(uri, "/api/2.0/mlflow/experiments/search?max_results=1", 2 * timeout,
                          "the MLflow tracking server at {uri} answers /health but not its API ({reason})")
        if status in (401, 403):
            raise TrackingError(refused(uri, status))


def credentials(uri: str) -> tuple[str, str] | None:
    """The (user, password) MLflow's client sends to a server: the URI's own (http://user:pw@host),
    else MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. gradlab never takes them from a
    config, and never records them: a run's params, tags and config.yaml hold neither."""
    parts = urlparse(uri)
    if parts.username is not None:
        return parts.username, parts.password or ""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user or password:
        return user or "", password or ""
    return None


def refused(uri: str, status: int) -> str:
    """What a server with authentication said to gradlab's credentials (401, 403), in one line
    that names the variables to fix and never the password."""
    from gradlab import safe

    who = credentials(uri)
    if who is None:
        return (f"the MLflow tracking server at {masked(uri)} asks for credentials ({status}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your account on it (gradlab takes them "
                "from the environment only, never from a config)")
    user = safe.text(who[0])
    if status == 401:
        return (f"the MLflow tracking server at {masked(uri)} refused the credentials of user {user!r} (401 "
                "Unauthorized): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    return (f"the MLflow tracking server at {masked(uri)} denies user {user!r} permission (403): ask its "
            "admin for EDIT on the experiment, or record into an experiment of your own (tracking.experiment=NAME)")


def folder_name(name: str, longest: int = 120) -> str:
    """A name (an experiment's) as one safe folder name: no separators, no leading dot (so
    ../../x or /abs/path stays inside its folder), and short enough for any file system (MLflow
    allows 500 characters, a folder name 255 bytes): a long one keeps its start and a hash of the whole."""
    import hashlib

    safe = re.sub(r"[^\w.-]", "_", name)
    safe = safe if safe and not safe.startswith(".") else "_" + safe
    if len(safe.encode()) > longest:  # bytes: a letter may take four
        cut = safe.encode()[:longest - 9].decode(errors="ignore")
        safe = cut + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


def masked(uri: str) -> str:
    """The URI as it may be printed: a password in it (http://user:password@host) is ***."""
    parts = urlparse(uri)
    if parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _answers(uri: str, path: str, timeout: float, problem: str) -> int:
    """Ask `path` of the server, all of its reply within `timeout`: a socket timeout alone counts
    each read, and a server that drips a byte a second never trips it. Credentials (`credentials`)
    go as HTTP basic auth, as MLflow sends them. Returns the HTTP status it answered with."""
    import base64
    import threading

    parts = urlparse(uri)
    request = urllib.request.Request(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl().rstrip("/") + path)
    if (who := credentials(uri)) is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode())
    failed: list[BaseException] = []
    status: list[int] = []

    def ask() -> None:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                r.read()
                status.append(r.status)
        except urllib.error.HTTPError as e:
            status.append(e.code)  # it answered (an API that needs other parameters still answers)
        except (urllib.error.URLError, OSError, ValueError) as e:
            failed.append(e)

    asking = threading.Thread(target=ask, name="gradlab-preflight", daemon=True)
    asking.start()
    asking.join(timeout)
    if asking.is_alive():
        failed.append(OSError(f"it did not answer {path.split('?')[0]} within {timeout:g} s"))
    if failed:
        raise TrackingError(
            problem.format(uri=masked(uri), reason=getattr(failed[0], "reason", failed[0])) + ". Start or restart it "
            "(mlflow server --host 127.0.0.1 --port 5000 ...), fix MLFLOW_TRACKING_URI, "
            "or unset it to use gradlab's embedded store."
        ) from None
    return status[0] if status else 0


# ---------------------------------------------------------------------------- creation
def store_ready(db: Path) -> bool:
    """True once MLflow has created its tables (and the Default experiment) in `db`."""
    return _state(db) == "ready"


def _state(db: Path) -> str:
    """"ready", "incomplete" (no file, or tables not made yet: someone may be creating it), or what
    SQLite says of a file that is not a database it can read (damaged, or not SQLite at all)."""
    if not db.is_file() or db.stat().st_size == 0:
        return "incomplete"
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            made = con.execute("SELECT count(*) FROM experiments WHERE experiment_id = 0").fetchone()[0] == 1
            return "ready" if made else "incomplete"
        finally:
            con.close()
    except sqlite3.OperationalError:  # no such table yet, locked: a store being made
        return "incomplete"
    except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
        return str(e)


@contextmanager
def creation_lock(db: Path, blocking: bool = True):
    """The lock held while a store is created; not blocking, BlockingIOError if someone holds it."""
    with open(db.with_name(db.name + ".lock"), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _status(e: BaseException) -> int | None:
    """The HTTP status of a tracking server's refusal (MLflow's RestException), else None."""
    code = getattr(e, "get_http_status_code", None)
    try:
        return code() if callable(code) else None
    except Exception:  # noqa: BLE001 - an MlflowException without a REST reply
        return None


def _translate(e: Exception, uri: str) -> TrackingError:
    if (status := _status(e)) in (401, 403):
        return TrackingError(refused(uri, status))
    text = str(e)
    if "out-of-date database schema" in text or "db upgrade" in text:
        return TrackingError(
            f"the store {masked(uri)} was made by an older MLflow and its schema is out of date. gradlab never "
            f"migrates a store by itself: back it up, then run `mlflow db upgrade {masked(uri)}`, or point "
            "MLFLOW_TRACKING_URI at a fresh path."
        )
    return TrackingError(f"cannot use the tracking store {masked(uri)}: {text.splitlines()[0] if text else type(e).__name__}")


DAMAGED = ("Keep a copy, then try `sqlite3 mlflow.db .recover`, restore it from a backup, or move it away "
           "(gradlab then makes a new one)")
# The root causes of a failed write that have a fix to name: (words of SQLite's message, errno).
WRITE_FAULTS = (
    (("readonly database", "read-only file system"), errno.EROFS,
     "the store or its folder is read-only: make it writable, or point MLFLOW_TRACKING_URI at a store you can write"),
    (("disk is full", "no space left"), errno.ENOSPC,
     "its disk is full: free some space, or point MLFLOW_TRACKING_URI at another disk"),
    (("malformed", "not a database"), None, "the file is damaged. " + DAMAGED),
)


def _root_cause(e: BaseException) -> BaseException:
    """The deepest error under MLflow's and SQLAlchemy's wrappers (the DBAPI's, the OS's)."""
    while True:
        inner = getattr(e, "orig", None) or e.__cause__
        if not isinstance(inner, BaseException) or inner is e:
            return e
        e = inner


def write_error(e: Exception, uri: str) -> TrackingError:
    """A store's failed write said in one line: its root cause, and the fix where one is known
    (MLflow's own message leads with SQLAlchemy's autoflush advice)."""
    if (status := _status(e)) in (401, 403):  # a server with authentication: credentials, permissions
        return TrackingError(refused(uri, status))
    root = _root_cause(e)
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    for words, code, fix in WRITE_FAULTS:
        if (code is not None and getattr(root, "errno", None) == code) or any(w in text.lower() for w in words):
            return TrackingError(f"cannot write to the store {masked(uri)}: {text}; {fix}")
    return TrackingError(f"cannot write to the store {masked(uri)}: {text}")


def is_store_error(e: Exception) -> bool:
    """MLflow's, SQLAlchemy's and Alembic's errors, and the file system's (unwritable folder)."""
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, OSError, sqlite3.Error)) or type(e).__module__.startswith(("sqlalchemy", "alembic"))


def open_client(uri: str, db: Path | None):
    """An MlflowClient on a working store, creating a SQLite one under the creation lock."""
    from mlflow.tracking import MlflowClient

    if db is not None and db.is_dir():
        raise TrackingError(f"the store {masked(uri)} is a folder, not a database file: point MLFLOW_TRACKING_URI at a file in it, "
                            f"e.g. sqlite:///{db / 'mlflow.db'}")
    try:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            if not store_ready(db):
                with creation_lock(db):
                    if not store_ready(db) and not db.exists():
                        create(db)
                wait_ready(db)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
        return client
    except Exception as e:
        if not is_store_error(e):
            raise
        raise _translate(e, uri) from None


def create(db: Path) -> None:
    """A new SQLite store, made in a file beside its final path and moved into place only once
    complete: no reader ever sees a half-made store, and gradlab never migrates one that another
    program (mlflow ui, a script) is creating there. If one appears meanwhile, theirs is kept."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    part = db.with_name(f".{db.name}.creating-{os.getpid()}")
    leftovers = [part, *(part.with_name(part.name + s) for s in ("-wal", "-shm", "-journal"))]
    try:
        with _quiet("mlflow.store.db.utils"):  # "Creating initial MLflow database tables...": gradlab says what it does
            made = SqlAlchemyStore(f"sqlite:///{part}", (db.parent / "artifacts").as_uri())
        made.engine.dispose()
        con = sqlite3.connect(part)  # readers (the UI) never block the writer
        con.execute("PRAGMA journal_mode=WAL")
        con.close()
        try:
            os.link(part, db)  # atomic, and only where there is no file yet
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, under the lock, where none is yet
            if not db.exists():
                os.replace(part, db)
    finally:
        for p in leftovers:
            p.unlink(missing_ok=True)


@contextmanager
def _quiet(name: str):
    """A logger's INFO lines off for a while (a level set higher, as the recorder sets it, stays)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def wait_ready(db: Path, quiet: float = 5.0) -> None:
    """Until the store at `db` is complete, while another program (mlflow ui, a script) is still
    creating it: as long as its files change. One that stays incomplete and untouched for `quiet`
    seconds is nobody's creation (a 0-byte file, a creation that died half-way)."""
    seen, since = None, time.monotonic()
    while (state := _state(db)) != "ready":
        if state != "incomplete":
            raise TrackingError(f"{db} is not a database SQLite can read ({state}): damaged, or not an MLflow store. "
                                f"{DAMAGED}")
        now = _touched(db)
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > quiet:
            what = "an empty file" if db.is_file() and db.stat().st_size == 0 else "an incomplete MLflow store"
            raise TrackingError(f"{db} is {what} that nothing is writing (a creation that stopped half-way?); "
                                "move it away, and gradlab makes a new one")
        time.sleep(0.1)


def _touched(db: Path) -> tuple:
    """The sizes and modification times of a store's files: they change while it is being made."""
    def stat(path: Path):
        try:
            st = path.stat()
            return st.st_size, st.st_mtime_ns
        except OSError:
            return None

    return tuple(stat(db.with_name(db.name + suffix)) for suffix in ("", "-wal", "-journal"))


# ------------------------------------------------------------------------------ writes
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


# A tracking server that stops and starts again (a crash, an upgrade, its host rebooted) refuses
# connections meanwhile, and MLflow's own retries (bounded above) give up within seconds: each
# call is tried again until the server answers, SERVER_WAIT seconds at most from the first
# failure of an outage. Once that is spent, calls fail at once until one succeeds again: a
# server that is gone costs one wait, not one per write.
SERVER_WAIT = 180.0
# what MLflow's REST client (requests, urllib3) says when the server did not answer at all
UNANSWERED = ("Max retries exceeded", "Connection refused", "Connection aborted", "RemoteDisconnected",
              "Connection reset", "NewConnectionError", "too many 502", "too many 503", "too many 504")


def unanswered(e: BaseException) -> bool:
    """True where the server did not answer (down, restarting), not where it refused the call."""
    if _status(e) in (502, 503, 504) or isinstance(e, ConnectionError):
        return True
    while e is not None:
        if any(w in str(e) for w in UNANSWERED) or type(e).__name__ in ("ConnectionError", "ChunkedEncodingError"):
            return True
        e = e.__cause__ or e.__context__
    return False


class _Patient:
    """An MlflowClient of a tracking server whose calls wait out the server's restarts (see
    SERVER_WAIT), saying so on stderr once an outage starts and once it ends. A call retried after
    the server went down mid-request may repeat a write it had made: a batch's metrics or tags
    again (the same values); a run's making is not repeated (Store._create_run)."""

    def __init__(self, client, uri: str, wait: float = SERVER_WAIT):
        self._client, self._uri, self._wait = client, uri, wait
        self._down_since: float | None = None

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        return lambda *args, **kwargs: self.call(lambda: attr(*args, **kwargs))

    def call(self, first, again=None):
        """first(), tried again (as again(), where given) while the server does not answer."""
        import sys

        delay, attempt = 0.5, first
        while True:
            try:
                value = attempt()
            except Exception as e:
                if not unanswered(e):
                    raise
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                    print(f"gradlab: the tracking server at {masked(self._uri)} does not answer; trying again "
                          f"for up to {self._wait:.0f} s", file=sys.stderr, flush=True)
                if now - self._down_since >= self._wait:
                    raise
                time.sleep(min(delay, self._wait - (now - self._down_since)))
                delay, attempt = min(2 * delay, 5.0), again or first
                continue
            if self._down_since is not None:
                print(f"gradlab: the tracking server at {masked(self._uri)} answers again after "
                      f"{time.monotonic() - self._down_since:.0f} s", file=sys.stderr, flush=True)
                self._down_since = None
            return value


class Store:
    """An opened tracking store: every write gradlab makes, through one MlflowClient."""

    def __init__(self, uri: str | None = None):
        # MLflow logs each failed store write with its traceback before raising it; gradlab says
        # the error itself, in one line (write_error), in whichever process writes.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri = uri or tracking_uri()  # the recorder passes the URI its trainer resolved
        preflight(self.uri)
        self.db = sqlite_path(self.uri)
        self.client = open_client(self.uri, self.db)
        if urlparse(self.uri).scheme in ("http", "https"):
            self.client = _Patient(self.client, self.uri)
        self._full_tags: dict[str, dict] = {}  # run id -> tag values MLflow could not take whole
        self._artifact_repos: dict[str, object] = {}  # run id -> where its files go, for the runs it started
        self._sql = bulk.sql_store(self.client)  # metrics, params and tags go in as rows where the store is SQL
        self._run_experiments: dict[str, str] = {}  # experiment name -> id, for the runs this store starts
        self._inode = self.db.stat().st_ino if self.db is not None else None

    def still_there(self) -> None:
        """Raise if the database file was deleted or replaced since it was opened: SQLite would go
        on writing into the deleted file, and every record would be lost without a word."""
        if self.db is None:
            return
        try:
            same = self.db.stat().st_ino == self._inode
        except FileNotFoundError:
            same = False
        if not same:
            raise TrackingError(f"the store {self.db} was deleted or replaced while gradlab recorded into it; "
                                "what was recorded since went with the old file. Run again to record it anew")

    # ---------------------------------------------------------------- experiments
    def experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"experiment {name!r} is deleted in {masked(self.uri)}; restore it in the UI, pick another "
                    "tracking.experiment, or purge it with `mlflow gc`"
                )
            for key, value in EXPERIMENT_TAGS.items():
                if key not in exp.tags:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        location = None
        if self.db is not None:  # artifacts beside the database, as absolute paths
            location = (self.db.parent / "artifacts" / folder_name(name)).as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except MlflowException:  # created meanwhile by a concurrent process
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # ----------------------------------------------------------------------- runs
    def start(self, spec: RunSpec) -> str:
        """Create a run with its params, tags, inputs and first files; returns its id."""
        tags = dict(spec.tags)
        if spec.parent_id:
            tags["mlflow.parentRunId"] = spec.parent_id
        safe_tags, full_tags = sanitize(tags, MAX_TAG_VALUE)
        # Looked up once: a sweep's recorder starts thousands of runs in one experiment (about 3 ms a
        # look-up). One deleted meanwhile still refuses its runs: MLflow's create_run checks.
        if spec.experiment not in self._run_experiments:
            self._run_experiments[spec.experiment] = self.experiment_id(spec.experiment)
        run_id, artifact_uri = self._create_run(self._run_experiments[spec.experiment], spec.name, safe_tags)
        if self._sql is not None:  # MLflow would read the whole run back to find where its files go
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            self._artifact_repos[run_id] = get_artifact_repository(artifact_uri, tracking_uri=self.uri)
        safe_params, full_params = sanitize(spec.params, MAX_PARAM_VALUE)
        self._write(run_id, params=safe_params, inputs=self.dataset_inputs(spec.inputs))
        files = dict(spec.files)
        if full_params:
            files["params_full.json"] = json.dumps(full_params, indent=2)
        if full_tags:
            self._full_tags[run_id] = full_tags
            files["tags_full.json"] = json.dumps(full_tags, indent=2)
        if files:
            with timings.measure("start: files"):
                self.log_artifacts(run_id, files)
        return run_id

    def _create_run(self, experiment_id: str, name: str, tags: dict) -> tuple[str, str]:
        """A new run's id and artifact URI. Through a server that went down mid-request, the run may have been made
        all the same: a retry first looks for it by its start token."""
        def create() -> tuple[str, str]:
            info = raw.create_run(experiment_id, run_name=name, tags=tags).info
            return info.run_id, info.artifact_uri

        def again() -> tuple[str, str]:
            found = raw.search_runs([experiment_id], filter_string=f"tags.`{START_TOKEN}` = '{token}'", max_results=1)
            return (found[0].info.run_id, found[0].info.artifact_uri) if found else create()

        token = tags.get(START_TOKEN)
        if not isinstance(self.client, _Patient):
            raw = self.client
            return create()
        raw = self.client._client
        return self.client.call(create, again if token else None)

    def _log_batch(self, run_id: str, params: dict | None = None, tags: dict | None = None, metrics: list | None = None):
        """Params and tags together, in MLflow's batch limits (100 of them, 1000 metrics)."""
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in (params or {}).items()]
        tags = [RunTag(k, v) for k, v in (tags or {}).items()]
        metrics = metrics or []
        while params or tags or metrics:
            p, params = params[:BATCH_PARAMS], params[BATCH_PARAMS:]
            room = BATCH_PARAMS - len(p)  # params and tags share one limit
            t, tags = tags[:room], tags[room:]
            m, metrics = metrics[:BATCH_METRICS], metrics[BATCH_METRICS:]
            self.client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=True)

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    def set_tags(self, run_id: str, tags: dict) -> None:
        safe, full = sanitize(tags, MAX_TAG_VALUE)
        self._write(run_id, tags=safe)
        if full:
            self._full_tags[run_id] = {**self._full_tags.get(run_id, {}), **full}
            self.log_artifacts(run_id, {"tags_full.json": json.dumps(self._full_tags[run_id], indent=2)})

    def log_points(self, run_id: str, points: list[tuple[str, float, int]]) -> None:
        """(key, value, step) triples in batches; non-finite values are never sent."""
        now = int(time.time() * 1000)
        self._write(run_id, points=[(k, float(v), now, int(s)) for k, v, s in points if math.isfinite(v)])

    def _write(self, run_id: str, params: dict | None = None, tags: dict | None = None, points: list = (),
               status: str | None = None, inputs: list = ()) -> bool:
        """A run's params, tags, finite metric points, (key, value, timestamp, step), and
        DatasetInputs in one write: as rows on a SQL store (tracking.bulk), else, or where that
        cannot, through MLflow's own log_batch and log_inputs. With `status`, True where the run
        was ended in the same write."""
        from mlflow.entities import Metric, Param, RunTag

        as_params = [Param(k, v) for k, v in (params or {}).items()]
        as_tags = [RunTag(k, v) for k, v in (tags or {}).items()]
        if self._sql is not None and bulk.insert_rows(self._sql, run_id, list(points), as_params, as_tags, status,
                                                      list(inputs)):
            return status is not None
        self._log_batch(run_id, params, tags, [Metric(*p) for p in points])
        if inputs:
            self._log_inputs(run_id, list(inputs))
        return False

    @staticmethod
    def dataset_inputs(datasets: list[dict]) -> list:
        """MLflow's DatasetInputs of datasets: dicts with name, context, features, targets
        (arrays), digest, and either path (a file) or origin (a dict describing how the data
        were generated)."""
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
        return inputs

    def _log_inputs(self, run_id: str, inputs: list) -> None:
        """DatasetInputs through MLflow's own log_inputs (a tracking server, or where rows cannot)."""
        from mlflow.exceptions import MlflowException

        for attempt in range(INPUT_ATTEMPTS):
            try:
                self.client.log_inputs(run_id, datasets=inputs)
                return
            except MlflowException as e:
                # Runs of one experiment share a dataset row: another process (a second recorder, a
                # parallel job) may insert it between MLflow's look-up and its insert. Once it is
                # there, the next attempt finds it and links it.
                if not any(m in str(e) for m in DUPLICATE) or attempt == INPUT_ATTEMPTS - 1:
                    raise

    def log_artifacts(self, run_id: str, files: dict[str, object]) -> None:
        """Write files (relative path -> str, bytes, or an iterable of str written part by part)
        and log them in one call."""
        with tempfile.TemporaryDirectory(prefix="gradlab-") as tmp:
            for rel, content in files.items():
                path = Path(tmp, rel)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, str):
                    path.write_text(content)
                elif isinstance(content, bytes):
                    path.write_bytes(content)
                else:
                    with path.open("w") as f:
                        f.writelines(content)
            repo = self._artifact_repos.get(run_id)
            repo.log_artifacts(tmp) if repo is not None else self.client.log_artifacts(run_id, tmp)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def finish(self, run_id: str, end: RunEnd, files: dict[str, object]) -> None:
        """The end of a run in few round-trips: its files, then its final metrics, params, tags
        and status in one write. Files first: a recorder that dies between the two leaves a
        RUNNING run (found and marked killed), never a finished one without its history. The
        metrics are written whatever the files did, and the status whatever failed before it."""
        ended = False
        try:
            now = int(time.time() * 1000)
            # Final metrics at step 0: the UI charts single-valued metrics as bars across runs.
            points = [(k, float(v), now, 0) for k, v in end.metrics.items() if math.isfinite(v)]
            points += [(k, float(v), now, int(step)) for k, v, step in end.points if math.isfinite(v)]
            safe, full = sanitize(end.tags, MAX_TAG_VALUE)
            if full:
                self._full_tags[run_id] = {**self._full_tags.get(run_id, {}), **full}
                files = {**files, "tags_full.json": json.dumps(self._full_tags[run_id], indent=2)}
            try:
                if files:
                    with timings.measure("finish: files"):
                        self.log_artifacts(run_id, files)
            finally:
                ended = self._write(run_id, params=sanitize(end.params, MAX_PARAM_VALUE)[0], tags=safe, points=points,
                                    status=end.status)
        finally:
            if not ended:
                self.end(run_id, end.status)
            self._full_tags.pop(run_id, None)
            self._artifact_repos.pop(run_id, None)
        self.still_there()

    def reopen(self, run_id: str) -> None:
        """A finished run RUNNING again (a sweep's parent, resumed)."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {"gradlab.outcome": "running", TABLE_TAG: ""})  # its table is old until its end
