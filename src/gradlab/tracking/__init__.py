"""Everything that talks to MLflow; no module outside this package imports it.

    store.py       which store, the checks before training, its creation, and every write
    spec.py        a run's start and end as plain data (RunSpec, RunEnd) and its statuses
    stream.py      step metrics of a group of runs, thinned and batched
    recorder/      the recorder process, its closed set of messages, the trainer's side of it, pools
    sink.py        RunSink: what the recorder and a pool of recorders offer alike
    ends.py        who ends a run, in order: the trainer, the recorder, a sweep's end, reap
    query.py       every read, answered as gradlab's own RunRecords
    reap.py        runs left RUNNING by a process that died hard
    processes.py   processes known by pid and start time (a reused pid is not ours)
    ui.py          the MLflow UI: the URLs that open its runs views, serving it

Importing the package costs no mlflow import: the trainer uses it before torch is loaded.
"""

from gradlab.tracking.recorder import REGISTRY, Recorder, RecorderGone, Recorders
from gradlab.tracking.spec import RESULTS, STATUS, RunEnd, RunSpec
from gradlab.tracking.store import Store, TrackingError, masked, preflight, project_root, tracking_uri
from gradlab.tracking.stream import MetricStream

__all__ = ["REGISTRY", "RESULTS", "STATUS", "MetricStream", "Recorder", "RecorderGone", "Recorders", "RunEnd", "RunSpec", "Store",
           "TrackingError", "masked", "preflight", "project_root", "tracking_uri"]
