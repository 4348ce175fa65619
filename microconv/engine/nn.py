"""Generic layers with named parameters: Module, Conv2d, Linear and Dropout.

A Module owns leaf tensors (its parameters) and builds graph nodes when called. Parameter
names come from attribute paths (``c1.weight``), so saving, loading, the optimisers and the
metrics are all plain loops over ``named_parameters()``.
"""

from __future__ import annotations

import math

import numpy as np

from microconv.engine import ops
from microconv.engine.tensor import Tensor
from microconv.errors import CheckpointError


class Module:
    def named_parameters(self, prefix=""):
        """(name, tensor) pairs in the order the attributes were set."""
        for attr, value in vars(self).items():
            if isinstance(value, Tensor) and value.requires_grad:
                yield prefix + attr, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + attr + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()

    def parameter_count(self):
        return sum(math.prod(p.shape) for p in self.parameters())

    def state_dict(self):
        """Every parameter as a NumPy array, by name."""
        return {name: p.numpy() for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; every missing, unexpected or mis-shaped name is
        reported together in one error, and nothing is changed unless everything fits."""
        params = dict(self.named_parameters())
        problems = [f"missing {name} {p.shape}" for name, p in params.items() if name not in state]
        problems += [f"unexpected {name}" for name in state if name not in params]
        problems += [f"{name} has shape {tuple(np.shape(state[name]))}, the model needs {p.shape}"
                     for name, p in params.items()
                     if name in state and tuple(np.shape(state[name])) != p.shape]
        if problems:
            raise CheckpointError("parameters do not fit the model: " + "; ".join(problems))
        for name, p in params.items():
            p.assign(state[name])


def _uniform(rng, shape, bound, dtype, gain=1.0):
    return rng.uniform(-bound, bound, size=shape).astype(dtype) * np.asarray(gain, dtype=dtype)


class Conv2d(Module):
    """k x k convolution, stride 1, no padding; PyTorch's default uniform initialisation, the
    weights times ``weight_gain``."""

    def __init__(self, in_channels, out_channels, k, backend, dtype, rng, weight_gain=1.0):
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = Tensor.leaf(_uniform(rng, (out_channels, in_channels, k, k), bound, dtype,
                                           weight_gain), backend, requires_grad=True)
        self.bias = Tensor.leaf(_uniform(rng, (out_channels,), bound, dtype), backend,
                                requires_grad=True)

    def __call__(self, x):
        return ops.conv2d(x, self.weight, self.bias)


class Linear(Module):
    """y = x w^T + b, initialised uniformly within +-1/sqrt(in) like PyTorch, the weights
    times ``weight_gain``."""

    def __init__(self, in_features, out_features, backend, dtype, rng, weight_gain=1.0):
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Tensor.leaf(_uniform(rng, (out_features, in_features), bound, dtype,
                                           weight_gain), backend, requires_grad=True)
        self.bias = Tensor.leaf(_uniform(rng, (out_features,), bound, dtype), backend,
                                requires_grad=True)

    def __call__(self, x):
        return ops.linear(x, self.weight, self.bias)


class Dropout(Module):
    """Inverted dropout with masks drawn on the host, so every backend sees the same ones.

    Calling it in a training graph creates a mask leaf; ``resample(rng)`` draws new masks
    for every such leaf before each step.
    """

    def __init__(self, p):
        self.p = float(p)
        self._masks = []

    def __call__(self, x):
        if self.p == 0.0:
            return x
        mask = Tensor.leaf(np.ones(x.shape, dtype=x.dtype), x.backend,
                           name=f"dropout mask {len(self._masks)}")
        self._masks.append(mask)
        return ops.dropout(x, mask)

    def resample(self, rng, rows=slice(None), batch_size=None):
        """New masks. A process that computes only ``rows`` of a batch of ``batch_size`` draws
        the masks of the whole batch (the same numbers as every other process) and keeps its
        rows, so the masks do not depend on how the batch is split."""
        for mask in self._masks:
            shape = (batch_size or mask.shape[0], *mask.shape[1:])
            keep = rng.random(shape)[rows] >= self.p
            mask.assign(keep.astype(mask.dtype) / (1.0 - self.p))
