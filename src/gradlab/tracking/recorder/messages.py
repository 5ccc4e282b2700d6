"""What the trainer and its recorder say to each other: a closed set of requests, each a
frozen dataclass, and the typed replies. A request that returns nothing is not waited for; if
it fails, a Failed reply names the runs it was about, so that a sweep knows whose record failed."""

from __future__ import annotations

from dataclasses import dataclass

from gradlab.tracking.spec import START_TOKEN, RunEnd, RunSpec  # noqa: F401 - START_TOKEN: read here too
from gradlab.tracking.store import TrackingError
from gradlab.tracking.stream import Points


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Open:
    """Open (or create) the store; then load matplotlib while the trainer is busy."""
    uri: str


@dataclass(frozen=True)
class Start:
    """Create runs; `keys` name them in later messages (their ids come back as they exist)."""
    keys: tuple[int, ...]
    specs: tuple[RunSpec, ...]


@dataclass(frozen=True)
class Log:
    """Step metrics of several runs."""
    points: Points


@dataclass(frozen=True)
class Finish:
    """The ends of several runs: metrics, tags, files, figures, status."""
    keys: tuple[int, ...]
    ends: tuple[RunEnd, ...]


@dataclass(frozen=True)
class Tag:
    """Tags set on a run while it runs (a sweep's parent: how far it has got)."""
    key: int
    tags: dict[str, str]


@dataclass(frozen=True)
class Reopen:
    """A finished run RUNNING again under a key (a sweep's parent, resumed)."""
    key: int
    run_id: str


@dataclass(frozen=True)
class Sync:
    """Answered once everything sent before it is done."""


@dataclass(frozen=True)
class Ask:
    """A read (a function of tracking.query, by name, with its arguments); answered with its result."""
    query: str
    args: tuple = ()


@dataclass(frozen=True)
class Draw:
    """Draw these runs' figures into their records (gradlab.redraw), their configs trusted: the sweep
    that asks ran them itself. Answered with (how many were drawn, [(run id, why not)...])."""
    run_ids: tuple[str, ...]


ANSWERED = (Sync, Ask, Draw)  # the sender waits for these
QUERIES = ("finished", "children", "latest_sweep", "metric_history")  # what Ask may call


class RecorderGone(TrackingError):
    """The recorder process died (killed, out of memory): the trainer ends what it held."""


def keys_of(request) -> tuple[int, ...]:
    """The runs a request is about (none: the store itself)."""
    if isinstance(request, (Start, Finish)):
        return request.keys
    if isinstance(request, Log):
        return tuple(request.points)
    if isinstance(request, (Reopen, Tag)):
        return (request.key,)
    return ()


# ------------------------------------------------------------------------------ replies
@dataclass(frozen=True)
class Pid:
    """The recorder's first word: the process to know it by (it is not the trainer's child)."""
    pid: int


@dataclass(frozen=True)
class Started:
    """Runs made: key -> run id."""
    ids: dict[int, str]


@dataclass(frozen=True)
class Answer:
    value: object


@dataclass(frozen=True)
class Failed:
    """A request failed: gradlab's one line, and the runs it was about (none: the store itself)."""
    text: str
    keys: tuple[int, ...] = ()
