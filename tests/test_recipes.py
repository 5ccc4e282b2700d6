"""Every recipe of DESIGN.md part 1.1 composes and runs; each full run matches values this file
derives on its own: the recipe's loop written out plainly, a closed form, or the book's numbers.

Conventions the plain loops follow (documented in gradlab's README): data are drawn in float64 from
`torch.Generator().manual_seed(data.seed)` and cast to the run's dtype; parameters are drawn, in
order, from `torch.Generator().manual_seed(train.seed)` before `model.start` is applied; the split
holds out the last ⌊f·n⌋ of `torch.randperm(n)` seeded with data.split_seed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import CONF, compose
from gradlab import training

RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
DESIGN_RECIPES = {
    "thermometer_handgrad_raw", "thermometer_handgrad_scaled", "thermometer_autograd_scaled",
    "thermometer_sgd_split", "thermometer_adam_raw", "doubling_per_sample", "doubling_per_sample_quadratic",
    "noisy_line_batches", "line_parameter_module", "line_nn_linear", "rosenbrock_gd", "bowl_gd",
    "bias_column_numpy", "bias_column_autograd", "mlp_sigmoid",
}
# The book's 11 readings ("Deep Learning with PyTorch", ch. 5), typed in here independently.
T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]
T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]


def train(recipe: str, *overrides: str):
    s, result = training.train(compose(f"experiment={recipe}", *overrides))
    return s, result


def final(result, name):
    return np.asarray(result.params[name], dtype=np.float64)


def test_every_design_recipe_has_a_file():
    assert DESIGN_RECIPES <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_runs_fast(recipe):
    s, result = train(recipe, "train.epochs=3")
    assert result.history.outcome in ("completed", "reached_stop_loss")
    assert result.history.column("epoch") == list(range(1, result.history.epochs_run + 1))
    assert math.isfinite(result.metrics["final_train_loss"])


# ----------------------------------------------------------------- thermometer (the book)
def book_handgrad(scale: float, lr: float, epochs: int):
    """The book's training_loop with its hand-written grad_fn."""
    t_u, t_c = torch.tensor(T_U) * scale if scale != 1 else torch.tensor(T_U), torch.tensor(T_C)
    params, losses = torch.tensor([1.0, 0.0]), []
    for _ in range(epochs):
        w, b = params
        t_p = w * t_u + b
        losses.append(float(((t_p - t_c) ** 2).mean()))
        dloss_dtp = 2 * (t_p - t_c) / t_p.size(0)
        params = params - lr * torch.stack([(dloss_dtp * t_u).sum(), dloss_dtp.sum()])
    return params, losses


def test_thermometer_handgrad_raw_matches_the_book():
    _, result = train("thermometer_handgrad_raw")
    params, losses = book_handgrad(1.0, 1e-4, 100)
    np.testing.assert_allclose(result.history.column("train_loss"), losses, rtol=1e-5)
    np.testing.assert_allclose([final(result, "w")[0], final(result, "b")], params.numpy(), rtol=1e-4)
    # the numbers printed in the book
    assert result.history.column("train_loss")[0] == pytest.approx(1763.884644, rel=1e-6)
    assert result.history.column("train_loss")[-1] == pytest.approx(29.0230, abs=1e-3)
    np.testing.assert_allclose([final(result, "w")[0], final(result, "b")], [0.2327, -0.0438], atol=1e-4)


@pytest.mark.parametrize("recipe", ["thermometer_handgrad_scaled", "thermometer_autograd_scaled"])
def test_thermometer_scaled_matches_the_book(recipe):
    _, result = train(recipe)
    params, losses = book_handgrad(0.1, 1e-2, 5000)
    np.testing.assert_allclose(result.history.column("train_loss"), losses, rtol=1e-4)
    np.testing.assert_allclose([final(result, "w")[0], final(result, "b")], params.numpy(), rtol=1e-4)
    np.testing.assert_allclose([final(result, "w")[0], final(result, "b")], [5.3671, -17.3012], atol=2e-4)
    assert result.metrics["final_train_loss"] == pytest.approx(2.927680, abs=1e-4)


def closed_form(x, y):
    """Least squares through numpy, independently of gradlab: (slope, intercept)."""
    a = np.stack([np.asarray(x, dtype=np.float64), np.ones(len(x))], 1)
    return np.linalg.lstsq(a, np.asarray(y, dtype=np.float64), rcond=None)[0]


