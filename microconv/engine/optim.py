"""Optimisers: each parameter update is one backend primitive, so state stays on the device.

SGD uses classical heavy-ball momentum (v = mu*v + g; p -= lr*v). The seed's rule,
p -= lr*(mu*g_t + g_{t-1}), weighs the older gradient more than the new one and, with mu = 0,
steps with the previous batch's gradient only; docs/training.md compares the two.
"""

from __future__ import annotations

import numpy as np

from microconv.errors import CheckpointError


class Optimizer:
    state_names = ()

    def __init__(self, named_params, lr, weight_decay=0.0):
        self.params = list(named_params)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.steps = 0
        self.state = {name: {key: p.backend.full(p.shape, 0.0, p.dtype) for key in self.state_names}
                      for name, p in self.params}

    def step(self):
        self.steps += 1
        for name, p in self.params:
            if p._grad is not None:
                self._update(p, self.state[name])
                p.mark_changed()

    def _update(self, p, state):
        raise NotImplementedError

    def state_dict(self):
        """Step count and state buffers as NumPy arrays, for checkpoints."""
        arrays = {f"{name}/{key}": p.backend.to_numpy(self.state[name][key])
                  for name, p in self.params for key in self.state_names}
        return {"steps": self.steps, "arrays": arrays}

    def load_state_dict(self, saved):
        arrays = saved["arrays"]
        for name, p in self.params:
            for key in self.state_names:
                array = arrays.get(f"{name}/{key}")
                if array is None or tuple(array.shape) != p.shape:
                    raise CheckpointError(f"optimiser state {name}/{key} is missing or mis-shaped")
                self.state[name][key] = p.backend.from_numpy(np.asarray(array, dtype=p.dtype))
        self.steps = int(saved["steps"])


class SGD(Optimizer):
    state_names = ("velocity",)

    def __init__(self, named_params, lr=0.05, momentum=0.9, weight_decay=0.0):
        super().__init__(named_params, lr, weight_decay)
        self.momentum = float(momentum)

    def _update(self, p, state):
        p.backend.sgd_update(p._value, p._grad, state["velocity"], self.lr, self.momentum,
                             self.weight_decay)


class Adam(Optimizer):
    state_names = ("m", "v")

    def __init__(self, named_params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(named_params, lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps

    def _update(self, p, state):
        p.backend.adam_update(p._value, p._grad, state["m"], state["v"], self.lr, self.beta1,
                              self.beta2, self.eps, self.weight_decay, self.steps)
