"""`make bench` in its reduced mode runs and writes well-formed JSON. No timing is asserted here:
the benchmark itself reports ratios measured side by side."""

from __future__ import annotations

import json
import math
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_bench_quick_mode_writes_well_formed_json(tmp_path):
    import subprocess

    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "gradlab.bench", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "quick"
    single, sweep, inner = r["single_run"], r["sweep"], r["inner_loop"]
    for value in (single["gradlab_seconds"], single["bare_seconds"], single["ratio"], sweep["gradlab_seconds"],
                  sweep["tutorial_seconds"], sweep["speedup"], single["memory_mib"]["gradlab_run_peak_rss"]):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert set(inner["methods"]) == {"analytic", "autograd", "finite_difference", "numpy"}
    assert all(v["ratio"] > 0 for v in inner["methods"].values())
    # the trainer's stamps come in order, and the recorder's time was measured, not left at zero
    assert all(v >= 0 for v in single["breakdown_seconds"].values())
    assert all(v >= 0 for v in single["recorder_seconds"].values()) and sum(single["recorder_seconds"].values()) > 0
    assert set(r["verdicts"]) == {"single_run_ratio <= 1.5", "sweep_speedup >= 6",
                                  "inner_loop_ratio <= 1.15 (every gradient method)", "peak_rss < 600 MiB",
                                  "headline sweep (60 jobs) <= 15 s", "dense grid (240 jobs) <= 0.25 s/job",
                                  "12-job grid <= 1.0x its bare loops", "dense grid peak memory < 1 GiB",
                                  "2,000,000-epoch run < 600 MiB", "10^6-row CSV with all its plots < 1 GiB",
                                  "user module: batched >= 8x the basic launcher (64 configs)",
                                  "user module: inner loop <= 1.5x torch.func by hand"}
    batched = r["batched"]
    assert (batched["headline"]["jobs"], batched["dense"]["jobs"]) == (5, 20)  # quick mode's subsets of the grids
    for value in (batched["headline"]["batched_seconds"], batched["dense"]["basic_seconds"], batched["grid12"]["ratio"],
                  batched["dense_memory_mib"]["peak_rss_mib"]):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    pruning = r["pruning"]
    assert pruning["pruned"]["trials"] == pruning["unpruned"]["trials"] == 16 and pruning["unpruned"]["pruned"] == 0
    assert pruning["unpruned"]["epochs_run"] == 16 * 400  # quick mode: 16 trials x 400 epochs, none stopped early
    assert "1. single run" in proc.stdout and "3. inner loop" in proc.stdout and "5. batched sweeps" in proc.stdout
    assert "6. pruning" in proc.stdout and "7. memory that does not grow" in proc.stdout
    user = r["usermodule"]  # quick mode: 4 configurations, every child recorded
    assert user["launchers"]["jobs"] == user["launchers"]["children_finished"] == 4
    for value in (user["launchers"]["speedup"], user["inner_loop"]["ratio"]):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert "8. a user's nn.Module" in proc.stdout
    large = r["large"]  # quick mode: 20,000 epochs and 10,000 rows, every figure made
    assert large["plots"] == {"long": ["fit.png", "loss_curves.png", "trajectory.png"],
                              "big_csv": ["fit.png", "loss_curves.png", "trajectory.png"]}
    assert large["long_run_mib"]["processes"] >= 2  # the recorder, which leaves the trainer's tree, is counted
    # Section 9, scale: a 40-job sweep recorded whole (its table on the parent, none RUNNING),
    # compare from the table and from the store, a 100-job grid check, MLflow's floor.
    scale = r["scale"]
    s = scale["sweep"]
    assert s["jobs"] == 40 and s["left"] == {"children": 40, "running": 0, "table": True, "with_history": 20}
    assert scale["grid_check"]["jobs"] == 100
    for value in (scale["floor_seconds_per_run"], s["seconds"], s["compare_seconds"], s["compare_from_store_seconds"],
                  s["memory_mib"]["peak_rss_mib"], s["ratio_to_floor"], scale["grid_check"]["seconds"]):
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    fast = scale["fast_axis"]  # quick: 1,000 configurations x 300 epochs, gradlab's fit and the same descent bare
    assert (fast["configs"], fast["epochs"], fast["train_rows"]) == (1000, 300, 9) and 0 < fast["completed"] <= 1000
    assert all(isinstance(fast[k], float) and fast[k] > 0 for k in ("gradlab_seconds", "contiguous_seconds", "ratio"))
    assert scale["verdicts"] == {}  # quick sizes are not judged against the targets of 1,000 and 10,000 jobs
    assert "9. scale" in proc.stdout


def test_the_cluster_bench_without_a_cluster_says_what_to_start_in_one_line(monkeypatch, tmp_path):
    """`--cluster` is opt in (CI's bench starts no cluster): without the cluster's exports it says
    what to run, before anything starts."""
    from gradlab.bench import __main__ as bench

    monkeypatch.delenv("SLURM_CONF", raising=False)
    with pytest.raises(SystemExit) as stop:
        bench.main(["--cluster", "--out", str(tmp_path / "b.json")])
    assert str(stop.value).startswith("bench: --cluster needs a cluster up") and "\n" not in str(stop.value)
    assert not list(tmp_path.iterdir())


def test_the_user_module_benchs_torch_func_loop_trains_as_gradlab_does(tmp_path):
    """Section 8 compares gradlab's fit with a torch.func loop by hand: the same work, so the same
    final parameters for every learning rate (float32: to its rounding)."""
    import numpy as np
    import torch

    from gradlab import training
    from gradlab.bench import usermodule

    z = usermodule.sizes(quick=True)
    csv = usermodule.dataset(tmp_path, z["rows"])
    s = training.setup(*usermodule._configs(csv, z))
    finals = training.fit(s, training.new_histories(s))
    x, y = usermodule._data(csv)
    _, by_hand = usermodule.hand(x, y, torch.tensor(usermodule.learning_rates(z["configs"])), z, z["epochs"])
    assert len(finals) == z["configs"] and set(finals[0]) == set(by_hand)
    for i, final in enumerate(finals):
        for name, value in by_hand.items():
            np.testing.assert_allclose(np.asarray(final[name]), value[i].numpy(), rtol=1e-4, atol=1e-5)


def test_the_fast_axis_benchs_bare_loop_trains_as_gradlab_does():
    """Section 9 times gradlab's fit against a descent written bare with the configurations on the
    contiguous axis: the same work, so the same final parameters for every configuration that
    completes (float32: to its rounding)."""
    from gradlab.bench import fast_axis

    ours = fast_axis.gradlab_fit(200, 300)
    _, bare = fast_axis.contiguous(200, 300, ours["data"])
    done = [i for i, ok in enumerate(ours["completed"]) if ok]
    assert 100 < len(done) < 200  # the largest rates diverge, most complete
    for i in done:
        assert ours["finals"][i] == pytest.approx(bare[i], rel=1e-4, abs=1e-5), i
