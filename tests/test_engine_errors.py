"""Bad input fails at once with a one-line MicroconvError that names the op and what was wrong.

Shape errors are raised when a node is *built*, not when it is evaluated, so the traceback
points at the line that made the mistake.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import microconv as mc
from microconv.errors import BackendError, MicroconvError, ShapeError


def t(*shape, **kwargs):
    return mc.tensor(np.ones(shape), **kwargs)


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


# each case: (build, words the message must contain); both shapes appear in the message
SHAPE_MISTAKES = {
    "add": (lambda: t(2, 3) + t(3, 2), ["add", "(2, 3)", "(3, 2)"]),
    "sub": (lambda: t(2, 3) - t(2, 4), ["sub", "(2, 3)", "(2, 4)"]),
    "mul": (lambda: t(4) * t(5), ["mul", "(4,)", "(5,)"]),
    "matmul inner": (lambda: t(2, 3) @ t(4, 5), ["matmul", "(2, 3)", "(4, 5)"]),
    "matmul rank": (lambda: t(3) @ t(3, 2), ["matmul", "(3,)", "(3, 2)"]),
    "linear features": (lambda: mc.linear(t(2, 5), t(3, 4), t(3)), ["linear", "(2, 5)", "(3, 4)"]),
    "linear bias": (lambda: mc.linear(t(2, 4), t(3, 4), t(2)), ["linear", "(2,)", "(3, 4)"]),
    "conv2d channels": (lambda: mc.conv2d(t(1, 2, 5, 5), t(4, 3, 3, 3), t(4)),
                        ["conv2d", "(1, 2, 5, 5)", "(4, 3, 3, 3)"]),
    "conv2d rank": (lambda: mc.conv2d(t(2, 5, 5), t(4, 2, 3, 3), t(4)),
                    ["conv2d", "(2, 5, 5)", "(4, 2, 3, 3)"]),
    "conv2d bias": (lambda: mc.conv2d(t(1, 1, 5, 5), t(4, 1, 3, 3), t(3)),
                    ["conv2d", "(3,)", "(4, 1, 3, 3)"]),
    "conv2d kernel shape": (lambda: mc.conv2d(t(1, 1, 5, 5), t(1, 1, 2, 3), t(1)),
                            ["conv2d", "(1, 1, 2, 3)", "square"]),
    "conv2d too small": (lambda: mc.conv2d(t(1, 1, 2, 2), t(1, 1, 3, 3), t(1)),
                         ["conv2d", "(1, 1, 2, 2)", "(1, 1, 3, 3)"]),
    "max_pool2d rank": (lambda: mc.max_pool2d(t(4, 4), 2), ["max_pool2d", "(4, 4)"]),
    "log_softmax scalar": (lambda: mc.log_softmax(t()), ["log_softmax", "()"]),
    "reshape size": (lambda: mc.reshape(t(2, 3), (4, 2)), ["reshape", "(2, 3)", "(4, 2)"]),
    "reshape negative": (lambda: mc.reshape(t(2, 3), (-2, -3)), ["reshape", "(-2, -3)"]),
    "nll one-hot": (lambda: mc.nll_loss(t(2, 3), t(2, 4)), ["nll_loss", "(2, 4)", "(2, 3)"]),
    "nll labels": (lambda: mc.nll_loss(t(2, 3), [0, 1, 2]), ["nll_loss", "(3,)"]),
    "nll rank": (lambda: mc.nll_loss(t(2, 3, 1), [0, 1]), ["nll_loss", "(2, 3, 1)"]),
    "assign": (lambda: t(2, 3).assign(np.ones((3, 2))), ["assign", "(3, 2)", "(2, 3)"]),
}


@pytest.mark.parametrize("mistake", sorted(SHAPE_MISTAKES))
def test_shape_errors_name_the_op_and_the_shapes(mistake):
    build, words = SHAPE_MISTAKES[mistake]
    with pytest.raises(ShapeError) as info:
        build()
    message = one_line(info)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_shape_errors_come_at_construction_not_evaluation():
    x, w, b = t(1, 2, 5, 5), t(4, 3, 3, 3), t(4)
    with pytest.raises(ShapeError):
        mc.conv2d(x, w, b)                 # nothing realized: the builder itself refuses


def test_shape_error_is_a_microconv_error_and_a_value_error():
    assert issubclass(ShapeError, MicroconvError) and issubclass(ShapeError, ValueError)


@pytest.mark.parametrize("name", ["cuda", "Numpy ", "opencl2"])
def test_unknown_backend_lists_the_known_ones(name):
    with pytest.raises(BackendError) as info:
        mc.tensor([1.0], backend=name)
    message = one_line(info)
    assert name in message
    for known in mc.backends.names():
        assert known in message
    assert set(mc.backends.available()) >= {"python", "numpy"}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_are_refused(bad):
    with pytest.raises(MicroconvError, match="NaN or infinite"):
        mc.tensor([1.0, bad])
    x = mc.tensor([1.0, 2.0])
    with pytest.raises(MicroconvError, match="assign"):
        x.assign([bad, 0.0])
    np.testing.assert_array_equal(x.numpy(), [1, 2])         # the old value is kept
    for combine in (lambda: x * bad, lambda: bad * x, lambda: x + bad, lambda: bad - x):
        with pytest.raises(MicroconvError, match="not finite"):
            combine()


def test_backward_needs_a_scalar():
    y = mc.gelu(t(2, 3, requires_grad=True))
    with pytest.raises(ShapeError) as info:
        y.backward()
    assert "backward" in one_line(info) and "(2, 3)" in str(info.value)


def test_mixing_backends_is_refused():
    with pytest.raises(MicroconvError) as info:
        t(2, backend="numpy") + t(2, backend="python")
    message = one_line(info)
    assert "add" in message and "numpy" in message and "python" in message


def test_mixing_dtypes_is_refused():
    with pytest.raises(MicroconvError) as info:
        mc.matmul(t(2, 2, dtype="float32"), t(2, 2, dtype="float64"))
    message = one_line(info)
    assert "matmul" in message and "float32" in message and "float64" in message


@pytest.mark.parametrize("dtype", ["float16", "int32", "double"])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(MicroconvError, match="dtype"):
        mc.tensor([1.0], dtype=dtype)


@pytest.mark.parametrize("k", [0, -1, 2.5, "2"])
def test_pool_kernel_must_be_a_positive_integer(k):
    with pytest.raises(MicroconvError, match="max_pool2d"):
        mc.max_pool2d(t(1, 1, 4, 4), k)


@pytest.mark.parametrize("labels, words", [
    ([0, 3], "0..2"),
    ([-1, 0], "0..2"),
    ([0.5, 1.0], "integers"),
])
def test_nll_labels_must_be_valid_classes(labels, words):
    with pytest.raises(MicroconvError, match=words):
        mc.nll_loss(t(2, 3), labels)


def test_ops_refuse_things_that_are_not_tensors():
    with pytest.raises(MicroconvError, match="gelu"):
        mc.gelu(np.ones(3))
    with pytest.raises(MicroconvError, match="add"):
        t(3) + "1"
    with pytest.raises(MicroconvError, match="conv2d"):
        mc.conv2d(np.ones((1, 1, 3, 3)), t(1, 1, 2, 2), t(1))


def test_only_leaves_can_be_assigned():
    y = -t(2)
    with pytest.raises(MicroconvError, match="only leaves"):
        y.assign(np.ones(2))


def test_unconvertible_data_is_refused():
    with pytest.raises(MicroconvError, match="cannot convert"):
        mc.tensor([[1.0, 2.0], [3.0]])


def test_item_needs_one_element():
    assert t(1, 1).item() == 1.0
    with pytest.raises(ShapeError) as info:
        t(2, 3).item()
    assert "item" in one_line(info) and "(2, 3)" in str(info.value)


def test_pool_kernel_true_is_not_a_size():
    with pytest.raises(MicroconvError, match="max_pool2d"):
        mc.max_pool2d(t(1, 1, 4, 4), True)
