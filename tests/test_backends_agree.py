"""Every op, forward and every input gradient: the NumPy backend (float32) agrees with the
pure-Python backend (float64 arithmetic) on drawn shapes and values.

The scalar that is differentiated is sum(out * R) with a random, fixed R, so the output gradient
reaching each op is *not* uniform: a rule that is only right for uniform gradients (as the seed's
convolution kernel gradient was) fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from microconv.backends import ops_numpy
from microconv.backends.base import PRIMITIVES
from strategies import (
    KINK_GAP,
    POOL_SPACING,
    arrays,
    cnn_case,
    conv_case,
    distinct_values,
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
from tolerance import assert_close

import microconv as mc
from microconv.engine.optim import SGD, Adam

seeds = st.integers(0, 2**32 - 1)


def run(backend, dtype, build, inputs, seed):
    """Build the graph on one backend, return the output value and every input's gradient."""
    leaves = [mc.tensor(a, backend=backend, dtype=dtype, requires_grad=True) for a in inputs]
    out = build(*leaves)
    if out.shape == ():
        loss = out
    else:
        weights = np.random.default_rng(seed).uniform(-1, 1, out.shape).astype(np.float32)
        loss = (out * mc.tensor(weights, backend=backend, dtype=dtype)).sum()
    loss.backward()
    return out.numpy(), [leaf.grad for leaf in leaves]


def check_agree(build, inputs, seed, terms=1, magnitude=1.0):
    """NumPy float32 against the Python backend's float64 reference, value and gradients."""
    ref_out, ref_grads = run("python", "float64", build, inputs, seed)
    out, grads = run("numpy", "float32", build, inputs, seed)
    assert out.dtype == np.float32
    assert_close(out, ref_out, terms=terms, magnitude=magnitude, what="forward")
    for i, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        assert grad is not None and grad.shape == inputs[i].shape
        assert_close(grad, ref_grad, terms=terms, magnitude=magnitude,
                     what=f"gradient of input {i}")


# --- elementwise ------------------------------------------------------------------------

@given(same_shape_pair(), seeds)
def test_add(pair, seed):
    check_agree(lambda a, b: a + b, pair, seed, magnitude=4)


@given(same_shape_pair(), seeds)
def test_sub(pair, seed):
    check_agree(lambda a, b: a - b, pair, seed, magnitude=4)


@given(same_shape_pair(), seeds)
def test_mul(pair, seed):
    check_agree(lambda a, b: a * b, pair, seed, magnitude=16)


@given(small_shapes().flatmap(arrays), seeds)
def test_neg(x, seed):
    check_agree(lambda a: -a, [x], seed, magnitude=4)


@given(small_shapes().flatmap(arrays), floats(-3, 3), seeds)
def test_scale_by_a_number(x, c, seed):
    check_agree(lambda a: a * c, [x], seed, magnitude=12)
    check_agree(lambda a: c * a, [x], seed, magnitude=12)


@given(small_shapes().flatmap(arrays), seeds)
def test_sum(x, seed):
    check_agree(lambda a: a.sum(), [x], seed, terms=x.size, magnitude=4)


# --- dense layers -----------------------------------------------------------------------

@given(matmul_case(), seeds)
def test_matmul(case, seed):
    check_agree(lambda a, b: a @ b, case, seed, terms=8, magnitude=16)
    check_agree(mc.matmul, case, seed, terms=8, magnitude=16)


@given(linear_case(), seeds)
def test_linear(case, seed):
    check_agree(mc.linear, case, seed, terms=8, magnitude=16)


# --- convolution and pooling ------------------------------------------------------------

@given(conv_case(), seeds)
def test_conv2d(case, seed):
    x, w, _ = case
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    terms = max(c * k * k, o * k * k, n * (h - k + 1) * (wd - k + 1))
    check_agree(mc.conv2d, case, seed, terms=terms, magnitude=4)


@given(pool_case(), seeds)
def test_max_pool2d(case, seed):
    x, k = case
    check_agree(lambda a: mc.max_pool2d(a, k), [x], seed, magnitude=float(np.abs(x).max()))


@pytest.mark.parametrize("side, k, pooled", [(11, 2, 6), (5, 2, 3), (7, 3, 3), (4, 3, 2)])
def test_max_pool2d_truncated_edge_windows(side, k, pooled):
    """Ceil mode with truncated edge windows: 11x11 -> 6x6 as in the seed, and odd sizes."""
    rng = np.random.default_rng(side * 10 + k)
    x = rng.permutation(side * side).astype(np.float32).reshape(1, 1, side, side)
    check_agree(lambda a: mc.max_pool2d(a, k), [x], seed=side, magnitude=side * side)
    y = mc.max_pool2d(mc.tensor(x), k)
    assert y.shape == (1, 1, pooled, pooled)
    # the bottom-right output sees only the pixels that exist: a truncated window
    last = (pooled - 1) * k
    assert y.numpy()[0, 0, -1, -1] == x[0, 0, last:, last:].max()