def test_thermometer_sgd_split_matches_plain_loop():
    _, result = train("thermometer_sgd_split")
    n = 11
    n_val = int(0.2 * n)
    assert n_val == 2
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    tr, va = perm[:-n_val], perm[-n_val:]
    t_u, t_c = 0.1 * torch.tensor(T_U, dtype=torch.float64), torch.tensor(T_C)
    x_tr, x_va = t_u[tr].float(), t_u[va].float()
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.SGD([params], lr=1e-2)
    train_losses, val_losses = [], []
    for _ in range(3000):
        loss = ((params[0] * x_tr + params[1] - t_c[tr]) ** 2).mean()
        with torch.no_grad():
            val_losses.append(float(((params[0] * x_va + params[1] - t_c[va]) ** 2).mean()))
        train_losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    h = result.history
    np.testing.assert_allclose(h.column("train_loss"), train_losses, rtol=1e-4)
    np.testing.assert_allclose(h.column("val_loss"), val_losses, rtol=1e-4)
    np.testing.assert_allclose([final(result, "w")[0], final(result, "b")], params.detach().numpy(), rtol=1e-4)
    assert len(result.history) == 3000


def test_thermometer_adam_raw_reaches_the_optimum():
    _, result = train("thermometer_adam_raw")
    t_u, t_c = torch.tensor(T_U), torch.tensor(T_C)
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    opt = torch.optim.Adam([params], lr=1e-1)
    for _ in range(2000):
        loss = ((params[0] * t_u + params[1] - t_c) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    got = [final(result, "w")[0], final(result, "b")]
    np.testing.assert_allclose(got, params.detach().numpy(), rtol=1e-4)
    np.testing.assert_allclose(got, [0.5367, -17.3021], atol=2e-3)  # the book's result
    np.testing.assert_allclose(got, closed_form(T_U, T_C), atol=5e-3)  # Adam hovers near it


# ------------------------------------------------------------------- per-sample updates
def test_doubling_per_sample_matches_plain_loop():
    _, result = train("doubling_per_sample")
    w, epoch_losses = torch.tensor(1.0), []
    for _ in range(100):
        total = 0.0
        for x, y in zip([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]):
            total += float((x * w - y) ** 2)
            w = w - 0.01 * 2 * x * (x * w - y)
        epoch_losses.append(total)
    assert final(result, "w")[0] == pytest.approx(float(w), rel=1e-6)
    assert final(result, "w")[0] == pytest.approx(2.0, abs=1e-5)
    # float32 residuals cancel as w -> 2: compare to an absolute floor there
    np.testing.assert_allclose(result.history.column("train_loss"), epoch_losses, rtol=1e-5, atol=1e-7)


def test_doubling_per_sample_quadratic_matches_plain_loop():
    _, result = train("doubling_per_sample_quadratic")
    w1, w2, b = torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0)
    for _ in range(100):
        for x, y in zip([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]):
            e = w1 * x * x + w2 * x + b - y
            w1, w2, b = w1 - 0.01 * 2 * e * x * x, w2 - 0.01 * 2 * e * x, b - 0.01 * 2 * e
    got = [final(result, "w1")[0], final(result, "w2")[0], float(final(result, "b"))]
    np.testing.assert_allclose(got, [float(w1), float(w2), float(b)], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ streams
def test_noisy_line_batches_matches_plain_loop():
    _, result = train("noisy_line_batches")
    g = torch.Generator().manual_seed(10)
    w = torch.randn(1, generator=g, dtype=torch.float64).float()[0]
    torch.randn((), generator=g, dtype=torch.float64)  # b's draw, replaced by the recipe's b = 0
    b = torch.tensor(0.0)
    for _ in range(20000):
        x = 20 * torch.randn(8, 1, generator=g, dtype=torch.float64)
        y = 2 * x[:, 0] + 3 + 3 * torch.randn(8, generator=g, dtype=torch.float64)
        x, y = x[:, 0].float(), y.float()
        err = w * x + b - y
        w, b = w - 1e-4 * (err * x).sum(), b - 1e-4 * err.sum()
    np.testing.assert_allclose([final(result, "w")[0], float(final(result, "b"))], [float(w), float(b)], rtol=1e-3)
    assert final(result, "w")[0] == pytest.approx(2.0, abs=0.05)


# ------------------------------------------------------------------------------- lines
@pytest.mark.parametrize("recipe,names", [("line_parameter_module", ("a", "b")), ("line_nn_linear", ("weight", "bias"))])
def test_line_recipes_reach_the_closed_form(recipe, names):
    _, result = train(recipe)
    x = torch.linspace(-2, 12, 100, dtype=torch.float64)
    y = 3 * x + 10 + torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    slope, intercept = closed_form(x, y)
    got = [float(np.ravel(final(result, names[0]))[0]), float(np.ravel(final(result, names[1]))[0])]
    np.testing.assert_allclose(got, [slope, intercept], atol=2e-3)
    assert result.metrics["excess_loss"] == pytest.approx(0.0, abs=1e-5)


# --------------------------------------------------------------------------- objectives
def test_rosenbrock_gd_matches_plain_loop():
    _, result = train("rosenbrock_gd")
    x = y = 0.0
    for i in range(10000):
        f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        gx, gy = -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)
        x, y = x - 1e-3 * gx, y - 1e-3 * gy
        if f <= 1e-3:
            break
    assert result.history.outcome == "reached_stop_loss"
    assert result.history.epochs_run == i + 1
    np.testing.assert_allclose([float(final(result, "x")), float(final(result, "y"))], [x, y], rtol=1e-12)


