"""The OpenCL backend: every primitive agrees with NumPy, the fast kernels agree with the simple
ones, a whole training step agrees, and device choice and failures give clear messages.

Primitives are called directly on drawn inputs: OpenCL in float32 against the NumPy backend in
float64, compared with the one tolerance policy (tests/tolerance.py). The tests skip with the
registry's reason where no OpenCL device exists, unless MICROCONV_REQUIRE_OPENCL=1 (CI), where
that is a failure. PoCL compiles each kernel on first use, so deadlines are off and the number of
examples is small.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import backend_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from microconv.backends.base import PRIMITIVES
from microconv.backends.opencl_devices import DeviceLimits
from strategies import arrays, conv_case, distinct_values, floats, small_shapes
from optional import REQUIRE_OPENCL, import_or_skip
from tolerance import assert_close

import microconv as mc
from microconv.engine import nn, ops
from microconv.engine.optim import SGD, Adam
from microconv.errors import BackendError

few = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def cl_backend():
    return backend_or_skip("opencl")


@pytest.fixture(scope="module")
def cl_simple(cl_backend):
    return mc.backends.get("opencl", kernels="simple")


@pytest.fixture(scope="module")
def ref():
    return mc.backends.get("numpy")


def on(backend, *arrays_, dtype=np.float32):
    return [backend.from_numpy(np.asarray(a, dtype=dtype)) for a in arrays_]


def outputs(result):
    """A primitive's result as a tuple (conv2d_backward gives three buffers, the others one)."""
    return result if isinstance(result, tuple) else (result,)


def compare(cl_backend, ref, method, inputs, *extra, terms=1, magnitude=1.0):
    """Call one primitive on both backends (OpenCL float32, NumPy float64) and compare."""
    out = getattr(cl_backend, method)(*on(cl_backend, *inputs), *extra)
    expected = getattr(ref, method)(*on(ref, *inputs, dtype=np.float64), *extra)
    for i, (a, e) in enumerate(zip(outputs(out), outputs(expected))):
        assert (a is None) == (e is None), f"{method} output {i}"
        if a is not None:
            got = cl_backend.to_numpy(a)
            assert got.dtype == np.float32
            assert_close(got, ref.to_numpy(e), terms=terms, magnitude=magnitude,
                         what=f"{method} output {i}")


def test_every_primitive_is_implemented(cl_backend):
    from microconv.backends.ops_opencl import OpenCLBackend
    missing = [name for name in PRIMITIVES if getattr(OpenCLBackend, name) is getattr(
        mc.backends.base.Backend, name)]
    assert missing == []


def test_describe_names_device_platform_and_driver(cl_backend):
    text = cl_backend.describe()
    assert cl_backend.device.name.strip() in text
    assert cl_backend.device.platform.name.strip() in text
    assert cl_backend.device.driver_version.strip() in text


# --- moving data -----------------------------------------------------------------------------

@few
@given(small_shapes(min_dims=0).flatmap(arrays))
def test_round_trip_and_full(cl_backend, a):
    buf = cl_backend.from_numpy(a)
    np.testing.assert_array_equal(cl_backend.to_numpy(buf), a)
    full = cl_backend.to_numpy(cl_backend.full(a.shape, 2.5, "float32"))
    np.testing.assert_array_equal(full, np.full(a.shape, 2.5, np.float32))


def test_integers_arrive_as_float32_and_empty_arrays_work(cl_backend):
    out = cl_backend.to_numpy(cl_backend.from_numpy(np.arange(5)))
    assert out.dtype == np.float32 and out.tolist() == [0, 1, 2, 3, 4]
    empty = cl_backend.from_numpy(np.zeros((0, 3), np.float32))
    assert cl_backend.to_numpy(empty).shape == (0, 3)
    assert float(cl_backend.to_numpy(cl_backend.sum(empty))) == 0.0


# --- elementwise, reductions, movement -------------------------------------------------------

