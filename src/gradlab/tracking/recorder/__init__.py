"""The recorder: a background process that does a trainer's MLflow work.

    messages.py  the closed set of requests and their typed replies
    server.py    the recorder process: requests executed in order, artifacts drawn and written
    client.py    the trainer's side of one recorder process (Recorder, a RunSink)
    pool.py      the recorders of this process (REGISTRY) and a sweep's pool of them (Recorders)
"""

from gradlab.tracking.recorder.client import Recorder, RecorderGone
from gradlab.tracking.recorder.pool import REGISTRY, Recorders

__all__ = ["REGISTRY", "Recorder", "RecorderGone", "Recorders"]
