"""Hypothesis strategies shared by the tests: small valid shapes and well-behaved values.

Everything here builds valid cases by construction (no ``assume`` storms): a conv case draws the
kernel first and the image at least as large; a pool case draws distinct, well separated values
so the maximum of every window is unique and a finite-difference step never changes it.
Shapes stay tiny because the pure-Python backend runs every case too.

All arrays are float32-representable (``width=32``), so the float32 backend under test and the
float64 reference start from exactly the same numbers.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# Element bounds: large enough to exercise real arithmetic, small enough that exp/log and
# products stay far from overflow, and no subnormals (they mean nothing to a CNN).
LOW, HIGH = -4.0, 4.0
# ReLU inputs keep at least this distance from its kink at 0.
KINK_GAP = 2.0**-6
# Pool inputs are a shuffled grid with this spacing, so window maxima never tie.
POOL_SPACING = 0.125


def floats(low=LOW, high=HIGH):
    return st.floats(low, high, width=32, allow_nan=False, allow_infinity=False,
                     allow_subnormal=False)


def arrays(shape, low=LOW, high=HIGH):
    """A float32 array of the given shape with bounded, normal (non-subnormal) elements."""
    return hnp.arrays(np.float32, shape, elements=floats(low, high))


def away_from_zero():
    """Floats with |x| >= KINK_GAP: ReLU's derivative is well defined there."""
    return st.one_of(floats(LOW, -KINK_GAP), floats(KINK_GAP, HIGH))


def small_shapes(min_dims=1, max_dims=4, max_side=4, max_size=64):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                            max_side=max_side).filter(lambda s: int(np.prod(s)) <= max_size)


@st.composite
def same_shape_pair(draw, max_size=48):
    """Two arrays of one shared shape, for the elementwise ops."""
    shape = draw(small_shapes(max_size=max_size))
    return draw(arrays(shape)), draw(arrays(shape))


@st.composite
def relu_input(draw, max_size=48):
    shape = draw(small_shapes(max_size=max_size))
    return draw(hnp.arrays(np.float32, shape, elements=away_from_zero()))


@st.composite
def matmul_case(draw, max_side=4):
    m, k, n = (draw(st.integers(1, max_side)) for _ in range(3))
    return draw(arrays((m, k))), draw(arrays((k, n)))


@st.composite
def linear_case(draw, max_side=4):
    batch, n_in, n_out = (draw(st.integers(1, max_side)) for _ in range(3))
    return draw(arrays((batch, n_in))), draw(arrays((n_out, n_in))), draw(arrays((n_out,)))


@st.composite
def conv_case(draw, max_batch=2, max_channels=2, max_side=6, max_kernel=3):
    """(x, w, b) for a valid, stride-1 convolution: the image is never smaller than the kernel."""
    k = draw(st.integers(1, max_kernel))
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    o = draw(st.integers(1, max_channels))
    h = draw(st.integers(k, max(k, max_side)))
    w = draw(st.integers(k, max(k, max_side)))
    return draw(arrays((n, c, h, w))), draw(arrays((o, c, k, k), -1.0, 1.0)), draw(arrays((o,)))


@st.composite
def distinct_values(draw, shape):
    """Values on a shuffled grid: every pair differs by at least POOL_SPACING."""
    size = int(np.prod(shape))
    order = np.array(draw(st.permutations(range(size))), dtype=np.float64)
    offset = draw(st.sampled_from([0.0, -0.5 * size * POOL_SPACING, -size * POOL_SPACING]))
    return (order * POOL_SPACING + offset).astype(np.float32).reshape(shape)


@st.composite
def pool_case(draw, max_batch=2, max_channels=2, max_side=7, max_kernel=3):
    """(x, k) with distinct values; sizes that do not divide by k exercise the truncated edge."""
    k = draw(st.integers(1, max_kernel))
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return draw(distinct_values((n, c, h, w))), k


@st.composite
def log_softmax_input(draw, max_rows=3, max_classes=6):
    rows = draw(st.integers(1, max_rows))
    classes = draw(st.integers(1, max_classes))
    return draw(arrays((rows, classes)))


@st.composite
def nll_case(draw, max_rows=3, max_classes=5):
    """(logits, labels): labels are valid class indices."""
    rows = draw(st.integers(1, max_rows))
    classes = draw(st.integers(1, max_classes))
    labels = draw(hnp.arrays(np.int64, (rows,), elements=st.integers(0, classes - 1)))
    return draw(arrays((rows, classes))), labels


@st.composite
def dropout_case(draw, max_size=48):
    """(x, mask) with an inverted-dropout mask of 0 and 1/(1-p)."""
    shape = draw(small_shapes(max_size=max_size))
    p = draw(st.sampled_from([0.25, 0.5, 0.8]))
    keep = draw(hnp.arrays(np.bool_, shape))
    mask = np.where(keep, 1.0 / (1.0 - p), 0.0).astype(np.float32)
    return draw(arrays(shape)), mask


@st.composite
def reshape_case(draw, max_size=48):
    """(x, new_shape) with the same number of elements."""
    shape = draw(small_shapes(min_dims=2, max_size=max_size))
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    return draw(arrays(shape)), (first, size // first)


@st.composite
def cnn_case(draw):
    """Inputs and parameters of a tiny CNN: conv, pool, gelu, flatten, linear, log_softmax."""
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 2))
    o = draw(st.integers(1, 2))
    side = draw(st.integers(4, 6))
    k = draw(st.integers(2, 3))
    classes = draw(st.integers(2, 4))
    conv_side = side - k + 1
    pooled = -(-conv_side // 2)
    features = o * pooled * pooled
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return {
        "x": rng.uniform(-1, 1, (n, c, side, side)),
        "w": rng.uniform(-0.5, 0.5, (o, c, k, k)),
        "b": rng.uniform(-0.5, 0.5, (o,)),
        "fw": rng.uniform(-0.5, 0.5, (classes, features)),
        "fb": rng.uniform(-0.5, 0.5, (classes,)),
        "labels": rng.integers(0, classes, n),
        "direction_seed": seed + 1,
    }