@few
@given(small_shapes().flatmap(lambda s: st.tuples(arrays(s), arrays(s))), floats())
def test_elementwise(cl_backend, ref, pair, c):
    for method, magnitude in (("add", 4), ("sub", 4), ("mul", 16)):
        compare(cl_backend, ref, method, pair, magnitude=magnitude)
    compare(cl_backend, ref, "neg", pair[:1])
    compare(cl_backend, ref, "scale", pair[:1], c, magnitude=16)
    compare(cl_backend, ref, "relu", pair[:1], magnitude=4)
    compare(cl_backend, ref, "relu_backward", pair, magnitude=4)


@few
@given(small_shapes(max_size=256).flatmap(arrays), st.integers(1, 3000))
def test_sum_and_broadcast(cl_backend, ref, a, long_length):
    compare(cl_backend, ref, "sum", [a], terms=a.size, magnitude=4)
    # long enough for more than one pass of the chunked reduction
    long = np.random.default_rng(long_length).uniform(-1, 1, long_length)
    compare(cl_backend, ref, "sum", [long], terms=long_length)
    s = np.asarray(a.ravel()[0])
    compare(cl_backend, ref, "broadcast_scalar", [s], a.shape)


@few
@given(st.integers(1, 9), st.integers(1, 9), seeds)
def test_sum_rows_and_reshape(cl_backend, ref, rows, cols, seed):
    a = np.random.default_rng(seed).uniform(-4, 4, (rows, cols))
    compare(cl_backend, ref, "sum_rows", [a], terms=rows, magnitude=4)
    compare(cl_backend, ref, "reshape", [a], (cols, rows), magnitude=4)


# --- dense layers ----------------------------------------------------------------------------

@st.composite
def product_case(draw):
    """Sizes up to 20 so that whole 8x16 tiles, partial tiles and tiny products all occur."""
    m, k, n = (draw(st.integers(1, 20)) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    rng = np.random.default_rng(draw(seeds))
    a = rng.uniform(-2, 2, (k, m) if ta else (m, k))
    b = rng.uniform(-2, 2, (n, k) if tb else (k, n))
    return a, b, ta, tb


@few
@given(product_case())
def test_matmul(cl_backend, cl_simple, ref, case):
    a, b, ta, tb = case
    k = a.shape[0] if ta else a.shape[1]
    compare(cl_backend, ref, "matmul", [a, b], ta, tb, terms=k, magnitude=4)
    compare(cl_simple, ref, "matmul", [a, b], ta, tb, terms=k, magnitude=4)


@few
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20), seeds)
def test_linear(cl_backend, cl_simple, ref, batch, n_in, n_out, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.uniform(-2, 2, (batch, n_in)), rng.uniform(-1, 1, (n_out, n_in)), \
        rng.uniform(-1, 1, n_out)
    for backend in (cl_backend, cl_simple):
        compare(backend, ref, "linear", [x, w, b], terms=n_in + 1, magnitude=2)


# --- convolution -----------------------------------------------------------------------------

@st.composite
def wide_conv_case(draw):
    """Like strategies.conv_case but with up to 10 output channels: whole tiles in the products."""
    k = draw(st.sampled_from([1, 2, 3]))
    n, c, o = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 10))
    h, w = draw(st.integers(k, 9)), draw(st.integers(k, 9))
    rng = np.random.default_rng(draw(seeds))
    return (rng.uniform(-2, 2, (n, c, h, w)), rng.uniform(-1, 1, (o, c, k, k)),
            rng.uniform(-1, 1, o))


def check_conv(backend, ref, x, w, b, seed):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    terms = c * k * k + 1
    compare(backend, ref, "conv2d", [x, w, b], terms=terms, magnitude=2)
    g = np.random.default_rng(seed).uniform(-1, 1, (n, o, h - k + 1, wd - k + 1))
    for needs in ((True, True, True), (False, True, True), (True, False, False)):
        compare(backend, ref, "conv2d_backward", [x, w, g], needs,
                terms=n * (h - k + 1) * (wd - k + 1) + o * k * k, magnitude=2)


