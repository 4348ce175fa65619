"""The seed's own unit-test values (seed-spec section 7.3) as fixed oracles, on both backends.

hello-dl works on 2-D matrices; here every image is a (1, 1, H, W) batch and every vector a
(1, n) row. Where the seed multiplies by a diagonal matrix to scale an input, so do we, so
that the gradient also passes through a matrix product as in the seed's test.

The last tests implement the seed's convolution kernel gradient (seed-spec 2.1) here, in the
test only, and show that it equals the true gradient for a uniform output gradient and differs
from it otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import microconv as mc

BACKENDS = ["python", "numpy"]

SEED_CONV_INPUT = [[1, 2, 3, 1], [1, 0, 0, 0], [0, 0, -9, -5], [1, 7, -4, -3]]
SEED_POOL_INPUT = [[1, 2, 3, 1], [0, 0, 0, 0], [0, 0, -9, -5], [1, 7, -4, -3],
                   [0, 0, -9, -5], [1, 7, -4, -3]]


def image(rows):
    return np.asarray(rows, dtype=np.float32)[None, None]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# --- convolution --------------------------------------------------------------------------

def test_convolution_values(backend):
    x = mc.tensor(image(SEED_CONV_INPUT), backend=backend)
    w = mc.tensor(image([[1, 2], [3, 4]]), backend=backend)
    b = mc.tensor([1.0], backend=backend)
    assert x.sum().item() == -5
    y = mc.conv2d(x, w, b).numpy()[0, 0]
    assert (y[0, 0], y[0, 1], y[2, 1], y[2, 2]) == (9, 9, -12, -42)


def test_convolution_bias_gradient_is_the_output_count(backend):
    """6x6 input (1..36 with 11 in the corner, doubled by a matrix product), 2x2 kernel: db = 25."""
    pixels = np.arange(1, 37, dtype=np.float32).reshape(6, 6)
    pixels[0, 0] = 11
    x = mc.tensor(pixels, backend=backend, requires_grad=True)
    doubled = x @ mc.tensor(2 * np.eye(6), backend=backend)
    w = mc.tensor(image([[-0.0352, 0.0890], [0.4843, 0.3177]]), backend=backend,
                  requires_grad=True)
    b = mc.tensor([0.0], backend=backend, requires_grad=True)
    mc.conv2d(mc.reshape(doubled, (1, 1, 6, 6)), w, b).sum().backward()
    assert b.grad.tolist() == [25.0]


def test_convolution_gradients_under_a_sum(backend):
    """The values the seed's test quotes from PyTorch: 3x3 kernel over 1..36, under a sum."""
    x = mc.tensor(np.arange(1, 37).reshape(1, 1, 6, 6), backend=backend, requires_grad=True)
    kernel = [[0.1107, 0.2178, -0.1075], [0.0788, 0.1591, 0.1667], [-0.2994, 0.1177, 0.2621]]
    w = mc.tensor(image(kernel), backend=backend, requires_grad=True)
    b = mc.tensor([0.1104], backend=backend, requires_grad=True)
    mc.conv2d(x, w, b).sum().backward()
    assert w.grad[0, 0].tolist() == [[184, 200, 216], [280, 296, 312], [376, 392, 408]]
    assert b.grad.tolist() == [16.0]
    dx = x.grad[0, 0]
    np.testing.assert_allclose([dx[0, 0], dx[4, 2], dx[5, 5]], [0.1107, 0.485, 0.2621], atol=1e-4)


# --- max pooling --------------------------------------------------------------------------

def test_max_pool_values_and_gradients_through_a_3_5_scaling(backend):
    x = mc.tensor(SEED_POOL_INPUT, backend=backend, requires_grad=True)
    scaled = x @ mc.tensor(3.5 * np.eye(4), backend=backend)
    pooled = mc.max_pool2d(mc.reshape(scaled, (1, 1, 6, 4)), 2)
    np.testing.assert_array_equal(pooled.numpy()[0, 0],
                                  [[7, 10.5], [24.5, -10.5], [24.5, -10.5]])
    pooled.sum().backward()
    grad = x.grad
    for at in [(0, 1), (3, 1), (5, 3)]:
        assert grad[at] == 3.5
    for at in [(0, 0), (2, 0), (4, 3)]:
        assert grad[at] == 0
    assert np.count_nonzero(grad) == 6               # one argmax per window, six windows


def test_max_pool_3x3_truncated_edge(backend):
    x = mc.tensor(image([[1, 2, 3], [0, 0, 0], [0, 0, -9]]), backend=backend, requires_grad=True)
    pooled = mc.max_pool2d(x, 2)
    np.testing.assert_array_equal(pooled.numpy()[0, 0], [[2, 3], [0, -9]])
    pooled.sum().backward()
    # the tied window [0, 0] on row 2 sends its gradient to the first maximum
    np.testing.assert_array_equal(x.grad[0, 0], [[0, 1, 1], [0, 0, 0], [1, 0, 1]])


# --- log-softmax and cross-entropy --------------------------------------------------------

def test_log_softmax_values_and_gradient_of_the_sum(backend):
    x = mc.tensor([[1, 2, 3, 4, 5]], backend=backend, requires_grad=True)
    y = mc.log_softmax(x)
    np.testing.assert_allclose(y.numpy()[0], [-4.4519, -3.4519, -2.4519, -1.4519, -0.4519],
                               atol=1e-4)
    y.sum().backward()
    np.testing.assert_allclose(x.grad[0], [0.9417, 0.841575, 0.569357, -0.170608, -2.18204],
                               rtol=1e-5, atol=1e-4)


