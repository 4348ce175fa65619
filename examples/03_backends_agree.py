"""The same small CNN training step on every available backend, and how far apart they end up.

Run: python examples/03_backends_agree.py
"""

import numpy as np

import microconv as mc
from microconv.engine.optim import SGD


def one_step(backend):
    """Build a tiny CNN from a fixed seed, take one SGD step, return loss and parameters."""
    rng = np.random.default_rng(42)
    images = rng.random((2, 1, 8, 8))
    labels = np.array([1, 3])
    params = {
        "conv.w": mc.tensor(rng.normal(0, 0.3, (4, 1, 3, 3)), backend, requires_grad=True),
        "conv.b": mc.tensor(np.zeros(4), backend, requires_grad=True),
        "fc.w": mc.tensor(rng.normal(0, 0.3, (5, 36)), backend, requires_grad=True),
        "fc.b": mc.tensor(np.zeros(5), backend, requires_grad=True),
    }
    x = mc.tensor(images, backend)
    h = mc.gelu(mc.max_pool2d(mc.conv2d(x, params["conv.w"], params["conv.b"]), 2))
    logp = mc.log_softmax(mc.linear(mc.flatten(h), params["fc.w"], params["fc.b"]))
    loss = mc.nll_loss(logp, labels)
    first_loss = loss.item()
    loss.backward()
    SGD(params.items(), lr=0.1, momentum=0.9).step()
    return first_loss, {name: p.numpy() for name, p in params.items()}


results = {name: one_step(name) for name in mc.backends.available()}
reference_loss, reference_params = results["numpy"]
for name, (loss, params) in results.items():
    worst = max(np.abs(params[k] - reference_params[k]).max() for k in params)
    print(f"{name:8s} loss {loss:.6f}  largest parameter difference to numpy {worst:.2e}")