@few
@given(st.one_of(conv_case(), wide_conv_case()), seeds)
def test_conv2d_forward_and_backward(cl_backend, cl_simple, ref, case, seed):
    x, w, b = (np.asarray(a, np.float64) for a in case)
    check_conv(cl_backend, ref, x, w, b, seed)
    check_conv(cl_simple, ref, x, w, b, seed)


def test_fast_kernels_match_the_simple_ones_on_whole_and_partial_tiles(cl_backend, cl_simple):
    """Sizes chosen so the tiled product runs whole 8x16 tiles, edge tiles, a sum long enough to
    be split into slices, and (in the convolution) 16-column groups that straddle two images in
    the NCHW store."""
    rng = np.random.default_rng(11)

    def both(method, arrays_, *extra):
        fast = getattr(cl_backend, method)(*on(cl_backend, *arrays_), *extra)
        simple = getattr(cl_simple, method)(*on(cl_simple, *arrays_), *extra)
        return [(cl_backend.to_numpy(f), cl_simple.to_numpy(s))
                for f, s in zip(outputs(fast), outputs(simple))]

    for m, k, n in ((16, 13, 24), (19, 7, 21), (8, 300, 8), (17, 2100, 9), (3, 5, 2)):
        a, b = rng.uniform(-1, 1, (m, k)), rng.uniform(-1, 1, (k, n))
        for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
            args = [a.T if ta else a, b.T if tb else b]
            ((fast, simple),) = both("matmul", args, ta, tb)
            assert_close(fast, simple, terms=k, what=f"matmul {m}x{k}x{n} {ta} {tb}")
    x, w, b = rng.uniform(-1, 1, (3, 5, 7, 9)), rng.uniform(-1, 1, (16, 5, 3, 3)), \
        rng.uniform(-1, 1, 16)
    ((fast, simple),) = both("conv2d", [x, w, b])
    assert_close(fast, simple, terms=46, what="conv2d")
    g = rng.uniform(-1, 1, (3, 16, 5, 7))
    for (fast, simple), name in zip(both("conv2d_backward", [x, w, g], (True, True, True)),
                                    ("dx", "dw", "db")):
        assert_close(fast, simple, terms=3 * 35 + 16 * 9, what=f"conv2d_backward {name}")
    # One input channel (C*k*k = 4 < 16: B is a single partial panel) and 3 * 27 * 27 = 2187
    # pixels: the weight gradient's sum is long enough to be split into slices.
    x, w = rng.uniform(-1, 1, (3, 1, 28, 28)), rng.uniform(-1, 1, (3, 1, 2, 2))
    g = rng.uniform(-1, 1, (3, 3, 27, 27))
    for (fast, simple), name in zip(both("conv2d_backward", [x, w, g], (True, True, True)),
                                    ("dx", "dw", "db")):
        assert_close(fast, simple, terms=3 * 27 * 27, what=f"long conv2d_backward {name}")


# --- pooling and activations -----------------------------------------------------------------

@st.composite
def pool_shapes(draw):
    """Pool cases that include the model's 11 -> 6 truncated window, k = 2 and 3, odd sizes."""
    k = draw(st.sampled_from([1, 2, 3]))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    side = draw(st.sampled_from([1, 2, 3, 5, 6, 7, 11]))
    other = draw(st.sampled_from([side, 4, 9]))
    return draw(distinct_values((n, c, side, other))), k


@few
@given(pool_shapes(), seeds)
def test_max_pool2d_forward_and_backward(cl_backend, ref, case, seed):
    x, k = case
    compare(cl_backend, ref, "max_pool2d", [x], k, magnitude=8)
    y = ref.max_pool2d(ref.from_numpy(x.astype(np.float64)), k)
    g = np.random.default_rng(seed).uniform(-1, 1, y.shape)
    compare(cl_backend, ref, "max_pool2d_backward", [x, y, g], k)


