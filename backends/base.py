"""The contract every backend fulfils: a small set of primitives over its own buffers.

A buffer is whatever the backend likes (a flat Python list, a NumPy array, an OpenCL buffer);
the engine only passes buffers back to the backend that made them. Primitives return new
buffers and never change their inputs, except the optimiser updates, which change the
parameter and its state in place. Shapes are plain tuples, row-major (C order).

Derivatives are not a backend's business beyond the local formulas listed here: which
gradient goes where is decided once, in ``microconv/engine/ops.py``.
"""

from __future__ import annotations


class Backend:
    name = "?"
    # What callers may ask instead of comparing names: a slow backend is timed on a few images
    # (seconds per image), and host memory means reading a buffer back costs no device sync.
    slow = False
    host_memory = True

    def describe(self):
        """One line naming the device and driver, for the dashboard and ``microconv backends``."""
        return self.name

    # --- moving data -------------------------------------------------------------------
    def from_numpy(self, array):
        """Copy a NumPy array (float32, float64 or integer) into a new buffer."""
        raise NotImplementedError("from_numpy")

    def to_numpy(self, buf):
        """Copy a buffer back to the host as a NumPy array (a sync point on devices)."""
        raise NotImplementedError("to_numpy")

    def full(self, shape, value, dtype):
        """A new buffer of the given shape and dtype, every element equal to value."""
        raise NotImplementedError("full")

    # --- elementwise, shapes equal -------------------------------------------------------
    def add(self, a, b):
        raise NotImplementedError("add")

    def sub(self, a, b):
        raise NotImplementedError("sub")

    def mul(self, a, b):
        raise NotImplementedError("mul")

    def neg(self, a):
        raise NotImplementedError("neg")

    def scale(self, a, c):
        """a * c for a Python float c."""
        raise NotImplementedError("scale")

    # --- reductions and movement ---------------------------------------------------------
    def sum(self, a):
        """Sum of all elements, as a buffer of shape ()."""
        raise NotImplementedError("sum")

    def broadcast_scalar(self, s, shape):
        """A buffer of the given shape filled with the value of the shape-() buffer s."""
        raise NotImplementedError("broadcast_scalar")

    def sum_rows(self, a):
        """(N, M) -> (M,): the sum over the first axis."""
        raise NotImplementedError("sum_rows")

    def reshape(self, a, shape):
        raise NotImplementedError("reshape")

    # --- dense layers --------------------------------------------------------------------
    def matmul(self, a, b, trans_a=False, trans_b=False):
        """op(a) @ op(b) for 2-D buffers, where op transposes when its flag is set."""
        raise NotImplementedError("matmul")

    def linear(self, x, w, b):
        """x (N, in) @ w (out, in)^T + b (out,) -> (N, out)."""
        raise NotImplementedError("linear")

    # --- convolution and pooling ---------------------------------------------------------
    def conv2d(self, x, w, b):
        """Valid cross-correlation, stride 1: (N,C,H,W) * (O,C,K,K) + (O,) -> (N,O,H-K+1,W-K+1)."""
        raise NotImplementedError("conv2d")

    def conv2d_backward(self, x, w, g, needs):
        """Gradients (dx, dw, db) for output gradient g; an entry is None where needs says False."""
        raise NotImplementedError("conv2d_backward")

    def max_pool2d(self, x, k):
        """k x k windows, stride k, ceil mode (edge windows truncated).

        (N,C,H,W) -> (N,C,ceil(H/k),ceil(W/k))."""
        raise NotImplementedError("max_pool2d")

    def max_pool2d_backward(self, x, y, g, k):
        """Each window's gradient to its first maximum (row-major), zero elsewhere."""
        raise NotImplementedError("max_pool2d_backward")

    # --- activations ---------------------------------------------------------------------
    def gelu(self, x):
        """x/2 * (1 + erf(x / sqrt 2))."""
        raise NotImplementedError("gelu")

    def gelu_backward(self, x, g):
        """g * (Phi(x) + x * phi(x)), Phi and phi the standard normal cdf and density."""
        raise NotImplementedError("gelu_backward")

    def relu(self, x):
        raise NotImplementedError("relu")

    def relu_backward(self, x, g):
        """g where x > 0, else 0."""
        raise NotImplementedError("relu_backward")

    def log_softmax(self, x):
        """Over the last axis: x - max - log(sum(exp(x - max)))."""
        raise NotImplementedError("log_softmax")

    def log_softmax_backward(self, y, g):
        """g - exp(y) * sum(g), sums over the last axis; y is the forward output."""
        raise NotImplementedError("log_softmax_backward")

    # --- optimiser updates, in place -----------------------------------------------------
    def sgd_update(self, p, g, v, lr, momentum, weight_decay):
        """Heavy-ball momentum: d = g + wd*p; v = momentum*v + d; p -= lr*v."""
        raise NotImplementedError("sgd_update")

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        """Adam (step counts from 1): d = g + wd*p; m = b1*m + (1-b1)*d; v = b2*v + (1-b2)*d^2;
        p -= lr * (m / (1-b1^step)) / (sqrt(v / (1-b2^step)) + eps)."""
        raise NotImplementedError("adam_update")


PRIMITIVES = tuple(name for name, value in vars(Backend).items()
                   if callable(value) and not name.startswith("_") and name != "describe")
