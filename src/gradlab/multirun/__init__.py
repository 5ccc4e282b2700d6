"""Sweeps: a Hydra multirun recorded as one MLflow parent run with a child run per job.

    run.py             run_sweep(overrides) -> SweepOutcome, for the CLI and the API; a job of a launcher
    sweep.py           the Sweep launched by this process: its parent run, its recorders, its end
    context.py         SweepContext: what a job or a batch receives of its sweep, as data
    grid.py            what a sweep varies, its jobs, each job's config checked before any runs
    answer.py          what the sweep found, said on its parent (gradlab.ranking's order)
    launch.py          the batched launcher's work: group the jobs, train each group as a batch
    search.py          Optuna searches: space, samplers and pruners, the study, ask and tell in batches
    trials.py          a search's trials, offered to the jobs that run them
    hydra_internals.py the calls below Hydra's public API, in one place
"""