def test_max_pool_ties_go_to_the_first_maximum_in_row_major_order(cl_backend, ref):
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 1] = 3.0          # a tie inside the first 2x2 window
    # maxima after the first position of truncated edge windows (one column, one row wide),
    # which the 2x2 kernel reads through repeated (clamped) positions
    x[0, 0, 1, 4] = x[0, 0, 4, 3] = 2.0
    y = cl_backend.max_pool2d(*on(cl_backend, x), 2)
    assert cl_backend.to_numpy(y).shape == (1, 1, 3, 3)
    g = np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)
    dx = cl_backend.to_numpy(cl_backend.max_pool2d_backward(*on(cl_backend, x), y,
                                                            *on(cl_backend, g), 2))
    expected = ref.max_pool2d_backward(x, ref.max_pool2d(x, 2), g, 2)
    np.testing.assert_array_equal(dx, expected)
    assert dx[0, 0, 0, 1] == 1.0 and dx[0, 0, 1, 0] == 0.0
    assert dx[0, 0, 1, 4] == 3.0 and dx[0, 0, 0, 4] == 0.0
    assert dx[0, 0, 4, 3] == 8.0 and dx[0, 0, 4, 2] == 0.0


@few
@given(small_shapes(max_size=128).flatmap(lambda s: st.tuples(arrays(s), arrays(s))))
def test_gelu_forward_and_backward(cl_backend, ref, pair):
    compare(cl_backend, ref, "gelu", pair[:1], magnitude=4)
    compare(cl_backend, ref, "gelu_backward", pair, magnitude=4)


def test_gelu_keeps_relative_accuracy_far_left(cl_backend):
    # GELU(x) for x << 0 is a tiny number; x/2 * erfc(-x/sqrt 2) in double is the reference
    # (1 + erf(...) would cancel to 0 there).
    x = np.linspace(-9, -3, 25).astype(np.float32)
    got = cl_backend.to_numpy(cl_backend.gelu(cl_backend.from_numpy(x)))
    expected = [v / 2 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)]
    np.testing.assert_allclose(got, expected, rtol=2e-5)


@few
@given(st.integers(1, 4), st.integers(1, 30), seeds)
def test_log_softmax_forward_and_backward(cl_backend, ref, rows, classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (rows, classes))
    compare(cl_backend, ref, "log_softmax", [x], terms=classes, magnitude=8)
    y = ref.log_softmax(x)
    g = rng.uniform(-1, 1, x.shape)
    compare(cl_backend, ref, "log_softmax_backward", [y, g], terms=classes)


# --- optimiser updates -----------------------------------------------------------------------

@few
@given(small_shapes(max_size=64), seeds, st.sampled_from([0.0, 1e-2]), st.integers(1, 5))
def test_sgd_and_adam_updates_in_place(cl_backend, ref, shape, seed, wd, step):
    rng = np.random.default_rng(seed)
    p, g, v, m = (rng.uniform(-1, 1, shape) for _ in range(4))
    v2 = np.abs(v)                                 # Adam's second moment is never negative

    def updated(be, dtype):
        """One SGD and one Adam update in place; the buffers they changed, on the host."""
        sgd = on(be, p, g, v, dtype=dtype)
        be.sgd_update(*sgd, 0.1, 0.9, wd)
        adam = on(be, p, g, m, v2, dtype=dtype)
        be.adam_update(*adam, 1e-2, 0.9, 0.999, 1e-8, wd, step)
        return [be.to_numpy(b) for b in (sgd[0], sgd[2], adam[0], adam[2], adam[3])]

    got, expected = updated(cl_backend, np.float32), updated(ref, np.float64)
    for name, a, e in zip(("sgd p", "sgd v", "adam p", "adam m", "adam v"), got, expected):
        assert_close(a, e, magnitude=2, what=name)


# --- a whole training step of a small CNN ----------------------------------------------------

