"""The ops: rules that own a derivative, then the sugar users call.

Each rule says three things side by side: the shape of its output (checked when a node is
built), its forward value, and how an output gradient ``g`` flows back to each input. Rules
only call backend primitives (see ``backends/base.py``), so every backend gets autograd for
free and no backend contains derivative bookkeeping of its own.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from microconv.engine.tensor import Tensor, as_array, real_array
from microconv.errors import MicroconvError, ShapeError


class Rule:
    name = "?"

    @staticmethod
    def shape(arg, *shapes):
        raise NotImplementedError

    @staticmethod
    def forward(be, arg, *xs):
        raise NotImplementedError

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        """Return one gradient (or None when not needed) per input."""
        raise NotImplementedError


def _same_shapes(name, a, b):
    if a != b:
        raise ShapeError(f"{name}: shapes {a} and {b} differ (elementwise ops need equal shapes)")
    return a


class Add(Rule):
    name = "add"
    shape = staticmethod(lambda arg, a, b: _same_shapes("add", a, b))
    forward = staticmethod(lambda be, arg, a, b: be.add(a, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return g, g


class Sub(Rule):
    name = "sub"
    shape = staticmethod(lambda arg, a, b: _same_shapes("sub", a, b))
    forward = staticmethod(lambda be, arg, a, b: be.sub(a, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return g, (be.neg(g) if needs[1] else None)


class Mul(Rule):
    """Elementwise (Hadamard) product: hello-dl's DotProd."""
    name = "mul"
    shape = staticmethod(lambda arg, a, b: _same_shapes("mul", a, b))
    forward = staticmethod(lambda be, arg, a, b: be.mul(a, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        a, b = xs
        return (be.mul(g, b) if needs[0] else None), (be.mul(g, a) if needs[1] else None)


class Neg(Rule):
    name = "neg"
    shape = staticmethod(lambda arg, a: a)
    forward = staticmethod(lambda be, arg, a: be.neg(a))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.neg(g),)


class Scale(Rule):
    """Multiplication by a constant number ``arg``."""
    name = "scale"
    shape = staticmethod(lambda arg, a: a)
    forward = staticmethod(lambda be, arg, a: be.scale(a, arg))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.scale(g, arg),)


class Sum(Rule):
    """Sum of every element, giving a scalar; its gradient spreads g back over the input."""
    name = "sum"
    shape = staticmethod(lambda arg, a: ())
    forward = staticmethod(lambda be, arg, a: be.sum(a))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.broadcast_scalar(g, arg),)


