"""gradlab against a real `mlflow server` started here, on loopback: with MLflow's basic auth
(credentials from the environment, refusals in one line), and stopped then started again on its
port in the middle of a sweep (nothing lost, nothing left RUNNING). Slow tier: each starts a
server (about 10 s of imports) and gradlab in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Started, start, wait_for
from gradlab.tracking.spec import STATUS

pytestmark = pytest.mark.slow
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on 127.0.0.1:`port` with a SQLite backend in `folder`, in a session of its
    own (conftest's Started: killed with the test, passed or failed); `stop` and `start` again
    keep the port and the database."""

    def __init__(self, folder: Path, auth: bool = False):
        self.folder, self.auth, self.port = folder, auth, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: Started | None = None
        self.env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
        self.env.update(MLFLOW_TRACKING_URI="", MLFLOW_DISABLE_TELEMETRY="true")
        if auth:
            (folder / "auth.ini").write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                # each request's password hash costs 0.3 s of a core here: checked once a minute
                "auth_cache_ttl_seconds = 60\n")
            self.env.update(MLFLOW_AUTH_CONFIG_PATH=str(folder / "auth.ini"), MLFLOW_AUTH_ADMIN_PASSWORD="admin-pw-4711",
                            MLFLOW_FLASK_SERVER_SECRET_KEY="gradlab-test-secret")

    def start(self) -> "Server":
        args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
                "--artifacts-destination", str(self.folder / "artifacts")]
        if self.auth:
            args += ["--app-name", "basic-auth"]
        log = open(self.folder / "server.log", "a")
        self.proc = Started(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self.healthy, timeout=120, every=0.5, proc=self.proc)
        return self

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Killed hard, as a crash or an OOM kill would: no goodbye to its clients."""
        from conftest import kill_session

        kill_session(self.proc.pid)
        self.proc.wait()

    def client(self):
        """An MlflowClient of this server (the admin's, where auth is on: see `auth_server`)."""
        import mlflow

        return mlflow.MlflowClient(self.uri)

    def all_runs(self):
        client = self.client()
        return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10000)


@pytest.fixture
def auth_server(tmp_path, monkeypatch):
    """A server with MLflow's basic auth; this test process reads it as its admin (MLflow's
    client takes the credentials from the environment; gradlab's subprocesses get their own)."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (make install puts it in .venv)")
    server = Server(tmp_path, auth=True).start()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "admin-pw-4711")
    return server


def run_as(server: Server, creds: dict, *args: str) -> tuple[int, str]:
    """`gradlab ARGS` recording into `server` with these environment variables (and no others of
    the credentials): (exit status, stdout + stderr)."""
    env = {**server.env, "MLFLOW_TRACKING_URI": server.uri, **creds}
    env.pop("MLFLOW_AUTH_ADMIN_PASSWORD", None)
    proc = start(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    return proc.returncode, out + err


def test_basic_auth_credentials_from_the_environment_refusals_in_one_line(auth_server):
    """MLflow's basic-auth app: no credentials, a wrong password and a write the user may not make
    are each one line (exit 2) naming the variables, never the password, with nothing recorded;
    the right ones record every run, and no run holds the password anywhere."""
    from mlflow.server.auth.client import AuthServiceClient

    AuthServiceClient(auth_server.uri).create_user("ann", "ann-pw-8015-secret")
    auth_server.client().create_experiment("admins-own")
    quick = ("train.epochs=20", "tracking.plots=none")

    code, said = run_as(auth_server, {}, *quick)
    assert code == 2, said
    lines = [line for line in said.splitlines() if line.startswith("gradlab: error:")]
    assert lines == [said.strip().splitlines()[-1]], said
    assert "asks for credentials (401)" in said and "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in said

    code, said = run_as(auth_server, {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "not-her-pw-6190"},
                        *quick)
    assert code == 2, said
    assert "refused the credentials of user 'ann' (401 Unauthorized)" in said and "Traceback" not in said
    assert "not-her-pw-6190" not in said

    ann = {"MLFLOW_TRACKING_USERNAME": "ann", "MLFLOW_TRACKING_PASSWORD": "ann-pw-8015-secret"}
    code, said = run_as(auth_server, ann, *quick, "tracking.experiment=admins-own")  # READ only: a run is a write
    assert code == 2, said
    assert "denies user 'ann' permission (403)" in said and "tracking.experiment" in said and "Traceback" not in said
    assert "ann-pw-8015-secret" not in said
    assert len(auth_server.all_runs()) == 0  # nothing recorded by any refusal

    code, said = run_as(auth_server, ann, "-m", *quick, "tracking.experiment=anns", "optimizer.lr=0.01,0.02,0.03")
    assert code == 0, said
    assert "ann-pw-8015-secret" not in said
    runs = auth_server.all_runs()
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # a parent and its 3 children
    for r in runs:
        recorded = [*r.data.params.items(), *r.data.tags.items()]
        assert not [kv for kv in recorded if "ann-pw-8015-secret" in str(kv)]
        if "mlflow.parentRunId" in r.data.tags:
            config = Path(auth_server.client().download_artifacts(r.info.run_id, "config.yaml", str(auth_server.folder)))
            assert "ann-pw-8015-secret" not in config.read_text() and "train:" in config.read_text()


def test_a_tracking_server_killed_mid_sweep_and_started_again_loses_no_run(tmp_path):
    """Issue 25's fault: a server killed and back 23 s later left 3 children RUNNING. The server
    (SQLite behind it) is killed once some children are recorded, started again on its port once
    the sweep has said it waits for it: every job's run is there once, FINISHED with its final
    metrics and history (or FAILED where it diverged), the parent too, nothing RUNNING."""
    server = Server(tmp_path).start()
    err = tmp_path / "sweep.err"
    with open(err, "w") as stderr:
        sweep = start("-m", "hydra/launcher=batched", "optimizer=sgd,adam,rmsprop,adagrad", "optimizer.lr=0.001,0.01,0.1",
                      "train.epochs=3000", "tracking.experiment=restarts", f"hydra.sweep.dir={tmp_path}/multirun",
                      env={**server.env, "MLFLOW_TRACKING_URI": server.uri}, stdout=subprocess.PIPE, stderr=stderr, text=True)

    def children_finished() -> int:
        return sum(r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags for r in server.all_runs())

    wait_for(lambda: children_finished() >= 3, timeout=120, proc=sweep)
    server.stop()
    wait_for(lambda: "does not answer" in err.read_text(), timeout=120, proc=sweep)  # its own retries gave up
    server.start()
    out, _ = sweep.communicate()
    said = err.read_text()
    assert sweep.returncode == 0, said
    assert "answers again after" in said and "Traceback" not in said, said
    runs = server.all_runs()
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 12 and len({r.info.run_name for r in children}) == 12  # each job once
    client = server.client()
    for r in children:  # each as the sweep trained it: completed (FINISHED) or diverged (FAILED), never left
        outcome = r.data.tags["gradlab.outcome"]
        assert outcome in ("completed", "diverged") and r.info.status == STATUS[outcome], (r.info.run_name, outcome)
        assert r.data.metrics["epochs_run"] == 3000 or outcome == "diverged"
        assert "history.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}
