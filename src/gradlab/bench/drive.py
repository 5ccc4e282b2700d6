"""gradlab's inner loop timed as a run's trainer drives it: the step metrics thinned and batched
(then dropped, not handed to a recorder) and the progress line (silent)."""

from __future__ import annotations

import time


def fit_seconds(s, epochs: int) -> float:
    """Seconds of training.fit over the set-up problem `s`, its rows followed as a run's are."""
    from gradlab import training
    from gradlab.progress import Progress
    from gradlab.tracking import MetricStream

    history = training.new_histories(s)
    keys = list(range(1, len(history) + 1))
    stream = MetricStream(lambda points: None, keys, history[0].columns, s.schedule.expected_rows(), 1000)
    progress = Progress(epochs, history[0].metrics, False)

    def on_log(epoch, configs, rows):
        stream(epoch, configs, rows)
        progress(epoch, configs, rows)

    start = time.perf_counter()
    training.fit(s, history, on_log)
    return time.perf_counter() - start