def test_bowl_gd_matches_closed_form():
    # x_{k+1} + 1 = (x_k + 1)(1 - 2·lr), so x_10 = -1 + 2(1 - 2e-5)^10
    _, result = train("bowl_gd")
    assert float(final(result, "x")) == pytest.approx(-1 + 2 * (1 - 2e-5) ** 10, rel=1e-6)
    assert result.history.epochs_run == 10


# -------------------------------------------------------------------------- bias column
def bias_column_data():
    g = torch.Generator().manual_seed(0)
    x = 5 * torch.rand(32, generator=g, dtype=torch.float64)
    y = 2 * x + 3 + 2 * torch.rand(32, generator=g, dtype=torch.float64)
    theta0 = torch.randn(2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return np.stack([x.numpy(), np.ones(32)], 1), y.numpy(), theta0.numpy()


def test_bias_column_numpy_matches_plain_numpy_loop():
    s, result = train("bias_column_numpy")
    assert s.backend.numpy
    X, y, theta = bias_column_data()
    m = len(y)
    for _ in range(50000):
        theta = theta - 2e-3 * (X.T @ (X @ theta - y)) / m
    np.testing.assert_allclose(final(result, "w"), theta, rtol=1e-9)
    np.testing.assert_allclose(final(result, "w"), np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-6)
    cost = ((X @ theta - y) ** 2).sum() / (2 * m)
    assert result.metrics["final_train_loss"] == pytest.approx(cost, rel=1e-9)


def test_bias_column_autograd_matches_plain_torch_loop():
    _, result = train("bias_column_autograd")
    X, y, theta0 = bias_column_data()
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    theta = torch.tensor(theta0, dtype=torch.float32, requires_grad=True)
    for _ in range(500):
        cost = ((X @ theta - y) ** 2).sum() / (2 * len(y))
        cost.backward()
        with torch.no_grad():
            theta -= 5e-3 * theta.grad
            theta.grad.zero_()
    np.testing.assert_allclose(final(result, "w"), theta.detach().numpy(), rtol=1e-5)


# --------------------------------------------------------------------------------- MLP
def test_mlp_sigmoid_analytic_and_autograd_agree_and_learn():
    _, hand = train("mlp_sigmoid", "train.dtype=float64")
    _, auto = train("mlp_sigmoid", "train.dtype=float64", "grad=autograd")
    np.testing.assert_allclose(hand.history.column("train_loss"), auto.history.column("train_loss"), rtol=1e-9)
    for name in hand.params:
        np.testing.assert_allclose(final(hand, name), final(auto, name), rtol=1e-8, atol=1e-10)
    losses = hand.history.column("train_loss")
    assert losses[-1] < losses[0] / 20  # it learns the teacher
    _, f32 = train("mlp_sigmoid")  # the recipe as written, in float32
    np.testing.assert_allclose(f32.history.column("train_loss")[-1], losses[-1], rtol=1e-3)
