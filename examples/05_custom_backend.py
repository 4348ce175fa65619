"""Adding a backend from user code: the NumPy backend, but counting every primitive it runs.

Run: python examples/05_custom_backend.py
"""

from collections import Counter

import numpy as np
from microconv.backends.ops_numpy import NumpyBackend

import microconv as mc


class CountingBackend(NumpyBackend):
    """Every primitive is inherited; __getattribute__ counts the calls on the way through."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __getattribute__(self, attr):
        value = object.__getattribute__(self, attr)
        if callable(value) and not attr.startswith("_") and attr != "describe":
            object.__getattribute__(self, "calls")[attr] += 1
        return value


mc.backends.register("counting", lambda: CountingBackend())
print("backends now:", mc.backends.names())

x = mc.tensor(np.random.default_rng(0).random((4, 1, 8, 8)), backend="counting")
w = mc.tensor(np.full((2, 1, 3, 3), 0.1), backend="counting", requires_grad=True)
b = mc.tensor(np.zeros(2), backend="counting", requires_grad=True)
loss = mc.gelu(mc.max_pool2d(mc.conv2d(x, w, b), 2)).sum()
loss.backward()
loss.backward()   # the forward values are cached: only the backward primitives run again
print("primitive calls:", dict(mc.backends.get("counting").calls))
