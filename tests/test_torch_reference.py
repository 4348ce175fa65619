"""An independent reference: PyTorch's definitions of every op, written here in float64 NumPy
(direct loops and einsum for the convolution, explicit windows for the ceil-mode pool, math.erf
for GELU), and, when ``torch`` is importable, PyTorch itself.

Both backends, in float32, must match the forward value and the input, weight and bias
gradients to 2e-4 relative (``REFERENCE_RTOL``), for a random non-uniform output gradient.
PyTorch is not a dependency; the tests that need it skip with a reason when it is missing.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays as float_arrays
from strategies import (
    conv_case,
    linear_case,
    log_softmax_input,
    matmul_case,
    nll_case,
    pool_case,
    relu_input,
    small_shapes,
)
from tolerance import REFERENCE_RTOL, assert_close

import microconv as mc

try:  # optional: compare with the real thing where it is installed
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - depends on the machine
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (optional; "
                                 "pip install torch to compare with PyTorch itself)")

_erf = np.vectorize(math.erf, otypes=[np.float64])


# --- PyTorch's definitions in float64 NumPy: (inputs, arg, g) -> (out, input gradients) ---

def ref_conv2d(inputs, _, g):
    """F.conv2d, stride 1, no padding: y = sum over c, i, j of x[c,r+i,s+j] w[o,c,i,j] + b."""
    x, w, b = inputs
    k = w.shape[2]
    oh, ow = x.shape[2] - k + 1, x.shape[3] - k + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow)) + b[None, :, None, None]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + oh, j:j + ow]                        # (N, C, OH, OW)
            y += np.einsum("ncrs,oc->nors", patch, w[:, :, i, j])
            dx[:, :, i:i + oh, j:j + ow] += np.einsum("nors,oc->ncrs", g, w[:, :, i, j])
            dw[:, :, i, j] = np.einsum("ncrs,nors->oc", patch, g)
    return y, [dx, dw, g.sum(axis=(0, 2, 3))]


def ref_max_pool2d(inputs, k, g):
    """torch max_pool2d(kernel=k, stride=k, ceil_mode=True): edge windows hold what exists."""
    (x,) = inputs
    n, c, h, w = x.shape
    oh, ow = -(-h // k), -(-w // k)
    y, dx = np.zeros((n, c, oh, ow)), np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for r in range(oh):
                for s in range(ow):
                    window = x[b, ch, r * k:min(r * k + k, h), s * k:min(s * k + k, w)]
                    i, j = np.unravel_index(np.argmax(window), window.shape)
                    y[b, ch, r, s] = window[i, j]
                    dx[b, ch, r * k + i, s * k + j] += g[b, ch, r, s]
    return y, [dx]


def ref_gelu(inputs, _, g):
    (x,) = inputs
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    density = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, [g * (cdf + x * density)]


def ref_relu(inputs, _, g):
    (x,) = inputs
    return np.maximum(x, 0.0), [np.where(x > 0, g, 0.0)]


def ref_log_softmax(inputs, _, g):
    (x,) = inputs
    shifted = x - x.max(axis=-1, keepdims=True)
    y = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return y, [g - np.exp(y) * g.sum(axis=-1, keepdims=True)]


def ref_linear(inputs, _, g):
    x, w, b = inputs
    return x @ w.T + b, [g @ w, g.T @ x, g.sum(axis=0)]


def ref_matmul(inputs, _, g):
    a, b = inputs
    return a @ b, [g @ b.T, a.T @ g]


def ref_nll_loss(inputs, labels, g):
    (logp,) = inputs
    n = logp.shape[0]
    rows = np.arange(n)
    dlogp = np.zeros_like(logp)
    dlogp[rows, labels] = -g / n
    return np.asarray(-logp[rows, labels].mean()), [dlogp]


def ref_flatten(inputs, _, g):
    (x,) = inputs
    return x.reshape(x.shape[0], -1), [g.reshape(x.shape)]


# --- the ops, each with a strategy, the microconv call and PyTorch's call --------------------

def _no_arg(strategy):
    return strategy.map(lambda inputs: (list(inputs), None))


OPS = {
    "conv2d": (_no_arg(conv_case()), lambda ts, _: mc.conv2d(*ts), ref_conv2d,
               lambda ts, _: F.conv2d(*ts)),
    "max_pool2d": (pool_case().map(lambda case: ([case[0]], case[1])),
                   lambda ts, k: mc.max_pool2d(ts[0], k), ref_max_pool2d,
                   lambda ts, k: F.max_pool2d(ts[0], k, stride=k, ceil_mode=True)),
    "gelu": (_no_arg(small_shapes().flatmap(float_arrays).map(lambda x: [x])),
             lambda ts, _: mc.gelu(ts[0]), ref_gelu, lambda ts, _: F.gelu(ts[0])),
    "relu": (_no_arg(relu_input().map(lambda x: [x])),
             lambda ts, _: mc.relu(ts[0]), ref_relu, lambda ts, _: F.relu(ts[0])),
    "log_softmax": (_no_arg(log_softmax_input().map(lambda x: [x])),
                    lambda ts, _: mc.log_softmax(ts[0]), ref_log_softmax,
                    lambda ts, _: F.log_softmax(ts[0], dim=-1)),
    "linear": (_no_arg(linear_case()), lambda ts, _: mc.linear(*ts), ref_linear,
               lambda ts, _: F.linear(*ts)),
    "matmul": (_no_arg(matmul_case()), lambda ts, _: ts[0] @ ts[1], ref_matmul,
               lambda ts, _: ts[0] @ ts[1]),
    "nll_loss": (nll_case().map(lambda case: ([case[0]], case[1])),
                 lambda ts, labels: mc.nll_loss(ts[0], labels), ref_nll_loss,
                 lambda ts, labels: F.nll_loss(ts[0], torch.as_tensor(labels))),
    "flatten": (_no_arg(small_shapes(min_dims=2).flatmap(float_arrays).map(lambda x: [x])),
                lambda ts, _: mc.flatten(ts[0]), ref_flatten,
                lambda ts, _: torch.flatten(ts[0], 1)),
}


def microconv_result(backend, op, inputs, arg, g):
    """Forward value and input gradients of one op on one backend, in float32."""
    _, build, _, _ = OPS[op]
    leaves = [mc.tensor(a, backend=backend, requires_grad=True) for a in inputs]
    out = build(leaves, arg)
    if out.shape == ():
        loss = out * float(g)
    else:
        loss = (out * mc.tensor(g, backend=backend)).sum()
    loss.backward()
    return out.numpy(), [leaf.grad for leaf in leaves]


def torch_result(op, inputs, arg, g):
    _, _, _, call = OPS[op]
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    out = call(tensors, arg)
    out.backward(torch.tensor(g, dtype=torch.float64))
    return out.detach().numpy(), [t.grad.numpy() for t in tensors]


def upstream_gradient(op, inputs, arg, seed):
    """A random output gradient (float32-representable) of the op's output shape."""
    shape = OPS[op][1]([mc.tensor(a) for a in inputs], arg).shape     # built, never evaluated
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, shape).astype(np.float32).astype(np.float64)


