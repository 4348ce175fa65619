"""The graph engine: lazily evaluated nodes, modelled on hello-dl's ``tensor2``.

A node (``Tensor``) holds its op, its inputs (``srcs``; ``lhs``/``rhs`` for the first two), one
small argument (``arg``), its shape and dtype, a cached value and a gradient. Values live in
the buffers of one backend; the engine never looks inside them.

Laziness: building a node computes only its shape (so shape errors point at the line that
built it). ``numpy()`` or ``backward()`` evaluate what is needed, in topological order.
Every value carries a stamp from one global clock; a node remembers the stamps of the inputs
it was computed from, so after ``leaf.assign(...)`` exactly the nodes downstream of that leaf
are recomputed and everything else is reused.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from microconv.errors import MicroconvError, ShapeError

_clock = itertools.count(1)
DTYPES = ("float32", "float64")


class Tensor:
    __slots__ = ("op", "srcs", "arg", "shape", "dtype", "backend", "requires_grad", "name",
                 "_value", "_grad", "_stamp", "_input_stamps", "_topo")

    def __init__(self, op, srcs, arg, shape, dtype, backend, requires_grad, name=None):
        self.op = op                  # the rule (see microconv.engine.ops); None for a leaf
        self.srcs = tuple(srcs)
        self.arg = arg
        self.shape = tuple(shape)
        self.dtype = dtype
        self.backend = backend
        self.requires_grad = requires_grad
        self.name = name
        self._value = None            # backend buffer, or None when not computed yet
        self._grad = None             # backend buffer of the last backward pass
        self._stamp = 0               # clock time at which _value was produced
        self._input_stamps = None     # the inputs' stamps that _value was computed from
        self._topo = None             # cached topological order ending at this node

    # --- leaves -------------------------------------------------------------------------

    @classmethod
    def leaf(cls, array, backend, requires_grad=False, name=None):
        """A node that holds a value instead of computing one (an input or a parameter)."""
        node = cls(None, (), None, array.shape, str(array.dtype), backend, requires_grad, name)
        node._set_value(backend.from_numpy(array))
        return node

    def assign(self, array):
        """Give a leaf a new value of the same shape; everything downstream becomes stale."""
        if self.op is not None:
            raise MicroconvError(f"assign: only leaves take new values, not '{self.op.name}' nodes")
        array = as_array(array, self.dtype, "assign")
        if array.shape != self.shape:
            raise ShapeError(f"assign: new value of shape {array.shape} for a leaf of {self.shape}")
        self._set_value(self.backend.from_numpy(array))

    def _set_value(self, buffer):
        self._value = buffer
        self._stamp = next(_clock)

    def mark_changed(self):
        """Tell the engine that this leaf's buffer was updated in place (by an optimiser)."""
        self._stamp = next(_clock)

    # --- evaluation ---------------------------------------------------------------------

    def toposort(self):
        """Every node this one depends on, inputs before users, computed once without recursion."""
        if self._topo is None:
            order, seen, stack = [], set(), [(self, False)]
            while stack:
                node, inputs_done = stack.pop()
                if inputs_done:
                    order.append(node)
                    continue
                if id(node) in seen:
                    continue
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((src, False) for src in reversed(node.srcs) if id(src) not in seen)
            self._topo = tuple(order)
        return self._topo

    def realize(self):
        """Compute this node's value, recomputing only nodes whose inputs changed.

        Overflow gives inf and NaN as IEEE arithmetic says, without NumPy's warnings: whoever
        needs finite values checks them (the training loop names the step and the layer)."""
        with np.errstate(all="ignore"):
            return self._realize()

    def _realize(self):
        for node in self.toposort():
            if node.op is None:
                continue
            stamps = tuple(src._stamp for src in node.srcs)
            if node._value is None or stamps != node._input_stamps:
                inputs = [src._value for src in node.srcs]
                node._value = node.op.forward(node.backend, node.arg, *inputs)
                node._input_stamps = stamps
                node._stamp = next(_clock)
        return self._value

    def numpy(self):
        """Evaluate and copy the value to the host as a NumPy array."""
        return np.asarray(self.backend.to_numpy(self.realize()), dtype=self.dtype)

    def item(self):
        """The value of a one-element tensor as a Python float."""
        if math.prod(self.shape) != 1:
            raise ShapeError(f"item: needs a tensor with one element, not shape {self.shape}")
        return float(self.numpy().reshape(()))

    def backward(self):
        """Fill ``grad`` of every node that needs one, for this scalar's value.

        Gradients are recomputed from zero on every call (hello-dl's zerograd and backward in
        one), so calling backward twice gives the same gradients, never twice as much.
        """
        if self.shape != ():
            raise ShapeError(f"backward: needs a scalar (shape ()), not shape {self.shape}")
        with np.errstate(all="ignore"):
            self._realize()
            self._backward()

    def _backward(self):
        topo = self.toposort()
        for node in topo:
            node._grad = None
        self._grad = self.backend.full((), 1.0, self.dtype)
        for node in reversed(topo):
            if node.op is None or node._grad is None:
                continue
            needs = tuple(src.requires_grad for src in node.srcs)
            if not any(needs):
                continue
            inputs = [src._value for src in node.srcs]
            grads = node.op.backward(node.backend, node.arg, node._grad, node._value, inputs, needs)
            for src, grad in zip(node.srcs, grads):
                if grad is not None and src.requires_grad:
                    src._grad = grad if src._grad is None else node.backend.add(src._grad, grad)

    @property
    def grad(self):
        """The gradient of the last backward pass as a NumPy array (None before any)."""
        if self._grad is None:
            return None
        return np.asarray(self.backend.to_numpy(self._grad), dtype=self.dtype)

    @grad.setter
    def grad(self, array):
        """Replace the gradient before an optimiser step (say, by its mean over processes).
        Not checked for finite values: the training loop looks for those and names the layer."""
        array = np.asarray(array, dtype=self.dtype)
        if array.shape != self.shape:
            raise ShapeError(f"grad: new value of shape {array.shape} for a tensor of {self.shape}")
        self._grad = self.backend.from_numpy(array)

    # --- names hello-dl readers know ----------------------------------------------------

    @property
    def lhs(self):
        return self.srcs[0] if self.srcs else None

    @property
    def rhs(self):
        return self.srcs[1] if len(self.srcs) > 1 else None

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        what = "leaf" if self.op is None else self.op.name
        label = f" '{self.name}'" if self.name else ""
        return f"<Tensor {what}{label} shape={self.shape} {self.dtype} on {self.backend.name}>"

    # --- operators: sugar over the rules in microconv.engine.ops -------------------------------

    def __add__(self, other):
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __neg__(self):
        return ops.neg(self)

    def sum(self):
        return ops.sum(self)

    __hash__ = object.__hash__


