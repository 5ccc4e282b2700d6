"""gradlab: composable, recorded, comparable gradient-descent experiments.

From Python (a notebook): gradlab.run, gradlab.sweep, gradlab.runs, gradlab.history, gradlab.draw_plots (gradlab.api).
"""

API = ("run", "sweep", "runs", "history", "draw_plots", "RunResult", "SweepResult")


def __getattr__(name: str):
    # Loaded on first use: the CLI imports this package too, and need not pay for pandas.
    if name in API:
        from gradlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
