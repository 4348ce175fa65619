"""The NumPy backend: vectorised primitives, convolution through im2col and one matrix multiply.

Buffers are C-contiguous NumPy arrays whose dtype (float32 by default, float64 for gradient
checks) is kept by every primitive. No Python loop runs over pixels, channels or batch items;
the only loops are over the k*k kernel offsets in col2im.
"""

from __future__ import annotations

import math

import numpy as np
from microconv.backends.base import Backend
from numpy.lib.stride_tricks import sliding_window_view

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erf64 = np.frompyfunc(math.erf, 1, 1)


def _erfc_positive(z):
    """erfc(z) for z >= 0 with a relative error below 1.2e-7 (Numerical Recipes' Chebyshev fit).

    Relative accuracy matters: GELU of a negative x is x/2 * erfc(|x|/sqrt 2), a tiny number.
    """
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
              0.09678418, 0.37409196, 1.00002368, -1.26551223):
        poly = c + t * poly
    return t * np.exp(-z * z + poly)


def _normal_cdf_times_2(x):
    """1 + erf(x / sqrt 2) = 2 * Phi(x), the factor GELU needs.

    float64 (used for gradient checks) calls math.erf element by element, exactly;
    float32 (used for training) uses the vectorised fit above, accurate to float32 rounding.
    """
    if x.dtype == np.float64:
        return 1.0 + _erf64(x * _SQRT_HALF).astype(np.float64)
    z = np.abs(x) * x.dtype.type(_SQRT_HALF)
    tail = _erfc_positive(z).astype(x.dtype)
    return np.where(x < 0, tail, 2 - tail)


def _im2col(x, k):
    """(N,C,H,W) -> (N*OH*OW, C*k*k): row (n, r, s) holds the window under output (r, s)."""
    n, c, h, w = x.shape
    oh, ow = h - k + 1, w - k + 1
    windows = sliding_window_view(x, (k, k), axis=(2, 3))       # (N, C, OH, OW, k, k), a view
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * k * k)


def _col2im(cols, x_shape, k):
    """The adjoint of _im2col: add every window row back onto the pixels it was read from."""
    n, c, h, w = x_shape
    oh, ow = h - k + 1, w - k + 1
    cols = cols.reshape(n, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)  # (N, C, k, k, OH, OW)
    out = np.zeros(x_shape, dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + oh, j:j + ow] += cols[:, :, i, j]
    return out


def _pool_windows(x, k, fill):
    """(N,C,H,W) -> (N,C,OH,OW,k*k), padding truncated edge windows with ``fill``."""
    n, c, h, w = x.shape
    oh, ow = -(-h // k), -(-w // k)
    if (oh * k, ow * k) != (h, w):
        padded = np.full((n, c, oh * k, ow * k), fill, dtype=x.dtype)
        padded[:, :, :h, :w] = x
        x = padded
    return x.reshape(n, c, oh, k, ow, k).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh, ow, k * k)


class NumpyBackend(Backend):
    name = "numpy"

    def describe(self):
        return f"NumPy {np.__version__} on the CPU"

    def from_numpy(self, array):
        return np.array(array, order="C", copy=True)

    def to_numpy(self, buf):
        return buf.copy()

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    # --- elementwise -------------------------------------------------------------------
    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def neg(self, a):
        return -a

    def scale(self, a, c):
        return a * a.dtype.type(c)

    # --- reductions and movement -------------------------------------------------------
    def sum(self, a):
        return np.asarray(a.sum(dtype=a.dtype))

    def broadcast_scalar(self, s, shape):
        return np.full(shape, s, dtype=s.dtype)

    def sum_rows(self, a):
        return a.sum(axis=0)

    def reshape(self, a, shape):
        return a.reshape(shape)

    # --- dense layers ------------------------------------------------------------------
    def matmul(self, a, b, trans_a=False, trans_b=False):
        return np.ascontiguousarray((a.T if trans_a else a) @ (b.T if trans_b else b))

    def linear(self, x, w, b):
        out = x @ w.T
        out += b
        return out

    # --- convolution -------------------------------------------------------------------
    def conv2d(self, x, w, b):
        n, _, h, wd = x.shape
        o, _, k, _ = w.shape
        oh, ow = h - k + 1, wd - k + 1
        out = _im2col(x, k) @ w.reshape(o, -1).T                   # (N*OH*OW, O)
        out += b
        return np.ascontiguousarray(out.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))

    def conv2d_backward(self, x, w, g, needs):
        o, _, k, _ = w.shape
        g_rows = g.transpose(0, 2, 3, 1).reshape(-1, o)               # (N*OH*OW, O)
        dx = _col2im(g_rows @ w.reshape(o, -1), x.shape, k) if needs[0] else None
        dw = (g_rows.T @ _im2col(x, k)).reshape(w.shape) if needs[1] else None
        db = g.sum(axis=(0, 2, 3)) if needs[2] else None
        return dx, dw, db

    # --- pooling -----------------------------------------------------------------------
    def max_pool2d(self, x, k):
        lowest = np.finfo(x.dtype).min
        return np.ascontiguousarray(_pool_windows(x, k, lowest).max(axis=-1))

    def max_pool2d_backward(self, x, y, g, k):
        n, c, h, w = x.shape
        oh, ow = y.shape[2], y.shape[3]
        lowest = np.finfo(x.dtype).min
        first_max = _pool_windows(x, k, lowest).argmax(axis=-1)           # (N, C, OH, OW)
        routed = np.zeros((n, c, oh, ow, k * k), dtype=g.dtype)
        np.put_along_axis(routed, first_max[..., None], g[..., None], axis=-1)
        full = routed.reshape(n, c, oh, ow, k, k).transpose(0, 1, 2, 4, 3, 5)
        return np.ascontiguousarray(full.reshape(n, c, oh * k, ow * k)[:, :, :h, :w])

    # --- activations -------------------------------------------------------------------
    def gelu(self, x):
        return x * _normal_cdf_times_2(x) * x.dtype.type(0.5)

    def gelu_backward(self, x, g):
        density = np.exp(x * x * x.dtype.type(-0.5)) * x.dtype.type(_INV_SQRT_2PI)
        return g * (_normal_cdf_times_2(x) * x.dtype.type(0.5) + x * density)

    def relu(self, x):
        return np.maximum(x, 0)

    def relu_backward(self, x, g):
        return np.where(x > 0, g, 0).astype(g.dtype)

    def log_softmax(self, x):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def log_softmax_backward(self, y, g):
        return g - np.exp(y) * g.sum(axis=-1, keepdims=True)

    # --- optimiser updates -------------------------------------------------------------
    def sgd_update(self, p, g, v, lr, momentum, weight_decay):
        v *= momentum
        v += g
        if weight_decay:
            v += weight_decay * p
        p -= p.dtype.type(lr) * v

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        d = g + weight_decay * p if weight_decay else g
        m *= beta1
        m += (1.0 - beta1) * d
        v *= beta2
        v += (1.0 - beta2) * d * d
        m_hat = m / (1.0 - beta1 ** step)
        v_hat = v / (1.0 - beta2 ** step)
        p -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(p.dtype)


def unavailable_reason():
    return None


def create():
    return NumpyBackend()