# --- activations ------------------------------------------------------------------------

@given(small_shapes().flatmap(arrays), seeds)
def test_gelu(x, seed):
    check_agree(mc.gelu, [x], seed, magnitude=4)


def test_gelu_keeps_float32_relative_accuracy_far_left():
    # GELU(x) for x << 0 is a tiny number (2e-32 at -12): 1 + erf(x / sqrt 2) would cancel to 0;
    # x/2 * erfc(-x / sqrt 2) in double is the reference. The slope has no such tail to keep.
    x = np.linspace(-12, 6, 1801).astype(np.float32)
    t = mc.tensor(x, backend="numpy", requires_grad=True)
    out = mc.gelu(t)
    out.sum().backward()
    exact = [(v / 2 * math.erfc(-v / math.sqrt(2)),
              math.erfc(-v / math.sqrt(2)) / 2 + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi))
             for v in x.astype(np.float64)]
    np.testing.assert_allclose(out.numpy(), [e[0] for e in exact], rtol=2e-5)
    assert_close(t.grad, [e[1] for e in exact], magnitude=4, what="GELU'")


def test_numpy_gelu_of_a_strided_view_matches_its_copy():
    """A view that is not one dense block takes the whole-array path, not the pieces."""
    x = np.random.default_rng(0).uniform(-6, 6, (3, 8, 70, 70)).astype(np.float32)
    be = ops_numpy.create()
    view, dense = x[:, ::2, 1:, ::3], np.ascontiguousarray(x[:, ::2, 1:, ::3])
    np.testing.assert_array_equal(be.gelu(view), be.gelu(dense))
    g = np.ones_like(dense)
    np.testing.assert_array_equal(be.gelu_backward(view, g), be.gelu_backward(dense, g))


def test_numpy_gelus_tail_fit_is_within_1e_6():
    """The coefficients themselves, evaluated in float64: Phi(-a) to 1e-6 relative, a in [0, 37]
    (beyond, both are below float64's normal numbers)."""
    a = np.linspace(0, 37, 20001)
    t, q = np.empty_like(a), np.empty_like(a)
    ops_numpy._normal_tail(a, t, q)
    exact = np.array([math.erfc(v / math.sqrt(2)) / 2 for v in a])
    np.testing.assert_allclose(q * t, exact, rtol=1e-6, atol=0)


@given(relu_input(), seeds)
def test_relu(x, seed):
    check_agree(mc.relu, [x], seed, magnitude=4)


@given(log_softmax_input(), seeds)
def test_log_softmax(x, seed):
    check_agree(mc.log_softmax, [x], seed, terms=x.shape[-1], magnitude=8)


@given(small_shapes(min_dims=1, max_dims=1, max_side=6).flatmap(arrays), seeds)
def test_log_softmax_of_a_vector(x, seed):
    check_agree(mc.log_softmax, [x], seed, terms=x.shape[-1], magnitude=8)


# --- movement, loss, dropout ------------------------------------------------------------

@given(small_shapes(min_dims=2).flatmap(arrays), seeds)
def test_flatten(x, seed):
    check_agree(mc.flatten, [x], seed, magnitude=4)


@given(reshape_case(), seeds)
def test_reshape(case, seed):
    x, shape = case
    check_agree(lambda a: mc.reshape(a, shape), [x], seed, magnitude=4)


@given(nll_case())
def test_nll_loss_with_integer_labels(case):
    logits, labels = case
    check_agree(lambda a: mc.nll_loss(a, labels), [logits], 0, terms=logits.size, magnitude=4)
    check_agree(lambda a: mc.nll_loss(mc.log_softmax(a), labels), [logits], 0,
                terms=logits.size, magnitude=8)


@given(nll_case())
def test_nll_loss_with_one_hot_labels(case):
    logits, labels = case
    one_hot = mc.one_hot(labels, logits.shape[1])
    # the one-hot target is an input too, so its gradient (-logp / N) is compared as well
    check_agree(mc.nll_loss, [logits, one_hot], 0, terms=logits.size, magnitude=4)


@given(dropout_case(), seeds)
def test_dropout_with_a_mask(case, seed):
    check_agree(mc.dropout, list(case), seed, magnitude=20)


@given(st.integers(2, 5).flatmap(lambda side: distinct_values((1, 2, side, side))), seeds)
def test_pool_then_gelu_then_flatten(x, seed):
    """Ops feeding each other: gradients flow through several rules on both backends alike."""
    def build(a):
        return mc.log_softmax(mc.flatten(mc.gelu(mc.max_pool2d(a, 2))))
    check_agree(build, [x], seed, terms=x.size, magnitude=float(np.abs(x).max()) + 4)


