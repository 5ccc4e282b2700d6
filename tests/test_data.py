"""The split is deterministic and disjoint; scaling is fitted on the training split only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import compose
from gradlab import data
from gradlab.config import ConfigError, Scaling


@pytest.mark.parametrize("n,fraction", [(11, 0.2), (100, 0.25), (7, 0.5), (3, 0.34)])
def test_split_sizes_are_rounded_down_and_sides_disjoint(n, fraction):
    tr, va = data.split(n, fraction, seed=4)
    assert len(va) == int(np.floor(fraction * n))
    assert len(tr) + len(va) == n
    assert set(tr.tolist()).isdisjoint(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(n))


def test_split_is_deterministic_for_a_seed_and_varies_with_it():
    a, b, c = data.split(50, 0.2, 1), data.split(50, 0.2, 1), data.split(50, 0.2, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_no_split_keeps_everything_for_training():
    tr, va = data.split(5, None, 0)
    assert tr.tolist() == [0, 1, 2, 3, 4] and len(va) == 0


def _prepared(scaling: str, **extra):
    cfg = compose("data=line", "data.n_samples=40", "data.val_fraction=0.25", f"data.scaling={scaling}",
                  *[f"data.{k}={v}" for k, v in extra.items()]).data
    ds = data.load(cfg)
    return ds, cfg, data.prepare(ds, cfg)


def test_standardize_uses_training_statistics_only():
    ds, cfg, pr = _prepared("standardize")
    tr, va = data.split(40, 0.25, cfg.split_seed)
    raw_tr = ds.x[tr].numpy()[:, 0]
    mean, std = raw_tr.mean(), raw_tr.std()  # population std, as the scaler uses
    np.testing.assert_allclose(pr.x_train.numpy()[:, 0], (raw_tr - mean) / std, rtol=1e-12)
    np.testing.assert_allclose(pr.x_val.numpy()[:, 0], (ds.x[va].numpy()[:, 0] - mean) / std, rtol=1e-12)
    # moving the validation inputs far away changes nothing on the training side
    moved = data.Dataset(ds.x.clone(), ds.y, ds.inputs, ds.target)
    moved.x[va] += 1000.0
    again = data.prepare(moved, cfg)
    assert torch.equal(again.x_train, pr.x_train)


def test_minmax_maps_the_training_range_to_unit_interval():
    ds, cfg, pr = _prepared("minmax")
    x = pr.x_train.numpy()[:, 0]
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0, abs=1e-15)


def test_factor_multiplies_the_inputs():
    ds, cfg, pr = _prepared("factor", scale_factor=0.1)
    tr, _ = data.split(40, 0.25, cfg.split_seed)
    assert torch.equal(pr.x_train, ds.x[tr] * 0.1)
    assert torch.equal(pr.raw_train, ds.x[tr])  # plots get the original units


def test_bias_column_is_appended_after_scaling_and_never_scaled():
    cfg = compose("data=bias_column", "data.scaling=standardize", "data.val_fraction=null").data
    pr = data.prepare(data.load(cfg), cfg)
    assert pr.x_train.shape[1] == 2
    assert torch.equal(pr.x_train[:, 1], torch.ones(32, dtype=torch.float64))
    assert pr.x_train[:, 0].mean().abs() < 1e-12


def test_constant_column_cannot_be_standardized(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("a,k,y\n1,5,2\n2,5,4\n3,5,6\n4,5,8\n")
    ds = data.load_csv(path)
    cfg = compose("data=csv", f"data.path={path}", "data.scaling=standardize", "data.val_fraction=null").data
    with pytest.raises(ConfigError, match=r"\['k'\] are constant on the training split"):
        data.prepare(ds, cfg)


def test_csv_defaults_target_last_and_inputs_the_rest(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeffarea, rooms ,price\n50,2,100\n70,3,150\n\n90,4,205\n")  # BOM, spaces, a blank line
    ds = data.load_csv(path)
    assert ds.inputs == ["area", "rooms"] and ds.target == "price"
    assert ds.x.tolist() == [[50, 2], [70, 3], [90, 4]] and ds.y.tolist() == [100, 150, 205]
    one = data.load_csv(path, inputs=["rooms"], target="price")
    assert one.x.tolist() == [[2], [3], [4]]


def test_thermometer_data_are_the_books():
    ds = data.load(compose().data)
    assert ds.x[:, 0].tolist() == [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
    assert ds.y.tolist() == [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def test_scaling_enum_covers_the_design_options():
    assert {s.value for s in Scaling} == {"none", "factor", "standardize", "minmax"}
