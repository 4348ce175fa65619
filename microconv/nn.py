"""Layers with named parameters, and the seed's ConvoAlphabetModel.

A Module owns leaf tensors (its parameters) and builds graph nodes when called. Parameter
names come from attribute paths (``c1.weight``), so saving, loading, the optimisers and the
metrics are all plain loops over ``named_parameters()``.
"""

from __future__ import annotations

import math

import numpy as np

from microconv import backends, ops
from microconv.errors import CheckpointError
from microconv.tensor import Tensor


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


def _uniform(rng, shape, bound, dtype):
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Module):
    """k x k convolution, stride 1, no padding; PyTorch's default uniform initialisation."""

    def __init__(self, in_channels, out_channels, k, backend, dtype, rng):
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = Tensor.leaf(_uniform(rng, (out_channels, in_channels, k, k), bound, dtype),
                                  backend, requires_grad=True)
        self.bias = Tensor.leaf(_uniform(rng, (out_channels,), bound, dtype), backend,
                                requires_grad=True)

    def __call__(self, x):
        return ops.conv2d(x, self.weight, self.bias)


class Linear(Module):
    """y = x w^T + b, initialised uniformly within +-1/sqrt(in) like PyTorch."""

    def __init__(self, in_features, out_features, backend, dtype, rng):
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Tensor.leaf(_uniform(rng, (out_features, in_features), bound, dtype),
                                  backend, requires_grad=True)
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

    def resample(self, rng):
        for mask in self._masks:
            keep = rng.random(mask.shape) >= self.p
            mask.assign(keep.astype(mask.dtype) / (1.0 - self.p))


class ConvoAlphabetModel(Module):
    """The seed's letter reader, as the blog's design list gives it.

    28x28 -> [conv3x3 1->32, max-pool 2, GELU] 32x13x13 -> [conv3x3 32->64, pool, GELU]
    64x6x6 (the 11x11 map pools with truncated edge windows) -> [conv3x3 64->128, pool, GELU]
    128x2x2 -> flatten 512 -> linear 64, GELU -> linear 128, GELU -> linear 26 -> log-softmax.
    137,178 parameters. Two options exist only to run the seed's own weights faithfully:
    ``output_gelu`` adds the GELU on fc3 that its January 2023 sample was trained with
    (seed-spec 5.3), and ``pool_gelu=False`` drops the post-pool GELUs that its HEAD code lost
    by accident (seed-spec 3.2). New models keep the defaults.
    """

    architecture = "ConvoAlphabetModel"
    classes = 26

    def __init__(self, backend="numpy", dtype="float32", seed=0, dropout=0.0, output_gelu=False,
                 pool_gelu=True):
        be = backends.get(backend) if isinstance(backend, str) else backend
        self.options = {"dropout": float(dropout), "output_gelu": bool(output_gelu),
                        "pool_gelu": bool(pool_gelu)}
        rng = np.random.default_rng(seed)
        self.backend = be
        self.dtype = dtype
        self.c1 = Conv2d(1, 32, 3, be, dtype, rng)
        self.c2 = Conv2d(32, 64, 3, be, dtype, rng)
        self.c3 = Conv2d(64, 128, 3, be, dtype, rng)
        self.fc1 = Linear(512, 64, be, dtype, rng)
        self.fc2 = Linear(64, 128, be, dtype, rng)
        self.fc3 = Linear(128, self.classes, be, dtype, rng)
        self.drop = Dropout(dropout)

    def __call__(self, x, train=False):
        """Build the graph from an input node x (N, 1, 28, 28) to log-probabilities (N, 26)."""
        for conv in (self.c1, self.c2, self.c3):          # (N,32,13,13) (N,64,6,6) (N,128,2,2)
            x = ops.max_pool2d(conv(x), 2)
            if self.options["pool_gelu"]:
                x = ops.gelu(x)
        x = self.fc1(ops.flatten(x))                      # (N, 64)
        if train:
            x = self.drop(x)
        x = ops.gelu(x)
        x = ops.gelu(self.fc2(x))                         # (N, 128)
        x = self.fc3(x)                                   # (N, 26)
        if self.options["output_gelu"]:                   # only the seed's January 2023 weights
            x = ops.gelu(x)
        return ops.log_softmax(x)