def real_array(data, where, error=MicroconvError):
    """User data as a NumPy array of real numbers (bool, int or float), or ``error`` saying why
    not: ragged lists, text, complex numbers and objects are refused."""
    try:
        raw = np.asarray(data)
        if raw.dtype.kind == "O":           # Python ints beyond 64 bits, mixed lists, objects
            raw = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise error(f"{where}: cannot convert the data to numbers ({exc})") from None
    if raw.dtype.kind not in "biuf":
        raise error(f"{where}: cannot convert {raw.dtype} data: only real numbers are accepted")
    return raw


def as_array(data, dtype, where):
    """Convert user data to a finite NumPy array of the given float dtype, or say why not:
    only real numbers that fit in the dtype are accepted."""
    if dtype not in DTYPES:
        raise MicroconvError(f"{where}: dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    raw = real_array(data, where)
    with np.errstate(over="ignore", invalid="ignore"):
        array = raw.astype(dtype)
    if not np.isfinite(array).all():
        finite = np.isfinite(raw).all()
        what = f"values too large for {dtype}" if finite else "NaN or infinite values"
        raise MicroconvError(f"{where}: the data holds {what}")
    return array


# Imported last: the rules module needs Tensor, and Tensor's operators need the rules.
from microconv.engine import ops  # noqa: E402