# --- a whole small model ------------------------------------------------------------------

@given(cnn_case())
def test_small_cnn_loss_gradients_and_one_sgd_step(case):
    """The same tiny CNN from the same numbers: loss, every parameter gradient, and the
    parameters after one SGD step agree between the backends."""
    names = ["w", "b", "fw", "fb"]
    results = {}
    for backend, dtype in (("python", "float64"), ("numpy", "float32")):
        x = mc.tensor(case["x"].astype(np.float32), backend=backend, dtype=dtype)
        params = {n: mc.tensor(case[n].astype(np.float32), backend=backend, dtype=dtype,
                               requires_grad=True) for n in names}
        hidden = mc.gelu(mc.max_pool2d(mc.conv2d(x, params["w"], params["b"]), 2))
        logp = mc.log_softmax(mc.linear(mc.flatten(hidden), params["fw"], params["fb"]))
        loss = mc.nll_loss(logp, case["labels"])
        loss.backward()
        grads = {n: params[n].grad for n in names}
        SGD(params.items(), lr=0.1, momentum=0.9).step()
        results[backend] = loss.item(), grads, {n: params[n].numpy() for n in names}
    (ref_loss, ref_grads, ref_after), (loss, grads, after) = results["python"], results["numpy"]
    terms = case["x"].size
    assert_close(loss, ref_loss, terms=terms, magnitude=4, what="loss")
    for n in names:
        assert_close(grads[n], ref_grads[n], terms=terms, magnitude=4, what=f"gradient of {n}")
        assert_close(after[n], ref_after[n], terms=terms, magnitude=4, what=f"{n} after SGD")


# --- the strategies themselves ------------------------------------------------------------

@given(conv_case())
def test_conv_cases_are_valid_and_small(case):
    x, w, b = case
    assert x.shape[1] == w.shape[1] and w.shape[0] == b.shape[0]
    assert x.shape[2] >= w.shape[2] and x.shape[3] >= w.shape[3]
    assert x.size <= 2 * 2 * 6 * 6 and np.isfinite(x).all()


@given(pool_case())
def test_pool_cases_have_separated_values(case):
    x, k = case
    gaps = np.diff(np.sort(x.ravel()))
    assert gaps.size == 0 or gaps.min() >= POOL_SPACING * 0.999


def test_pool_cases_cover_truncated_edges_and_exact_fits():
    """Over many draws, sizes that divide by k and sizes that do not both occur."""
    seen = set()

    @settings(max_examples=60, derandomize=True)
    @given(pool_case())
    def record(case):
        x, k = case
        seen.add(x.shape[2] % k == 0 and x.shape[3] % k == 0)
    record()
    assert seen == {True, False}


@given(relu_input())
def test_relu_inputs_stay_away_from_the_kink(x):
    assert np.abs(x).min() >= KINK_GAP


# --- dtype discipline ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_backend_keeps_the_dtype_in_every_primitive(dtype):
    """float32 must stay float32 inside the backend (a silent float64 upcast doubles memory and
    time), and float64 must stay float64 (gradient checks rely on it)."""
    numpy_class = type(mc.backends.get("numpy"))
    seen = set()

    class DtypeCheck(numpy_class):
        pass

    def checked(primitive):
        inner = getattr(numpy_class, primitive)

        def run(self, *args, **kwargs):
            result = inner(self, *args, **kwargs)
            for buf in result if isinstance(result, tuple) else (result,):
                if isinstance(buf, np.ndarray):
                    assert buf.dtype == dtype, f"{primitive} returned {buf.dtype}"
                    seen.add(primitive)
            return result
        return run

    for primitive in PRIMITIVES:
        setattr(DtypeCheck, primitive, checked(primitive))
    be = DtypeCheck()
    rng = np.random.default_rng(0)

    def leaf(shape, grad=True):
        return mc.tensor(rng.uniform(-1, 1, shape), backend=be, dtype=dtype, requires_grad=grad)

    x, w, b = leaf((2, 1, 6, 6), grad=False), leaf((2, 1, 3, 3)), leaf((2,))
    fw, fb = leaf((3, 8)), leaf((3,))
    hidden = mc.relu(mc.gelu(mc.max_pool2d(mc.conv2d(x, w, b), 2)))
    logits = mc.linear(mc.flatten(hidden), fw, fb) * 0.5 - leaf((2, 3))
    loss = mc.nll_loss(mc.log_softmax(-(logits @ leaf((3, 3)))), [0, 2])
    loss.backward()
    SGD([("fw", fw)], lr=0.1).step()
    Adam([("fb", fb)]).step()
    assert loss.numpy().dtype == dtype and loss.item() == loss.item()
    assert len(seen) >= 22, sorted(set(PRIMITIVES) - seen)
