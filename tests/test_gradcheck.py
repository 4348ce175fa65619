"""Central finite differences in float64 on the NumPy backend: every rule's gradient is the
derivative of its forward value, for every input, and a small composed CNN is checked along a
random direction (float32 finite differences are too noisy to mean anything).

The function differentiated is f = sum(out * R) with a fixed random R, so each rule sees a
non-uniform output gradient. Perturbations go through ``leaf.assign``, which also exercises the
engine's recompute-after-assign path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    arrays,
    cnn_case,
    conv_case,
    dropout_case,
    floats,
    linear_case,
    log_softmax_input,
    matmul_case,
    nll_case,
    pool_case,
    relu_input,
    reshape_case,
    same_shape_pair,
    small_shapes,
)
from tolerance import FD_STEP, assert_matches_finite_difference

import microconv as mc

seeds = st.integers(0, 2**32 - 1)


def scalar_of(out, seed):
    """sum(out * R) for a fixed random R (out itself when it is already a scalar)."""
    if out.shape == ():
        return out
    weights = np.random.default_rng(seed).uniform(-1, 1, out.shape)
    return (out * mc.tensor(weights, dtype="float64")).sum()


def gradcheck(build, inputs, seed=0, scale=1.0):
    """Every element of every input: analytic gradient == (f(x+h) - f(x-h)) / 2h."""
    values = [np.asarray(a, dtype=np.float64) for a in inputs]
    leaves = [mc.tensor(a, dtype="float64", requires_grad=True) for a in values]
    f = scalar_of(build(*leaves), seed)
    f.backward()
    analytic = [leaf.grad for leaf in leaves]
    for i, leaf in enumerate(leaves):
        numeric = np.zeros_like(values[i])
        for index in np.ndindex(values[i].shape):
            for sign in (1.0, -1.0):
                shifted = values[i].copy()
                shifted[index] += sign * FD_STEP
                leaf.assign(shifted)
                numeric[index] += sign * f.item() / (2 * FD_STEP)
            leaf.assign(values[i])
        assert_matches_finite_difference(analytic[i], numeric, scale=scale,
                                         what=f"gradient of input {i}")


@given(same_shape_pair(max_size=16), seeds)
def test_add_sub_mul(pair, seed):
    gradcheck(lambda a, b: a + b, pair, seed)
    gradcheck(lambda a, b: a - b, pair, seed)
    gradcheck(lambda a, b: a * b, pair, seed, scale=4)


@given(small_shapes(max_size=16).flatmap(arrays), floats(-3, 3), seeds)
def test_neg_scale_sum(x, c, seed):
    gradcheck(lambda a: -a, [x], seed)
    gradcheck(lambda a: a * c, [x], seed)
    gradcheck(lambda a: a.sum(), [x], seed, scale=x.size)


@given(matmul_case(max_side=3), seeds)
def test_matmul(case, seed):
    gradcheck(lambda a, b: a @ b, case, seed, scale=16)


@given(linear_case(max_side=3), seeds)
def test_linear(case, seed):
    gradcheck(mc.linear, case, seed, scale=16)


@given(conv_case(max_side=5), seeds)
def test_conv2d(case, seed):
    gradcheck(mc.conv2d, case, seed, scale=16)


@given(pool_case(max_side=5), seeds)
def test_max_pool2d(case, seed):
    x, k = case
    gradcheck(lambda a: mc.max_pool2d(a, k), [x], seed)


@given(small_shapes(max_size=16).flatmap(arrays), seeds)
def test_gelu(x, seed):
    gradcheck(mc.gelu, [x], seed)


@given(relu_input(max_size=16), seeds)
def test_relu(x, seed):
    gradcheck(mc.relu, [x], seed)


@given(log_softmax_input(), seeds)
def test_log_softmax(x, seed):
    gradcheck(mc.log_softmax, [x], seed, scale=4)


@given(small_shapes(min_dims=2, max_size=16).flatmap(arrays), seeds)
def test_flatten(x, seed):
    gradcheck(mc.flatten, [x], seed)


@given(reshape_case(max_size=16), seeds)
def test_reshape(case, seed):
    x, shape = case
    gradcheck(lambda a: mc.reshape(a, shape), [x], seed)


@given(nll_case())
def test_nll_loss_and_cross_entropy(case):
    logits, labels = case
    gradcheck(lambda a: mc.nll_loss(a, labels), [logits])
    gradcheck(lambda a: mc.nll_loss(mc.log_softmax(a), labels), [logits], scale=4)
    one_hot = mc.one_hot(labels, logits.shape[1], dtype="float64")
    gradcheck(mc.nll_loss, [logits, one_hot], scale=4)


@given(dropout_case(max_size=16), seeds)
def test_dropout_with_a_mask(case, seed):
    gradcheck(mc.dropout, list(case), seed, scale=5)


def small_cnn(x, w, b, fw, fb, labels):
    hidden = mc.gelu(mc.max_pool2d(mc.conv2d(x, w, b), 2))
    return mc.nll_loss(mc.log_softmax(mc.linear(mc.flatten(hidden), fw, fb)), labels)


@given(cnn_case())
def test_composed_cnn_along_a_random_direction(case):
    """conv -> pool -> gelu -> flatten -> linear -> log_softmax -> nll, one directional check."""
    names = ["x", "w", "b", "fw", "fb"]
    leaves = {n: mc.tensor(case[n], dtype="float64", requires_grad=True) for n in names}
    loss = small_cnn(*(leaves[n] for n in names), case["labels"])
    loss.backward()
    rng = np.random.default_rng(case["direction_seed"])
    direction = {n: rng.standard_normal(case[n].shape) for n in names}
    predicted = sum(float(np.sum(leaves[n].grad * direction[n])) for n in names)

    def loss_at(step):
        for n in names:
            leaves[n].assign(case[n] + step * direction[n])
        return loss.item()

    numeric = (loss_at(FD_STEP) - loss_at(-FD_STEP)) / (2 * FD_STEP)
    assert_matches_finite_difference(predicted, numeric, what="directional derivative")


# --- adjoint (dot-product) tests of the linear primitives, on both backends -----------------
# For a linear map A and its claimed transpose A^T: <A x, y> == <x, A^T y> for random x, y.
# This proves a backward primitive is the exact transpose of its forward, without differences.

def inner(a, b):
    return float(np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)))


@pytest.mark.parametrize("backend", ["python", "numpy"])
@given(conv_case(), seeds)
def test_conv2d_backward_is_the_transpose_of_conv2d(backend, case, seed):
    be = mc.backends.get(backend)
    x, w, _ = (np.asarray(a, dtype=np.float64) for a in case)
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    y = np.random.default_rng(seed).uniform(-1, 1, (n, o, h - k + 1, wd - k + 1))
    bufs = [be.from_numpy(a) for a in (x, w, np.zeros(o), y)]
    conv = be.to_numpy(be.conv2d(*bufs[:3]))
    dx, dw, _ = be.conv2d_backward(bufs[0], bufs[1], bufs[3], (True, True, False))
    dx, dw = be.to_numpy(dx), be.to_numpy(dw)
    # conv is linear in x (for fixed w) and in w (for fixed x)
    assert inner(conv, y) == pytest.approx(inner(x, dx), rel=1e-9, abs=1e-9)
    assert inner(conv, y) == pytest.approx(inner(w, dw), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("backend", ["python", "numpy"])
@given(matmul_case(), seeds)
def test_matmul_transposes_are_adjoint(backend, case, seed):
    be = mc.backends.get(backend)
    a, b = (np.asarray(t, dtype=np.float64) for t in case)
    g = np.random.default_rng(seed).uniform(-1, 1, (a.shape[0], b.shape[1]))
    ab, bb, gb = (be.from_numpy(t) for t in (a, b, g))
    product = be.to_numpy(be.matmul(ab, bb))
    da = be.to_numpy(be.matmul(gb, bb, trans_b=True))
    db = be.to_numpy(be.matmul(ab, gb, trans_a=True))
    assert inner(product, g) == pytest.approx(inner(a, da), rel=1e-9, abs=1e-9)
    assert inner(product, g) == pytest.approx(inner(db, b), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("backend", ["python", "numpy"])
@given(reshape_case(), floats(-3, 3))
def test_sum_and_broadcast_and_reshape_are_adjoint(backend, case, s):
    be = mc.backends.get(backend)
    x, shape = case
    x = np.asarray(x, dtype=np.float64)
    xb = be.from_numpy(x)
    total = be.to_numpy(be.sum(xb))
    spread = be.to_numpy(be.broadcast_scalar(be.from_numpy(np.asarray(s)), x.shape))
    assert float(total) * s == pytest.approx(inner(x, spread), rel=1e-9, abs=1e-9)
    y = np.random.default_rng(0).uniform(-1, 1, shape)
    there = be.to_numpy(be.reshape(xb, shape))
    back = be.to_numpy(be.reshape(be.from_numpy(y), x.shape))
    assert inner(there, y) == pytest.approx(inner(x, back), rel=1e-9, abs=1e-9)
