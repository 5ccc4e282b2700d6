"""Every gradient method agrees with the others on every model, and the maths matches references
that do not share gradlab's code: scipy's Rosenbrock, torch.nn layers, F.mse_loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import compose
from gradlab import models, training
from gradlab.config import Loss

CASES = [  # (model, data): every model, with one- and several-input data where it applies
    ("linear", "line"), ("linear", "teacher"), ("linear_nobias", "bias_column"), ("quadratic", "line"),
    ("quadratic", "teacher"), ("parameter_module", "line"), ("nn_linear", "teacher"), ("mlp", "teacher"),
    ("mlp", "thermometer"), ("rosenbrock", "none"), ("bowl", "none"),
]
LOSSES = [k.value for k in Loss if k not in (Loss.bce, Loss.module)]  # bce: test_bce_gradients_agree; module: test_targets


def setup(model, data, grad, dtype="float64", loss="mse", device="cpu", seed=3):
    cfg = compose(f"model={model}", f"data={data}", f"grad={grad}", f"train.dtype={dtype}", f"train.loss={loss}",
                  "data.val_fraction=null", "data.scaling=none", "optimizer=gd", f"device={device}",
                  "model.init=normal", f"train.seed={seed}", *(["data.n_samples=20"] if data in ("line", "teacher") else []))
    return training.setup(cfg)


def gradients(model, data, grad, **kw):
    s = setup(model, data, grad, **kw)
    loss, grads = s.grad_fn(s.problem, s.params, s.problem.batches()[0])
    return float(loss[0]), [np.asarray(g.detach() if isinstance(g, torch.Tensor) else g, dtype=np.float64) for g in grads]


def close(a, b, rtol, atol):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model,data", CASES)
def test_methods_agree_in_float64(model, data, loss):
    la, analytic = gradients(model, data, "analytic", loss=loss)
    lb, auto = gradients(model, data, "autograd", loss=loss)
    lf, fd = gradients(model, data, "finite_difference", loss=loss)
    assert la == pytest.approx(lb, rel=1e-12) and la == pytest.approx(lf, rel=1e-12)
    scale = max(1.0, max(float(np.abs(g).max()) for g in auto))
    close(analytic, auto, rtol=1e-9, atol=1e-11 * scale)
    close(fd, auto, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
def test_bce_gradients_agree(device):
    """A sigmoid output's cross-entropy: the hand-derived gradient (on torch and NumPy) against
    autograd and finite differences, the loss against torch's binary_cross_entropy."""
    cfg = compose("model=mlp", "data=teacher", "data.n_samples=20", "train.dtype=float64", "train.loss=bce",
                  "optimizer=gd", "train.seed=3")
    s = training.setup(cfg)
    x, y = s.problem.batches()[0]
    pred = s.model.forward(s.params, x)
    assert float(s.problem.loss(s.params, (x, y))[0].detach()) == pytest.approx(float(F.binary_cross_entropy(pred, y).detach()), rel=1e-15)
    la, analytic = gradients("mlp", "teacher", "analytic", loss="bce", device=device)
    lb, auto = gradients("mlp", "teacher", "autograd", loss="bce")
    _, fd = gradients("mlp", "teacher", "finite_difference", loss="bce")
    assert la == pytest.approx(lb, rel=1e-12)
    close(analytic, auto, rtol=1e-9, atol=1e-12)
    close(fd, auto, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("model,data", CASES)
def test_methods_agree_in_float32(model, data):
    _, analytic = gradients(model, data, "analytic", dtype="float32")
    _, auto = gradients(model, data, "autograd", dtype="float32")
    _, fd = gradients(model, data, "finite_difference", dtype="float32")
    scale = max(1.0, max(float(np.abs(g).max()) for g in auto))
    close(analytic, auto, rtol=1e-4, atol=1e-5 * scale)
    close(fd, auto, rtol=3e-2, atol=3e-2 * scale)  # float32 central differences: ~ε^(2/3)


@pytest.mark.parametrize("model,data", [c for c in CASES if c[0] not in ("parameter_module", "nn_linear")])
def test_numpy_backend_matches_torch(model, data):
    lt, gt = gradients(model, data, "analytic")
    ln, gn = gradients(model, data, "analytic", device="numpy")
    assert ln == pytest.approx(lt, rel=1e-12)
    close(gn, gt, rtol=1e-12, atol=1e-12)


def test_finite_difference_matches_a_hand_computed_quotient():
    # bowl: f(x) = (x+1)², f'(1) = 4 exactly; central differences are exact for a quadratic.
    s = setup("bowl", "none", "finite_difference")
    with torch.no_grad():
        s.params["x"].fill_(1.0)
    _, (g,) = s.grad_fn(s.problem, s.params, None)
    assert float(g[0]) == pytest.approx(4.0, rel=1e-9)


def test_rosenbrock_matches_scipy():
    from scipy.optimize import rosen, rosen_der

    s = setup("rosenbrock", "none", "analytic")
    for point in ([0.0, 0.0], [-1.2, 1.0], [1.5, 2.5], [1.0, 1.0]):
        p = {"x": torch.tensor([point[0]], dtype=torch.float64), "y": torch.tensor([point[1]], dtype=torch.float64)}
        value, grad = s.problem.analytic(p, None)
        assert float(value[0]) == pytest.approx(rosen(np.array(point)), rel=1e-12, abs=1e-15)
        np.testing.assert_allclose([float(grad["x"][0]), float(grad["y"][0])], rosen_der(np.array(point)), rtol=1e-12, atol=1e-14)


def test_mlp_forward_matches_torch_nn_layers():
    s = setup("mlp", "teacher", "analytic")
    p = s.params  # one configuration's, with the configuration axis first
    net = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1), torch.nn.Sigmoid()).double()
    with torch.no_grad():
        net[0].weight.copy_(p["W1"][0].T)
        net[0].bias.copy_(p["b1"].reshape(3))
        net[2].weight.copy_(p["W2"][0].T)
        net[2].bias.copy_(p["b2"].reshape(1))
    x = s.problem.train[0]
    torch.testing.assert_close(s.model.forward(p, x)[0, :, 0], net(x[0])[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model", ["linear", "quadratic", "nn_linear", "parameter_module", "linear_nobias"])
def test_linear_models_forward_matches_their_formula(model):
    s = setup(model, "teacher", "analytic")
    x, p = s.problem.train[0][0], {k: v.detach()[0].reshape(s.model.shapes[k]) for k, v in s.params.items()}
    expected = {
        "linear": lambda: (x * p["w"]).sum(1) + p["b"],
        "quadratic": lambda: (x**2 * p["w1"]).sum(1) + (x * p["w2"]).sum(1) + p["b"],
        "nn_linear": lambda: F.linear(x, p["weight"], p["bias"])[:, 0],
        "parameter_module": lambda: (x * p["a"]).sum(1) + p["b"],
        "linear_nobias": lambda: (x * p["w"]).sum(1),
    }[model]()
    torch.testing.assert_close(s.model.forward(s.params, x[None]).detach()[0, :, 0], expected, rtol=1e-12, atol=1e-12)
    # and the design matrix gives the same predictions, so the closed form solves the right problem
    theta = torch.cat([v.reshape(-1) for v in p.values()])
    torch.testing.assert_close(s.model.features(x) @ theta, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,reference", [
    ("mse", lambda e: F.mse_loss(e, torch.zeros_like(e))),
    ("sse", lambda e: F.mse_loss(e, torch.zeros_like(e), reduction="sum")),
    ("half_mse", lambda e: 0.5 * F.mse_loss(e, torch.zeros_like(e))),
    ("half_sse", lambda e: 0.5 * F.mse_loss(e, torch.zeros_like(e), reduction="sum")),
])
def test_loss_reductions(kind, reference):
    e = torch.linspace(-3, 5, 7, dtype=torch.float64, requires_grad=True)
    reduction = models.REDUCTIONS[Loss(kind)]
    value = models.squared_error(e[None, :, None], *reduction)  # a batch of one configuration
    torch.testing.assert_close(value[0], reference(e))
    (auto,) = torch.autograd.grad(reference(e), e)
    torch.testing.assert_close(models.squared_error_grad(e.detach()[None, :, None], *reduction)[0, :, 0], auto)


@pytest.mark.parametrize("model,data", CASES)
def test_autograd_gives_what_torch_autograd_grad_gives(model, data):
    # gradlab's autograd runs torch's backward engine without backward()'s argument checks; the
    # public API on the same loss must give the same gradients, to the bit.
    s = setup(model, data, "autograd", loss="half_sse")
    batch = s.problem.batches()[0]
    _, ours = s.grad_fn(s.problem, s.params, batch)
    reference = torch.autograd.grad(s.problem.loss(s.params, batch).sum(), list(s.params.values()))
    for a, b in zip(ours, reference, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_cached_constant_rounds_as_the_python_number(dtype):
    x = torch.randn(3, 17, 1, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for value in (17.0, 2.0 / 17, 0.5, 1e-3):
        c = models.constant(value, x)
        assert c.dtype == dtype and c.dim() == 0
        assert torch.equal(x / c, x / value) and torch.equal(x * c, x * value)
    assert models.constant(0.5, np.ones(2)) == 0.5  # NumPy takes the number itself


def test_a_constant_first_made_in_inference_mode_still_serves_autograd():
    x = torch.linspace(0, 1, 5, dtype=torch.float64, requires_grad=True)
    with torch.inference_mode():
        models.constant(12345.0, x)  # cached here first
    (grad,) = torch.autograd.grad((x * models.constant(12345.0, x)).sum(), x)  # saved for backward
    assert torch.equal(grad, torch.full_like(grad, 12345.0))
    # On the CPU whatever the device: a 0-dim CPU tensor takes the kernels' CPU-scalar path, as a
    # Python number does (on CUDA a division by one is a multiplication by its reciprocal).
    assert models.constant(2.0, torch.empty(2, device="meta")).device.type == "cpu"