class MatMul(Rule):
    """Matrix product of 2-D tensors (hello-dl's Mult): (m, k) @ (k, n) -> (m, n)."""
    name = "matmul"

    @staticmethod
    def shape(arg, a, b):
        if len(a) != 2 or len(b) != 2:
            raise ShapeError(f"matmul: needs two 2-D tensors, got shapes {a} and {b}")
        if a[1] != b[0]:
            raise ShapeError(f"matmul: {a} @ {b}: inner sizes {a[1]} and {b[0]} differ")
        return a[0], b[1]

    forward = staticmethod(lambda be, arg, a, b: be.matmul(a, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        a, b = xs
        # d(a@b)/da = g @ b^T and d(a@b)/db = a^T @ g
        ga = be.matmul(g, b, trans_b=True) if needs[0] else None
        gb = be.matmul(a, g, trans_a=True) if needs[1] else None
        return ga, gb


class Linear(Rule):
    """y = x @ w^T + b with x (N, in), w (out, in), b (out,): PyTorch's layout."""
    name = "linear"

    @staticmethod
    def shape(arg, x, w, b):
        if len(x) != 2 or len(w) != 2 or len(b) != 1:
            raise ShapeError(f"linear: needs x (N, in), w (out, in), b (out,); got {x}, {w}, {b}")
        if x[1] != w[1]:
            raise ShapeError(f"linear: x {x} has {x[1]} features but w {w} expects {w[1]}")
        if b[0] != w[0]:
            raise ShapeError(f"linear: bias {b} does not match the {w[0]} outputs of w {w}")
        return x[0], w[0]

    forward = staticmethod(lambda be, arg, x, w, b: be.linear(x, w, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        x, w, _ = xs
        gx = be.matmul(g, w) if needs[0] else None
        gw = be.matmul(g, x, trans_a=True) if needs[1] else None
        gb = be.sum_rows(g) if needs[2] else None
        return gx, gw, gb


class Conv2d(Rule):
    """Valid cross-correlation, stride 1: x (N,C,H,W), w (O,C,K,K), b (O,) -> (N,O,H-K+1,W-K+1).

    The weight gradient is the true one, dw[o,c,i,j] = sum over n,r,s of
    x[n,c,r+i,s+j] * g[n,o,r,s] (hello-dl's formula agrees only when g is uniform).
    """
    name = "conv2d"

    @staticmethod
    def shape(arg, x, w, b):
        if len(x) != 4 or len(w) != 4 or len(b) != 1:
            raise ShapeError(f"conv2d: needs x (N,C,H,W), w (O,C,K,K), b (O,); got {x}, {w}, {b}")
        if w[2] != w[3]:
            raise ShapeError(f"conv2d: kernel {w} must be square")
        if w[2] < 1:
            raise ShapeError(f"conv2d: kernel {w} is empty (0 x 0)")
        if x[1] != w[1]:
            raise ShapeError(f"conv2d: x {x} has {x[1]} channels but w {w} expects {w[1]}")
        if b[0] != w[0]:
            raise ShapeError(f"conv2d: bias {b} does not match the {w[0]} outputs of w {w}")
        if x[2] < w[2] or x[3] < w[3]:
            raise ShapeError(f"conv2d: image {x} is smaller than kernel {w}")
        return x[0], w[0], x[2] - w[2] + 1, x[3] - w[3] + 1

    forward = staticmethod(lambda be, arg, x, w, b: be.conv2d(x, w, b))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        x, w, _ = xs
        return be.conv2d_backward(x, w, g, needs)


class MaxPool2d(Rule):
    """Max over k x k windows with stride k, ceil mode: edge windows are truncated (11 -> 6).

    The gradient goes to the first maximum of each window (row-major scan). A window larger
    than the image is the whole image (``max_pool2d`` builds it with k = the longer side).
    """
    name = "max_pool2d"

    @staticmethod
    def shape(k, x):
        if len(x) != 4:
            raise ShapeError(f"max_pool2d: needs x (N,C,H,W), got shape {x}")
        return x[0], x[1], -(-x[2] // k), -(-x[3] // k)

    forward = staticmethod(lambda be, k, x: be.max_pool2d(x, k))

    @staticmethod
    def backward(be, k, g, out, xs, needs):
        return (be.max_pool2d_backward(xs[0], out, g, k),)


class Gelu(Rule):
    """GELU, exact erf form: x/2 * (1 + erf(x/sqrt 2))."""
    name = "gelu"
    shape = staticmethod(lambda arg, a: a)
    forward = staticmethod(lambda be, arg, a: be.gelu(a))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.gelu_backward(xs[0], g),)


class Relu(Rule):
    """max(0, x); the derivative at exactly 0 is taken as 0."""
    name = "relu"
    shape = staticmethod(lambda arg, a: a)
    forward = staticmethod(lambda be, arg, a: be.relu(a))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.relu_backward(xs[0], g),)


class LogSoftmax(Rule):
    """log softmax over the last axis, shifted by the row maximum so exp never overflows."""
    name = "log_softmax"

    @staticmethod
    def shape(arg, a):
        if len(a) < 1 or a[-1] == 0:
            raise ShapeError(f"log_softmax: needs at least one axis of size >= 1, got shape {a}")
        return a

    forward = staticmethod(lambda be, arg, a: be.log_softmax(a))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        # dx = g - softmax * sum(g) along the last axis, with softmax = exp(out)
        return (be.log_softmax_backward(out, g),)


class Reshape(Rule):
    """Same elements, new shape (row-major order). arg = (new shape, old shape)."""
    name = "reshape"

    @staticmethod
    def shape(arg, a):
        new, _ = arg
        if any(size < 0 for size in new) or math.prod(new) != math.prod(a):
            raise ShapeError(f"reshape: cannot view shape {a} as {new}")
        return new

    forward = staticmethod(lambda be, arg, a: be.reshape(a, arg[0]))

    @staticmethod
    def backward(be, arg, g, out, xs, needs):
        return (be.reshape(g, arg[1]),)


# --- building nodes ---------------------------------------------------------------------

def _node(rule, srcs, arg=None, name=None):
    first = srcs[0]
    for src in srcs:
        if not isinstance(src, Tensor):
            raise MicroconvError(f"{rule.name}: inputs must be microconv tensors, "
                                 f"not {type(src).__name__}")
        if src.backend is not first.backend:
            raise MicroconvError(f"{rule.name}: inputs live on different backends "
                                 f"({first.backend.name} and {src.backend.name})")
        if src.dtype != first.dtype:
            raise MicroconvError(f"{rule.name}: inputs have different dtypes "
                                 f"({first.dtype} and {src.dtype})")
    shape = rule.shape(arg, *(src.shape for src in srcs))
    requires_grad = any(src.requires_grad for src in srcs)
    return Tensor(rule, srcs, arg, shape, first.dtype, first.backend, requires_grad, name)


def _finite_number(value, name):
    """A plain number operand, refused when NaN or infinite (it would poison every value)."""
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise MicroconvError(f"{name}: the number {value} is not finite")
    return number


def _constant_like(value, like, name):
    return Tensor.leaf(as_array(np.full(like.shape, _finite_number(value, name)), like.dtype,
                                name), like.backend)


def _pair(a, b, name):
    """Turn a plain number on either side into a constant tensor shaped like the other side."""
    if isinstance(a, numbers.Real) and isinstance(b, Tensor):
        return _constant_like(a, b, name), b
    if isinstance(b, numbers.Real) and isinstance(a, Tensor):
        return a, _constant_like(b, a, name)
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a, b
    raise MicroconvError(f"{name}: cannot combine {type(a).__name__} and {type(b).__name__}")


def add(a, b):
    return _node(Add, _pair(a, b, "add"))


def sub(a, b):
    return _node(Sub, _pair(a, b, "sub"))


def mul(a, b):
    if isinstance(b, numbers.Real) and isinstance(a, Tensor):
        return _node(Scale, (a,), _finite_number(b, "mul"))
    if isinstance(a, numbers.Real) and isinstance(b, Tensor):
        return _node(Scale, (b,), _finite_number(a, "mul"))
    return _node(Mul, _pair(a, b, "mul"))


def neg(a):
    return _node(Neg, (a,))


def sum(a):
    return _node(Sum, (a,), a.shape if isinstance(a, Tensor) else None)


def matmul(a, b):
    return _node(MatMul, (a, b))


def linear(x, w, b):
    return _node(Linear, (x, w, b))


def conv2d(x, w, b):
    return _node(Conv2d, (x, w, b))


def max_pool2d(x, k=2):
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise MicroconvError(f"max_pool2d: kernel size must be a positive integer, got {k!r}")
    if isinstance(x, Tensor) and x.ndim == 4:
        # A window past the image's edges covers the whole image either way, and the work
        # grows with k * k: k never exceeds the image.
        k = min(k, max(x.shape[2], x.shape[3], 1))
    return _node(MaxPool2d, (x,), k)


def gelu(x):
    return _node(Gelu, (x,))


def relu(x):
    return _node(Relu, (x,))


def log_softmax(x):
    return _node(LogSoftmax, (x,))


def reshape(x, shape):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__") or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape):
        raise MicroconvError(f"reshape: the new shape must be a tuple of integers, not {shape!r}")
    shape = tuple(int(s) for s in shape)
    return _node(Reshape, (x,), (shape, x.shape if isinstance(x, Tensor) else None))


def flatten(x):
    """(N, ...) -> (N, rest), row-major: flat[c*H*W + h*W + w] = x[c, h, w]."""
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ShapeError("flatten: needs a tensor with a batch axis")
    return reshape(x, (x.shape[0], math.prod(x.shape[1:])))


def dropout(x, mask):
    """Inverted dropout: multiply by a mask leaf of 0 and 1/(1-p), drawn on the host."""
    return mul(x, mask)


def one_hot(labels, num_classes, dtype="float32"):
    """Integer class labels (N,) as an (N, num_classes) array of 0 and 1."""
    if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) \
            or num_classes < 1:
        raise MicroconvError(f"one_hot: num_classes must be a positive integer, not "
                             f"{num_classes!r}")
    labels = real_array(labels, "one_hot")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise MicroconvError(f"one_hot: labels must be a 1-D array of integers, got {labels.dtype} "
                             f"with shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise MicroconvError(f"one_hot: labels must lie in 0..{num_classes - 1}, "
                             f"got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.size, num_classes), dtype=dtype)
    out[np.arange(labels.size), labels] = 1
    return out


def nll_loss(logp, labels):
    """Mean negative log-likelihood over the batch: -(1/N) * sum_n logp[n, label_n].

    ``labels`` is either integer class labels (N,) or a tensor of one-hot rows shaped like
    ``logp``, which a training loop can ``assign`` new labels to at every step.
    """
    if not isinstance(logp, Tensor) or logp.ndim != 2:
        shape = logp.shape if isinstance(logp, Tensor) else type(logp).__name__
        raise ShapeError(f"nll_loss: log-probabilities must be (N, classes), got {shape}")
    if logp.shape[0] == 0:
        raise ShapeError("nll_loss: the batch is empty; the mean loss of no examples is undefined")
    if isinstance(labels, Tensor):
        target = labels
        if target.shape != logp.shape:
            raise ShapeError(f"nll_loss: one-hot labels {target.shape} do not match "
                             f"log-probabilities {logp.shape}")
    else:
        labels = real_array(labels, "nll_loss")
        if labels.shape != (logp.shape[0],):
            raise ShapeError(f"nll_loss: {logp.shape[0]} log-probability rows but labels of "
                             f"shape {labels.shape}")
        target = Tensor.leaf(one_hot(labels, logp.shape[1], logp.dtype), logp.backend)
    return mul(sum(mul(target, logp)), -1.0 / logp.shape[0])


def tensor(data, backend="numpy", requires_grad=False, dtype="float32", name=None):
    """A leaf tensor on the named backend (or a backend object)."""
    from microconv import backends
    be = backends.resolve(backend)
    return Tensor.leaf(as_array(data, dtype, "tensor"), be, requires_grad, name)
