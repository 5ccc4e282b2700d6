"""Who ends a run, in one place. Every run gradlab starts is ended by the first of these that is
still there to do it:

1. the trainer, through its recorder (record.RunGroup): a result; FAILED with the exception that
   stopped it; KILLED by a signal; each with its metrics and history so far;
2. the trainer itself, when its recorder died (RecorderGone): `write_here`, for each run the
   store still holds RUNNING (an end the recorder wrote before it died stays);
3. the recorder, when its trainer went away without an end (kill -9): `kill`, KILLED;
4. at a sweep's end, the launcher: the runs of its recorders that died before writing the ends
   they were sent, and that the store still holds RUNNING, FAILED (`lost`,
   Registry.end_orphans); the parent's end (`end_parent`), written from the launcher if its
   recorder is gone or answers an earlier failure instead;
   A Slurm task that died without writing its runs' ends (SIGKILL to it and its recorders):
   the launcher, once every task is over, KILLED (`kill_running_children`);
5. `gradlab reap`, when both processes are gone (power loss): `kill`, for runs whose process on
   this host no longer exists.
"""

from __future__ import annotations

import sys

from gradlab.tracking.artifacts import files
from gradlab.tracking.recorder.messages import START_TOKEN, RecorderGone
from gradlab.tracking.spec import RunEnd
from gradlab.tracking.query import children
from gradlab.tracking.store import Store, TrackingError, is_store_error, write_error


def write_here(uri: str, runs: list[tuple[str | None, tuple[str, str] | None]], run_ends: list[RunEnd]) -> None:
    """Ends written from this process: each run by its id, or by (experiment, start token) where
    its recorder died before saying the id; a run never made, or no longer RUNNING, is left."""
    store = None
    for (run_id, starting), end in zip(runs, run_ends):
        store = store or Store(uri)
        run_id = run_id or (_by_token(store, *starting) if starting else None)
        if run_id is not None and store.client.get_run(run_id).info.status == "RUNNING":
            store.finish(run_id, end, files(end))


def kill(store, run_id: str, reason: str) -> str | None:
    """KILLED, with the reason: its process is gone (what it logged stays). Returns why it could
    not be written (a full disk, say), in one line; reap can close it later."""
    try:
        store.set_tags(run_id, {"gradlab.outcome": "killed", "gradlab.reason": reason})
        store.end(run_id, "KILLED")
    except Exception as e:  # noqa: BLE001 - said by the caller; the run stays RUNNING for reap
        return str(write_error(e, store.uri) if is_store_error(e) else e).splitlines()[0]
    return None


def kill_running_children(uri: str, parent_id: str, tag: str, values: set[str], reason: str) -> int:
    """The children of `parent_id` still RUNNING whose `tag` is one of `values`, KILLED with the
    reason; how many there were."""
    store = Store(uri)
    left = [c for c in children(store, parent_id) if c.status == "RUNNING" and c.tags.get(tag) in values]
    for c in left:
        kill(store, c.id, reason)
    return len(left)


def lost() -> RunEnd:
    """The end of a run whose recorder died holding its end."""
    return RunEnd("failed", {}, {"gradlab.error.type": "RecorderGone", "gradlab.error.message":
                                 "its end was never written: its recorder process stopped first (what it logged before stays)"})


def recorded_here(end: RunEnd) -> RunEnd:
    """The end of a run whose recorder died while it trained on (a sweep's other recorders kept
    the batch going), written from the trainer: its result, history.csv and figures whole, its
    step metrics from the recorder's death on missing, and a tag that says so."""
    end.tags = {**end.tags, "gradlab.recorder_gone": "its recorder process stopped while it trained: its step "
                "metrics end there (history.csv is whole); this end was written by the training process"}
    return end


def end_parent(sink, key: int, end: RunEnd) -> None:
    """A sweep's parent's end, written from this process if its recorder died (kill -9) or
    answered an earlier write's failure instead (the end may not have been sent: written here
    if still RUNNING)."""
    try:
        sink.finish([key], [end])
        sink.sync()
    except RecorderGone:
        sink.finish_here([key], [end])
    except TrackingError as e:
        print(f"gradlab: error: {e}", file=sys.stderr)
        try:
            sink.finish_here([key], [end])
        except TrackingError as again:  # the store refuses it too (full, read-only): `make reap` closes it
            print(f"gradlab: error: the sweep's parent run could not be ended: {again}", file=sys.stderr)


def _by_token(store, experiment: str | None, token: str | None) -> str | None:
    """The run made with this start token, if the recorder got that far."""
    exp = store.client.get_experiment_by_name(experiment) if experiment else None
    if exp is None:
        return None
    found = store.client.search_runs([exp.experiment_id], filter_string=f"tags.`{START_TOKEN}` = '{token}'", max_results=1)
    return found[0].info.run_id if found else None