def tolerance_for(inputs):
    """Reduction length and term size for the float32 absolute floor of the policy."""
    terms = max(int(np.prod(a.shape)) for a in inputs)
    magnitude = max(1.0, max(float(np.abs(a).max()) for a in inputs)) ** 2
    return terms, magnitude


def compare(actual, expected, inputs, who):
    out, grads = actual
    ref_out, ref_grads = expected
    terms, magnitude = tolerance_for(inputs)
    assert_close(out, ref_out, terms=terms, magnitude=magnitude, rtol=REFERENCE_RTOL,
                 what=f"{who}: forward")
    names = ["input", "weight", "bias"]
    for i, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
        assert_close(grad, ref_grad, terms=terms, magnitude=magnitude, rtol=REFERENCE_RTOL,
                     what=f"{who}: {names[i] if i < 3 else i} gradient")


def draw_case(op, data):
    """Inputs (as float64), the op's argument and an upstream gradient for one drawn case."""
    inputs, arg = data.draw(OPS[op][0])
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]
    return inputs, arg, upstream_gradient(op, inputs, arg, data.draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("op", sorted(OPS))
@given(data=st.data())
def test_matches_pytorch_definitions_in_float32(backend, op, data):
    inputs, arg, g = draw_case(op, data)
    expected = OPS[op][2](inputs, arg, g)
    actual = microconv_result(backend, op, inputs, arg, g)
    compare(actual, expected, inputs, f"{op} on {backend}")


def test_reference_pool_keeps_the_seeds_truncated_edge():
    """The reference itself: 11x11 pools to 6x6 and the corner output is the corner pixel."""
    x = np.arange(121, dtype=np.float64).reshape(1, 1, 11, 11)
    y, _ = ref_max_pool2d([x], 2, np.ones((1, 1, 6, 6)))
    assert y.shape == (1, 1, 6, 6)
    assert y[0, 0, 5, 5] == 120 and y[0, 0, 0, 0] == 12


@needs_torch
@pytest.mark.parametrize("op", sorted(OPS))
@given(data=st.data())
def test_written_reference_is_pytorch(op, data):
    """The float64 NumPy definitions above agree with PyTorch itself."""
    inputs, arg, g = draw_case(op, data)
    out, grads = torch_result(op, inputs, arg, g)
    ref_out, ref_grads = OPS[op][2](inputs, arg, g)
    assert_close(out, ref_out, dtype="float64", terms=100, magnitude=16, what=f"{op} forward")
    for grad, ref_grad in zip(grads, ref_grads):
        assert_close(grad, ref_grad, dtype="float64", terms=100, magnitude=16, what=f"{op} grad")


@needs_torch
@pytest.mark.parametrize("backend", ["python", "numpy"])
@pytest.mark.parametrize("op", sorted(OPS))
@given(data=st.data())
def test_matches_pytorch_itself_in_float32(backend, op, data):
    inputs, arg, g = draw_case(op, data)
    expected = torch_result(op, inputs, arg, g)
    actual = microconv_result(backend, op, inputs, arg, g)
    compare(actual, expected, inputs, f"{op} on {backend} vs torch")


@needs_torch
def test_seed_model_shapes_match_pytorch_pooling():
    """11x11 -> 6x6, 26 -> 13 and 4 -> 2: PyTorch's ceil mode and ours give the same sizes."""
    for side in (11, 26, 4):
        x = np.random.default_rng(side).permutation(side * side).reshape(1, 1, side, side)
        ours = mc.max_pool2d(mc.tensor(x), 2).numpy()
        theirs = F.max_pool2d(torch.tensor(x, dtype=torch.float32), 2, ceil_mode=True).numpy()
        np.testing.assert_array_equal(ours, theirs)