class SmallCNN(nn.Module):
    """9x9 -> conv 3x3 -> pool 2 (7 -> 4, truncated edge) -> GELU -> conv 2x2 -> ReLU -> linear."""

    def __init__(self, backend, seed):
        rng = np.random.default_rng(seed)
        self.c1 = nn.Conv2d(2, 4, 3, backend, "float32", rng)
        self.c2 = nn.Conv2d(4, 9, 2, backend, "float32", rng)
        self.fc = nn.Linear(9 * 3 * 3, 5, backend, "float32", rng)

    def __call__(self, x):
        x = ops.gelu(ops.max_pool2d(self.c1(x), 2))        # (N, 4, 4, 4)
        x = ops.relu(self.c2(x))                           # (N, 9, 3, 3)
        return ops.log_softmax(self.fc(ops.flatten(x)))


def train_two_steps(backend, optimizer_class, **options):
    rng = np.random.default_rng(7)
    model = SmallCNN(backend, seed=3)
    x = mc.tensor(rng.uniform(-1, 1, (3, 2, 9, 9)), backend=backend)
    loss = mc.nll_loss(model(x), rng.integers(0, 5, 3))
    optimizer = optimizer_class(model.named_parameters(), **options)
    losses, grads = [], []
    for _ in range(2):                      # two steps: momentum and Adam's moments both matter
        loss.backward()
        losses.append(loss.item())
        grads.append({name: p.grad for name, p in model.named_parameters()})
        optimizer.step()
    return losses, grads, model.state_dict()


@pytest.mark.parametrize("optimizer_class, options", [
    (SGD, {"lr": 0.1, "momentum": 0.9}),
    (Adam, {"lr": 1e-2}),
])
def test_training_steps_agree_with_numpy(cl_backend, ref, optimizer_class, options):
    cl_losses, cl_grads, cl_params = train_two_steps(cl_backend, optimizer_class, **options)
    np_losses, np_grads, np_params = train_two_steps(ref, optimizer_class, **options)
    assert_close(cl_losses, np_losses, terms=50, what="losses")
    for step, (cg, ng) in enumerate(zip(cl_grads, np_grads)):
        for name in ng:
            assert_close(cg[name], ng[name], terms=100, what=f"step {step} gradient of {name}")
    for name in np_params:
        assert_close(cl_params[name], np_params[name], terms=100, what=f"updated {name}")


# --- device limits ---------------------------------------------------------------------------

# Smaller devices than the ones the tests run on: the one the issue names (256 work-items per
# group, 16 KiB of local memory), and one so small that every work-group size has to shrink.
SMALL_DEVICES = {
    "256 items, 16 KiB": DeviceLimits(256, (256, 256, 256), 16 * 1024, fp64=True),
    "8 items, 4x2": DeviceLimits(8, (4, 2, 1), 1024, fp64=False),
}


def train_on_small_device(backend, ref):
    """Two SGD-with-momentum steps of SmallCNN on ``backend`` (a capped OpenCL backend), checked
    against NumPy; and every work-group size the backend chose fits its limits."""
    groups = []
    enqueue = backend._enqueue

    def recording(kernel, name, global_size, local_size, args):
        groups.append((name, local_size))
        enqueue(kernel, name, global_size, local_size, args)

    backend._enqueue = recording
    try:
        got_losses, _, got = train_two_steps(backend, SGD, lr=0.1, momentum=0.9)
    finally:
        del backend._enqueue
    want_losses, _, want = train_two_steps(ref, SGD, lr=0.1, momentum=0.9)
    assert_close(got_losses, want_losses, terms=50, what="losses")
    for name in want:
        assert_close(got[name], want[name], terms=100, what=f"updated {name}")
    chosen = {(name, local) for name, local in groups if local is not None}
    assert {name for name, _ in chosen} >= {"matmul_tiled", "sgd_update"}
    limits = backend.limits
    for name, local in chosen:
        assert math.prod(local) <= limits.max_work_group_size, (name, local)
        assert all(n <= most for n, most in zip(local, limits.max_work_item_sizes)), (name, local)


