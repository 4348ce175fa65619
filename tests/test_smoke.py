"""A quick end-to-end check that one training step of the letters model runs and learns."""

import numpy as np

import microconv as mc
from microconv.engine.optim import Adam
from microconv.letters.model import ConvoAlphabetModel


def test_adam_steps_lower_the_loss_on_a_fixed_batch():
    rng = np.random.default_rng(0)
    model = ConvoAlphabetModel(seed=1)
    x = mc.tensor(rng.random((8, 1, 28, 28)))
    loss = mc.nll_loss(model(x), rng.integers(0, 26, 8))
    opt = Adam(model.named_parameters(), lr=1e-3)
    first = loss.item()
    for _ in range(10):
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5
