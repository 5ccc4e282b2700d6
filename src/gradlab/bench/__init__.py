"""`make bench`: gradlab measured side by side against the same loop written bare and against the
tutorial pattern (Hydra + mlflow.log_metric every epoch). See `python -m gradlab.bench --help`."""
