"""Shared fixtures: the real config composed as users compose it, and a temporary store.

Every test runs with MLFLOW_TRACKING_URI pointing into a temporary folder, so the suite can never
write into the repository's own mlruns/.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A harness may run the suite in the background, where the shell ignores SIGINT and children
# inherit that; the tests that press Ctrl-C on a gradlab process need it delivered as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
CONF = ROOT / "conf"


def compose(*overrides: str):
    """The typed Config for these Hydra overrides, composed from conf/ exactly as the CLI does
    (a fresh copy each call: callers may change it)."""
    return copy.deepcopy(_compose(overrides))


@functools.lru_cache(maxsize=None)
def _compose(overrides: tuple[str, ...]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from gradlab.config import register_configs

    register_configs()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def wait_for(predicate, timeout: float = 60.0, every: float = 0.25, proc=None):
    """Poll `predicate` until it is truthy; fail at once, with its exit status, if `proc` ends first.
    With `proc` (started in a session of its own) the timeout counts only the time its processes
    used no CPU: a loaded machine is slow, not stuck (at most 15 minutes in all)."""
    start = time.monotonic()
    end = start + timeout
    used = session_cpu(proc.pid) if proc is not None else 0.0
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None:
            if proc.poll() is not None:
                raise AssertionError(f"the process ended (exit status {proc.returncode}) before the wait was over")
            # Progress is real work, 2% of a core at least: an idle process's threads tick too.
            if (now_used := session_cpu(proc.pid)) > used + max(0.05, 0.02 * (time.monotonic() - (end - timeout))):
                used, end = now_used, min(time.monotonic() + timeout, start + 900)
        time.sleep(every)
    raise AssertionError("timed out waiting" + (f"\n{session_report(proc.pid)}" if proc is not None else ""))


def _processes():
    """(pid, fields of /proc/PID/stat after the name) of every live process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):
            continue


def session_cpu(sid: int) -> float:
    """CPU seconds used so far by the live processes of session `sid` (a recorder forked out of
    its trainer's tree keeps the session)."""
    ticks = sum(int(f[11]) + int(f[12]) for _, f in _processes() if int(f[3]) == sid)
    return ticks / os.sysconf("SC_CLK_TCK")


def session_report(sid: int) -> str:
    """Where each process of session `sid` is: its state, its signal masks (a signal blocked or
    pending shows here) and, with py-spy, its Python threads' stacks. A hang in CI says where it hung."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    lines = []
    for pid, f in _processes():
        if int(f[3]) != sid:
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        lines.append(f"--- {pid}: {cmd[:200]}")
        lines += [line for line in status if line.startswith(("State", "Sig", "ShdPnd", "Threads"))]
        if spy:
            dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
            lines.append((dump.stdout + dump.stderr).strip())
    return "\n".join(lines)


def kill_session(sid: int) -> None:
    """SIGKILL every process of session `sid`: what a test started ends with it, passed or not."""
    for pid, f in _processes():
        if int(f[3]) == sid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class Started(subprocess.Popen):
    """A command in a session of its own; leaving the `with` kills every process of that session.
    `communicate` waits as long as the session keeps working, not a fixed number of seconds: a
    loaded machine is slow, a hang uses no CPU at all."""

    live: list["Started"] = []  # killed after each test by the autouse fixture `no_process_left`

    def __init__(self, args, **kwargs):
        super().__init__(args, start_new_session=True, **kwargs)
        Started.live.append(self)

    def communicate(self, input=None, quiet: float = 60.0, limit: float = 900.0):
        start = last_change = time.monotonic()
        used = session_cpu(self.pid)
        while True:
            try:
                return super().communicate(input, timeout=2.0)
            except subprocess.TimeoutExpired:
                input = None  # given once
            now, now_used = time.monotonic(), session_cpu(self.pid)
            if now_used > used + max(0.05, 0.02 * (now - last_change)):  # 2% of a core at least: idle threads tick
                used, last_change = now_used, now
            if now - last_change > quiet or now - start > limit:
                raise AssertionError(f"{self.args[:6]}...: still running after {now - start:.0f} s, "
                                     f"{now - last_change:.0f} s of them without using any CPU\n"
                                     + session_report(self.pid))

    def __exit__(self, *exc):
        kill_session(self.pid)
        return super().__exit__(*exc)


@pytest.fixture(autouse=True)
def no_process_left():
    """Every session a test started ends with the test, whether it passed, failed or timed out."""
    yield
    while Started.live:
        kill_session(Started.live.pop().pid)


def start(*args: str, **kwargs) -> Started:
    """`gradlab ARGS` from the repository, in a session of its own (see Started)."""
    return Started([sys.executable, "-m", "gradlab", *args], cwd=ROOT, **kwargs)


def history(uri: str, run_id: str) -> list[dict]:
    """A recorded run's history.csv, row by row (values as text)."""
    import csv
    import io

    import mlflow

    mlflow.set_tracking_uri(uri)
    return list(csv.DictReader(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run_id}/history.csv"))))


def store_made(uri: str) -> bool:
    """True once a process has finished creating the SQLite store at `uri`. Looks without creating:
    a client opened on a store that a gradlab process is still creating would race its migrations."""
    from gradlab.tracking.store import store_ready

    return store_ready(Path(uri.removeprefix("sqlite:///")))


@pytest.fixture(autouse=True, scope="session")
def project_store_untouched():
    """The suite leaves nothing new in the project's own mlruns/ (every test has its own store)."""
    before = set((ROOT / "mlruns").iterdir())
    yield
    added = sorted(str(p.relative_to(ROOT)) for p in set((ROOT / "mlruns").iterdir()) - before)
    assert not added, f"the test suite wrote into the project's store: {added}"


@pytest.fixture(autouse=True)
def temp_store(tmp_path_factory, monkeypatch):
    """A fresh SQLite store per test; returns its URI."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def runs(temp_store):
    """All runs of the temporary store, as MLflow returns them (a DataFrame per call)."""
    def read(experiment: str | None = None):
        import mlflow

        if not Path(temp_store[len("sqlite:///"):]).exists():
            return []  # the store was never created, so nothing was recorded

        client = mlflow.MlflowClient(temp_store)
        exps = [e.experiment_id for e in client.search_experiments()
                if experiment is None or e.name == experiment]
        if not exps:
            return []
        return client.search_runs(exps, max_results=10000)

    return read


def gradlab(*args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """The console script in a subprocess (`python -m gradlab`), with the test's environment."""
    return subprocess.run([sys.executable, "-m", "gradlab", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=kw.pop("cwd", ROOT), **kw)


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """gradlab's console entry point, in-process (a multirun's jobs run in this process with
    Hydra's basic launcher, its bookkeeping in tmp_path); returns (exit code, stdout, stderr)."""
    from hydra.core.global_hydra import GlobalHydra

    import gradlab.cli

    def call(*args):
        GlobalHydra.instance().clear()
        monkeypatch.setattr(sys, "argv", ["gradlab", *args, f"hydra.sweep.dir={tmp_path}/multirun"])
        code = 0
        try:
            gradlab.cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            GlobalHydra.instance().clear()
            os.environ.pop("GRADLAB_SWEEP", None)  # a sweep that ended leaves none; one that failed may
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def short_id(value):
    """A parametrize id for a long text parameter: its length. A test's id goes into
    PYTEST_CURRENT_TEST, which subprocesses inherit; past 128 KiB the kernel refuses to start them."""
    return f"{len(value)}-characters" if isinstance(value, str) and len(value) > 100 else None