@pytest.mark.parametrize("cap", SMALL_DEVICES.values(), ids=list(SMALL_DEVICES))
def test_a_smaller_device_trains_like_numpy_within_its_limits(cl_backend, ref, cap):
    small = mc.backends.get("opencl", limits=cap)
    assert small.limits == cl_backend.limits.capped(cap)
    train_on_small_device(small, ref)
    lx, ly = small._tile_group_for(100, 100, np.float32)     # a product of 800 x 800
    assert lx <= cap.max_work_item_sizes[0] and ly <= cap.max_work_item_sizes[1]
    assert lx * ly <= cap.max_work_group_size


def test_float64_needs_cl_khr_fp64_and_the_error_names_the_device(cl_backend):
    no_fp64 = mc.backends.get("opencl", limits=dataclasses.replace(cl_backend.limits, fp64=False))
    with pytest.raises(BackendError, match="cl_khr_fp64") as info:
        no_fp64.from_numpy(np.zeros(3))
    assert cl_backend.device.name.strip() in str(info.value)
    assert no_fp64.to_numpy(no_fp64.from_numpy(np.zeros(3, np.float32))).tolist() == [0, 0, 0]


def test_limits_must_be_device_limits(cl_backend):
    with pytest.raises(BackendError, match="DeviceLimits"):
        mc.backends.get("opencl", limits=256)


@pytest.mark.parametrize("version, options", [
    ("OpenCL C 1.2 PoCL", ["-cl-std=CL1.2"]), ("OpenCL C 3.0 ", ["-cl-std=CL1.2"]),
    ("OpenCL C 1.1 ", []), ("unknown", []),
])
def test_kernels_are_held_to_opencl_c_1_2_where_the_device_compiles_it(version, options):
    from types import SimpleNamespace

    from microconv.backends.opencl_devices import language_options
    assert language_options(SimpleNamespace(opencl_c_version=version)) == options


def test_float64_works_where_the_device_supports_it(cl_backend, ref):
    x = np.random.default_rng(0).uniform(-3, 3, (2, 3, 5, 5))
    if not cl_backend.limits.fp64:
        with pytest.raises(BackendError, match="float64"):
            cl_backend.from_numpy(x)
        return
    w = np.random.default_rng(1).uniform(-1, 1, (4, 3, 3, 3))
    b = np.zeros(4)
    got = cl_backend.to_numpy(cl_backend.conv2d(*on(cl_backend, x, w, b, dtype=np.float64)))
    assert got.dtype == np.float64
    assert_close(got, ref.conv2d(x, w, b), dtype="float64", terms=27, magnitude=3)
    gelu = cl_backend.to_numpy(cl_backend.gelu(cl_backend.from_numpy(x)))
    assert_close(gelu, ref.gelu(x), dtype="float64", magnitude=3)


# --- choosing a device, and failing clearly --------------------------------------------------

