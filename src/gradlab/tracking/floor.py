"""MLflow's own floor for a run, the benchmark's reference for what a sweep's child costs: runs
created and ended through MlflowClient (create_run, then set_terminated) one after another, with
nothing logged, into a store made as gradlab makes one."""

from __future__ import annotations

import time

from gradlab.tracking.store import Store


def seconds_per_run(uri: str, runs: int) -> float:
    """Wall seconds a run costs MLflow, created and ended `runs` times into the store at `uri`."""
    client = Store(uri).client
    exp = client.create_experiment(f"floor-{time.time_ns()}")
    client.set_terminated(client.create_run(exp).info.run_id)  # the first run pays one-off costs
    start = time.perf_counter()
    for _ in range(runs):
        client.set_terminated(client.create_run(exp).info.run_id)
    return (time.perf_counter() - start) / runs
