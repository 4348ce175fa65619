"""The pure-Python backend: plain lists and loops, the readable reference for every primitive.

A buffer is a flat list of Python floats (doubles) plus a shape, row-major. No NumPy is used
in the op code; it appears only at the border, in from_numpy and to_numpy. It is slow (a
training batch of the letters model takes minutes) and exists to be read and stepped through.
"""

from __future__ import annotations

import math

from microconv.backends.base import Backend


class Buf:
    __slots__ = ("data", "shape")

    def __init__(self, data, shape):
        self.data = data
        self.shape = tuple(shape)


def _size(shape):
    return math.prod(shape)


def _phi(x):
    """Standard normal density."""
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


class PythonBackend(Backend):
    name = "python"
    slow = True

    def describe(self):
        return "pure Python (reference loops, float64 arithmetic)"

    def from_numpy(self, array):
        return Buf([float(v) for v in array.ravel().tolist()], array.shape)

    def to_numpy(self, buf):
        import numpy as np
        return np.array(buf.data, dtype=np.float64).reshape(buf.shape)

    def full(self, shape, value, dtype):
        return Buf([float(value)] * _size(shape), shape)

    # --- elementwise -------------------------------------------------------------------
    def add(self, a, b):
        return Buf([p + q for p, q in zip(a.data, b.data)], a.shape)

    def sub(self, a, b):
        return Buf([p - q for p, q in zip(a.data, b.data)], a.shape)

    def mul(self, a, b):
        return Buf([p * q for p, q in zip(a.data, b.data)], a.shape)

    def neg(self, a):
        return Buf([-p for p in a.data], a.shape)

    def scale(self, a, c):
        return Buf([p * c for p in a.data], a.shape)

    # --- reductions and movement -------------------------------------------------------
    def sum(self, a):
        return Buf([math.fsum(a.data)], ())

    def broadcast_scalar(self, s, shape):
        return Buf([s.data[0]] * _size(shape), shape)

    def sum_rows(self, a):
        rows, cols = a.shape
        sums = [math.fsum(a.data[r * cols + c] for r in range(rows)) for c in range(cols)]
        return Buf(sums, (cols,))

    def reshape(self, a, shape):
        return Buf(list(a.data), shape)

    # --- dense layers ------------------------------------------------------------------
    def matmul(self, a, b, trans_a=False, trans_b=False):
        ar, ac = a.shape
        br, bc = b.shape
        m, k = (ac, ar) if trans_a else (ar, ac)
        n = br if trans_b else bc

        def a_at(i, t):
            return a.data[t * ac + i] if trans_a else a.data[i * ac + t]

        def b_at(t, j):
            return b.data[j * bc + t] if trans_b else b.data[t * bc + j]

        out = [math.fsum(a_at(i, t) * b_at(t, j) for t in range(k))
               for i in range(m) for j in range(n)]
        return Buf(out, (m, n))

    def linear(self, x, w, b):
        y = self.matmul(x, w, trans_b=True)
        n, out = y.shape
        return Buf([y.data[i * out + o] + b.data[o] for i in range(n) for o in range(out)], y.shape)

    # --- convolution -------------------------------------------------------------------
    def conv2d(self, x, w, b):
        N, C, H, W = x.shape
        O, _, K, _ = w.shape
        OH, OW = H - K + 1, W - K + 1
        out = []
        for n in range(N):
            for o in range(O):
                for r in range(OH):
                    for s in range(OW):
                        acc = [b.data[o]]
                        for c in range(C):
                            for i in range(K):
                                for j in range(K):
                                    xv = x.data[((n * C + c) * H + r + i) * W + s + j]
                                    acc.append(xv * w.data[((o * C + c) * K + i) * K + j])
                        out.append(math.fsum(acc))
        return Buf(out, (N, O, OH, OW))

    def conv2d_backward(self, x, w, g, needs):
        N, C, H, W = x.shape
        O, _, K, _ = w.shape
        OH, OW = H - K + 1, W - K + 1
        dx = [0.0] * _size(x.shape)
        dw = [0.0] * _size(w.shape)
        db = [0.0] * O
        for n in range(N):
            for o in range(O):
                for r in range(OH):
                    for s in range(OW):
                        gv = g.data[((n * O + o) * OH + r) * OW + s]
                        db[o] += gv
                        for c in range(C):
                            for i in range(K):
                                for j in range(K):
                                    xi = ((n * C + c) * H + r + i) * W + s + j
                                    wi = ((o * C + c) * K + i) * K + j
                                    # y[n,o,r,s] uses x[n,c,r+i,s+j] * w[o,c,i,j]
                                    dx[xi] += gv * w.data[wi]
                                    dw[wi] += gv * x.data[xi]
        return (Buf(dx, x.shape) if needs[0] else None,
                Buf(dw, w.shape) if needs[1] else None,
                Buf(db, (O,)) if needs[2] else None)

    # --- pooling -----------------------------------------------------------------------
    def _windows(self, shape, k):
        """Yield (output index, input indices of its window) with truncated edge windows."""
        N, C, H, W = shape
        OH, OW = -(-H // k), -(-W // k)
        out = 0
        for nc in range(N * C):
            for r in range(OH):
                for s in range(OW):
                    rows = range(r * k, min(r * k + k, H))
                    cols = range(s * k, min(s * k + k, W))
                    yield out, [(nc * H + i) * W + j for i in rows for j in cols]
                    out += 1

    def max_pool2d(self, x, k):
        N, C, H, W = x.shape
        out = [max(x.data[i] for i in window) for _, window in self._windows(x.shape, k)]
        return Buf(out, (N, C, -(-H // k), -(-W // k)))

    def max_pool2d_backward(self, x, y, g, k):
        dx = [0.0] * _size(x.shape)
        for out, window in self._windows(x.shape, k):
            first_max = max(window, key=lambda i: (x.data[i], -i))
            dx[first_max] += g.data[out]
        return Buf(dx, x.shape)

    # --- activations -------------------------------------------------------------------
    # 1 + erf(v / sqrt 2) is written erfc(-v / sqrt 2): equal, but exact far into the negative
    # tail, where 1 + erf(...) rounds to 0.
    def gelu(self, x):
        return Buf([0.5 * v * math.erfc(-v / math.sqrt(2.0)) for v in x.data], x.shape)

    def gelu_backward(self, x, g):
        out = [gv * (0.5 * math.erfc(-v / math.sqrt(2.0)) + v * _phi(v))
               for v, gv in zip(x.data, g.data)]
        return Buf(out, x.shape)

    def relu(self, x):
        return Buf([max(0.0, v) for v in x.data], x.shape)

    def relu_backward(self, x, g):
        return Buf([gv if v > 0.0 else 0.0 for v, gv in zip(x.data, g.data)], x.shape)

    def log_softmax(self, x):
        n = x.shape[-1]
        out = []
        for start in range(0, len(x.data), n):
            row = x.data[start:start + n]
            top = max(row)
            log_total = math.log(math.fsum(math.exp(v - top) for v in row))
            out.extend(v - top - log_total for v in row)
        return Buf(out, x.shape)

    def log_softmax_backward(self, y, g):
        n = y.shape[-1]
        out = []
        for start in range(0, len(y.data), n):
            g_row = g.data[start:start + n]
            g_total = math.fsum(g_row)
            y_row = y.data[start:start + n]
            out.extend(gv - math.exp(yv) * g_total for yv, gv in zip(y_row, g_row))
        return Buf(out, y.shape)

    # --- optimiser updates -------------------------------------------------------------
    def sgd_update(self, p, g, v, lr, momentum, weight_decay):
        for i, gi in enumerate(g.data):
            v.data[i] = momentum * v.data[i] + gi + weight_decay * p.data[i]
            p.data[i] -= lr * v.data[i]

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        m_correction = 1.0 - beta1 ** step
        v_correction = 1.0 - beta2 ** step
        for i, gi in enumerate(g.data):
            d = gi + weight_decay * p.data[i]
            m.data[i] = beta1 * m.data[i] + (1.0 - beta1) * d
            v.data[i] = beta2 * v.data[i] + (1.0 - beta2) * d * d
            m_hat = m.data[i] / m_correction
            v_hat = v.data[i] / v_correction
            p.data[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)


def unavailable_reason():
    return None


def create():
    return PythonBackend()