def test_cross_entropy_gradient(backend):
    x = mc.tensor([[2, 0, 0, 1]], backend=backend, requires_grad=True)
    mc.nll_loss(mc.log_softmax(x), [0]).backward()
    np.testing.assert_allclose(x.grad[0], [-0.389704, 0.0825946, 0.0825946, 0.224515],
                               rtol=1e-5)


# --- GELU ---------------------------------------------------------------------------------

@pytest.mark.parametrize("x, value, slope", [
    (0.0, 0.0, 0.5),
    (1.0, None, 1.0833),
    (-1.0, None, -0.0833155),
    (12.0, 12.0, None),
    (50.0, 50.0, 1.0),
    (-50.0, 0.0, 0.0),
])
def test_gelu_values_and_derivatives(backend, x, value, slope):
    leaf = mc.tensor([x], backend=backend, requires_grad=True)
    y = mc.gelu(leaf)
    if value is not None:
        assert y.numpy()[0] == pytest.approx(value, abs=1e-6)
    if slope is not None:
        y.sum().backward()
        assert leaf.grad[0] == pytest.approx(slope, rel=1e-4, abs=1e-6)


# --- matrix product, flatten, dropout -----------------------------------------------------

def test_matrix_product_gradients(backend):
    """b (2x4) @ a (4x2) under a sum: a's row r gets b's column sum, b gets a's row sums."""
    a = np.zeros((4, 2), dtype=np.float32)
    a[:, 0] = [1, 2, 3, 4]
    b = np.zeros((2, 4), dtype=np.float32)
    b[0] = [4, 5, 6, 7]
    ta = mc.tensor(a, backend=backend, requires_grad=True)
    tb = mc.tensor(b, backend=backend, requires_grad=True)
    (tb @ ta).sum().backward()
    assert ta.grad[0].tolist() == [4, 4] and ta.grad[3].tolist() == [7, 7]
    assert tb.grad[0].tolist() == [1, 2, 3, 4] and tb.grad[1, 2:].tolist() == [3, 4]


def test_flatten_gradient_follows_the_fill_order(backend):
    """The seed's flatten test, in microconv's row-major order: the weights m = 0, 1, 2, ...
    come back as the gradient, so the input's gradient equals its own fill order."""
    fill = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    x = mc.tensor(fill, backend=backend, requires_grad=True)
    m = mc.tensor(np.arange(25, dtype=np.float32)[None], backend=backend)
    (mc.flatten(x) * m).sum().backward()
    np.testing.assert_array_equal(x.grad, fill)


def test_dropout_at_rate_0_8(backend):
    x_values = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    keep = np.random.default_rng(8).random((4, 4)) > 0.8
    mask = np.where(keep, 1 / (1 - 0.8), 0).astype(np.float32)
    x = mc.tensor(x_values, backend=backend, requires_grad=True)
    dropped = mc.dropout(x, mc.tensor(mask, backend=backend))
    dropped.sum().backward()
    np.testing.assert_allclose(dropped.numpy(), np.where(keep, 5 * x_values, 0), rtol=1e-6)
    np.testing.assert_allclose(x.grad, np.where(keep, 5.0, 0.0), rtol=1e-6)


# --- the seed's kernel gradient, a historical quirk ---------------------------------------

def seed_kernel_gradient(x, g, k):
    """hello-dl's formula (seed-spec 2.1) for one channel: sum(B @ G) / sqrt(oh * ow), where B is
    the oh x ow input block at kernel offset (i, j). Needs a square output."""
    oh, ow = g.shape
    assert oh == ow, "the seed's matrix product only exists for square outputs"
    out = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            out[i, j] = (x[i:i + oh, j:j + ow] @ g).sum()
    return out / math.sqrt(oh * ow)


def true_kernel_gradient(backend, x, g, k):
    """microconv's gradient of sum(conv2d(x, w) * g) with respect to w."""
    xt = mc.tensor(x[None, None], backend=backend, dtype="float64")
    w = mc.tensor(np.ones((1, 1, k, k)), backend=backend, dtype="float64", requires_grad=True)
    b = mc.tensor([0.0], backend=backend, dtype="float64")
    gt = mc.tensor(g[None, None], backend=backend, dtype="float64")
    (mc.conv2d(xt, w, b) * gt).sum().backward()
    return w.grad[0, 0]


def test_seed_formula_on_the_worked_example_of_the_docs(backend):
    """docs/convolution.md: X 3x3, 2x2 kernel, only output (0,0) has a gradient."""
    x = np.array([[1.0, 2, 0], [0, 1, 3], [2, 0, 1]])
    g = np.array([[1.0, 0], [0, 0]])
    np.testing.assert_array_equal(true_kernel_gradient(backend, x, g, 2), [[1, 2], [0, 1]])
    np.testing.assert_array_equal(seed_kernel_gradient(x, g, 2), [[0.5, 1.5], [1, 0.5]])
    ones = np.ones((2, 2))
    np.testing.assert_array_equal(true_kernel_gradient(backend, x, ones, 2), [[4, 6], [3, 5]])
    np.testing.assert_array_equal(seed_kernel_gradient(x, ones, 2), [[4, 6], [3, 5]])


@pytest.mark.parametrize("seed", range(3))
def test_seed_formula_is_right_only_for_uniform_output_gradients(backend, seed):
    rng = np.random.default_rng(seed)
    side, k = 6, 3
    x = rng.uniform(-1, 1, (side, side))
    n = side - k + 1
    uniform = np.full((n, n), rng.uniform(0.5, 2))
    np.testing.assert_allclose(seed_kernel_gradient(x, uniform, k),
                               true_kernel_gradient(backend, x, uniform, k), rtol=1e-12)
    varied = rng.uniform(-1, 1, (n, n))
    difference = seed_kernel_gradient(x, varied, k) - true_kernel_gradient(backend, x, varied, k)
    assert np.abs(difference).max() > 0.1