def test_device_by_index_and_by_name(cl_backend, monkeypatch):
    from microconv.backends import ops_opencl
    monkeypatch.delenv("MICROCONV_OPENCL_DEVICE", raising=False)
    monkeypatch.delenv("PYOPENCL_CTX", raising=False)
    first = ops_opencl.create(device="0:0")
    name = first.device.name.strip()
    assert name in first.describe()
    piece = name[: max(3, len(name) // 2)].swapcase()
    assert ops_opencl.create(device=piece).device == first.device
    platform_piece = first.device.platform.name.strip()[:8].upper()
    assert ops_opencl.create(device=platform_piece).device.platform == first.device.platform
    monkeypatch.setenv("MICROCONV_OPENCL_DEVICE", "0")
    assert ops_opencl.create().device == first.device
    monkeypatch.delenv("MICROCONV_OPENCL_DEVICE")
    monkeypatch.setenv("PYOPENCL_CTX", "0:0")
    assert ops_opencl.create().device == first.device


@pytest.mark.parametrize("spec, message", [
    ("9:9", "does not exist"),
    ("no-such-accelerator-anywhere", "no OpenCL device or platform name contains"),
])
def test_bad_device_spec_names_the_devices_there_are(cl_backend, spec, message):
    from microconv.backends import ops_opencl
    with pytest.raises(BackendError, match=message) as info:
        ops_opencl.create(device=spec)
    assert cl_backend.device.name.strip() in str(info.value)


def test_bad_pyopencl_ctx_is_a_clear_error(cl_backend, monkeypatch):
    from microconv.backends import ops_opencl
    monkeypatch.delenv("MICROCONV_OPENCL_DEVICE", raising=False)
    monkeypatch.setenv("PYOPENCL_CTX", "42")
    with pytest.raises(BackendError, match="PYOPENCL_CTX"):
        ops_opencl.create()


def test_device_report_marks_the_chosen_device(cl_backend, monkeypatch):
    from microconv.backends import opencl_devices
    monkeypatch.delenv("MICROCONV_OPENCL_DEVICE", raising=False)
    monkeypatch.delenv("PYOPENCL_CTX", raising=False)
    report = opencl_devices.device_report()
    assert report and sum(row["chosen"] for row in report) == 1
    assert set(report[0]) >= {"platform", "device", "type", "driver", "chosen"}
    chosen = next(row for row in report if row["chosen"])
    if any(row["type"].startswith("GPU") for row in report):
        assert chosen["type"].startswith("GPU")


@pytest.mark.parametrize("failure", ["empty", "raises"])
def test_no_platform_gives_one_paragraph_of_help(monkeypatch, failure):
    cl = import_or_skip("pyopencl", REQUIRE_OPENCL)
    from microconv.backends import ops_opencl

    def no_platforms():
        if failure == "raises":
            raise cl.LogicError("clGetPlatformIDs", -1001, "PLATFORM_NOT_FOUND_KHR")
        return []

    monkeypatch.setattr(cl, "get_platforms", no_platforms)
    reason = ops_opencl.unavailable_reason()
    assert "no OpenCL platform found" in reason and "pocl-opencl-icd" in reason
    with pytest.raises(BackendError) as info:
        ops_opencl.create()
    message = str(info.value)
    for hint in ("pocl-opencl-icd", 'pip install "pyopencl[pocl]"', "clinfo", "--backend numpy"):
        assert hint in message
    assert "\n" not in message


def test_kernel_build_failure_shows_file_device_and_log(cl_backend, monkeypatch):
    from microconv.backends import ops_opencl
    monkeypatch.setattr(ops_opencl, "_programs", {})
    monkeypatch.setattr(ops_opencl, "_load_source", lambda filename: "this is not OpenCL C;")
    with pytest.raises(BackendError) as info:
        cl_backend.add(*on(cl_backend, [1.0], [2.0]))
    message = str(info.value)
    assert "elementwise.cl" in message and cl_backend.device.name.strip() in message
    assert "Build log" in message


def test_out_of_device_memory_suggests_numpy(cl_backend, monkeypatch):
    import pyopencl as cl

    def exhausted(nbytes):
        raise cl.MemoryError("clCreateBuffer", -4, "MEM_OBJECT_ALLOCATION_FAILURE")

    monkeypatch.setattr(cl_backend, "pool", type("Pool", (), {
        "allocate": staticmethod(exhausted), "free_held": staticmethod(lambda: None)})())
    with pytest.raises(BackendError, match="out of memory.*--backend numpy"):
        cl_backend.full((1000,), 0.0, "float32")


def test_programs_are_built_once_and_kernels_reused(cl_backend):
    from microconv.backends import ops_opencl
    table = cl_backend._kernels("float32")
    cl_backend.add(*on(cl_backend, [1.0], [2.0]))
    assert cl_backend._kernels("float32") is table
    assert ops_opencl._programs[(cl_backend.context, "float32")][0] is table
