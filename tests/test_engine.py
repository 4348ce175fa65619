"""Engine invariants: laziness, caching, invalidation after assign, repeatable backward, deep
graphs, deterministic order, untouched user data, and the backend contract doc.

Backend calls are counted with a NumPy backend whose every primitive is wrapped, so "computed
once" means what it says: the primitive ran once.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from microconv.backends.base import PRIMITIVES

import microconv as mc

NumpyBackend = type(mc.backends.get("numpy"))
DOCS = Path(__file__).resolve().parents[1] / "docs"


class CountingBackend(NumpyBackend):
    """The NumPy backend, counting how often each primitive runs."""
    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = Counter()


def _counted(primitive):
    inner = getattr(NumpyBackend, primitive)

    def call(self, *args, **kwargs):
        self.calls[primitive] += 1
        return inner(self, *args, **kwargs)
    return call


for _primitive in PRIMITIVES:
    setattr(CountingBackend, _primitive, _counted(_primitive))


@pytest.fixture
def counting():
    return CountingBackend()


def leaf(backend, shape, seed=0, requires_grad=True):
    values = np.random.default_rng(seed).uniform(-1, 1, shape)
    return mc.tensor(values, backend=backend, requires_grad=requires_grad)


# --- laziness and caching -----------------------------------------------------------------

def test_building_a_graph_computes_nothing(counting):
    x = leaf(counting, (1, 1, 5, 5))
    w = leaf(counting, (2, 1, 3, 3), seed=1)
    b = leaf(counting, (2,), seed=2)
    before = Counter(counting.calls)
    y = mc.log_softmax(mc.flatten(mc.gelu(mc.max_pool2d(mc.conv2d(x, w, b), 2))))
    assert counting.calls == before
    assert y.shape == (1, 8)                         # the shape is known without computing


def test_a_value_is_computed_once_and_reused(counting):
    x = leaf(counting, (3, 4))
    hidden = mc.gelu(x)
    y = (hidden + hidden) * 2.0                      # hidden is used twice
    first = y.numpy()
    assert counting.calls["gelu"] == 1
    calls = Counter(counting.calls)
    np.testing.assert_array_equal(y.numpy(), first)
    hidden.numpy()
    changed = {k: v - calls[k] for k, v in counting.calls.items() if v != calls[k]}
    assert changed == {"to_numpy": 2}                # only the copies to the host


def test_backward_reuses_the_forward_values(counting):
    x = leaf(counting, (2, 3))
    loss = mc.gelu(x).sum()
    loss.item()
    loss.backward()
    assert counting.calls["gelu"] == 1 and counting.calls["sum"] == 1


def test_assign_recomputes_exactly_what_depends_on_the_leaf(counting):
    a, b = leaf(counting, (2, 3)), leaf(counting, (2, 3), seed=1)
    from_a, from_b = mc.gelu(a), mc.relu(b)
    total = (from_a + from_b).sum()
    total.item()
    calls = Counter(counting.calls)
    new_a = np.full((2, 3), 0.5)
    a.assign(new_a)
    result = total.item()
    ran = {k: v - calls[k] for k, v in counting.calls.items() if v != calls[k]}
    assert ran == {"from_numpy": 1, "gelu": 1, "add": 1, "sum": 1, "to_numpy": 1}
    expected = mc.gelu(mc.tensor(new_a)).numpy() + np.maximum(b.numpy(), 0)
    assert result == pytest.approx(float(expected.sum()), rel=1e-6)


def test_new_inputs_change_the_loss_no_stale_cache():
    x = mc.tensor(np.zeros((2, 3)))
    loss = mc.nll_loss(mc.log_softmax(x), [0, 1])
    first = loss.item()
    x.assign(np.array([[5.0, 0, 0], [0, 5.0, 0]]))
    assert loss.item() < first - 1


def test_mark_changed_after_an_in_place_update(counting):
    p = leaf(counting, (2, 2))
    y = mc.gelu(p).sum()
    y.item()
    p._value *= 2                                   # what an optimiser does to a parameter
    p.mark_changed()
    assert y.item() == pytest.approx(float(mc.gelu(mc.tensor(p.numpy())).numpy().sum()),
                                     rel=1e-6)
    assert counting.calls["gelu"] == 2


# --- backward -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_backward_twice_gives_the_same_gradients(backend):
    x = leaf(backend, (1, 1, 4, 4))
    w = leaf(backend, (2, 1, 2, 2), seed=1)
    b = leaf(backend, (2,), seed=2)
    loss = mc.nll_loss(mc.log_softmax(mc.flatten(mc.max_pool2d(mc.conv2d(x, w, b), 2))), [3])
    loss.backward()
    first = [t.grad for t in (x, w, b)]
    loss.backward()
    for before, after in zip(first, [t.grad for t in (x, w, b)]):
        np.testing.assert_array_equal(before, after)


def test_gradients_are_fresh_after_assign():
    x = mc.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, [2, 4])
    x.assign([3.0, -1.0])
    y.backward()
    np.testing.assert_array_equal(x.grad, [6, -2])


def test_leaves_without_requires_grad_get_no_gradient():
    x = mc.tensor([1.0, 2.0])
    w = mc.tensor([3.0, 4.0], requires_grad=True)
    (x * w).sum().backward()
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, [1, 2])


def test_a_20000_node_chain_realizes_and_back_propagates():
    x = mc.tensor(np.ones(3), requires_grad=True)
    y = x
    for i in range(20_000):
        y = -y if i % 2 else y * 1.0
    loss = y.sum()
    assert loss.item() == 3.0
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.ones(3))
    assert len(loss.toposort()) == 20_002


# --- order --------------------------------------------------------------------------------

def small_graph():
    x = mc.tensor(np.ones((2, 4)), name="x")
    w = mc.tensor(np.ones((3, 4)), requires_grad=True, name="w")
    b = mc.tensor(np.zeros(3), requires_grad=True, name="b")
    h = mc.linear(x, w, b)
    return mc.nll_loss(mc.log_softmax(mc.relu(h) + mc.gelu(h)), [0, 2])


def test_topological_order_is_deterministic_and_puts_inputs_first():
    first, second = small_graph(), small_graph()
    describe = [(n.op.name if n.op else n.name, n.shape) for n in first.toposort()]
    assert describe == [(n.op.name if n.op else n.name, n.shape) for n in second.toposort()]
    assert first.toposort() is first.toposort()                       # computed once
    position = {id(n): i for i, n in enumerate(first.toposort())}
    for node in first.toposort():
        assert all(position[id(src)] < position[id(node)] for src in node.srcs)
    assert first.toposort()[-1] is first
    assert len(position) == len(first.toposort())                     # every node once


# --- user data ----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_user_arrays_are_never_changed(backend):
    x_data = np.random.default_rng(0).uniform(-1, 1, (2, 1, 4, 4)).astype(np.float32)
    w_data = np.random.default_rng(1).uniform(-1, 1, (1, 1, 3, 3)).astype(np.float32)
    b_data = np.zeros(1, dtype=np.float32)
    kept = [a.copy() for a in (x_data, w_data, b_data)]
    x = mc.tensor(x_data, backend=backend, requires_grad=True)
    w = mc.tensor(w_data, backend=backend, requires_grad=True)
    b = mc.tensor(b_data, backend=backend, requires_grad=True)
    loss = mc.gelu(mc.conv2d(x, w, b)).sum()
    loss.backward()
    new_x = x_data * 2
    kept_new = new_x.copy()
    x.assign(new_x)
    loss.backward()
    for data, copy in zip((x_data, w_data, b_data, new_x), kept + [kept_new]):
        np.testing.assert_array_equal(data, copy)
    # and what we hand out is a copy too: changing it does not change the graph
    value = loss.numpy()
    value[...] = 123
    w.grad[...] = 123
    assert loss.item() != 123 and not np.all(w.grad == 123)


# --- the contract doc ---------------------------------------------------------------------

def test_backends_doc_table_lists_exactly_the_primitives():
    doc = DOCS / "backends.md"
    if not doc.exists():
        pytest.fail("docs/backends.md is missing")
    listed = []
    for line in doc.read_text().splitlines():
        match = re.match(r"^\|\s*`([a-z_0-9]+)\(", line)
        if match:
            listed.append(match.group(1))
    assert sorted(listed) == sorted(PRIMITIVES), "docs/backends.md and backends/base.py differ"
    assert len(listed) == len(set(listed)), "a primitive is listed twice"


@pytest.mark.parametrize("backend", ["python", "numpy"])
def test_gradients_after_an_optimiser_step_match_a_fresh_graph(backend):
    """Parameters (here even the image, as when optimising an input) change in place; nothing a
    backend kept from the previous forward pass may leak into the next gradients."""
    from microconv.engine.optim import SGD

    def build(values):
        leaves = {n: mc.tensor(v, backend=backend, requires_grad=True) for n, v in values.items()}
        y = mc.conv2d(leaves["x"], leaves["w"], leaves["b"])
        weights = np.linspace(-1, 1, int(np.prod(y.shape))).reshape(y.shape)
        loss = (mc.gelu(y) * mc.tensor(weights, backend=backend)).sum()
        return leaves, loss

    rng = np.random.default_rng(3)
    values = {"x": rng.uniform(-1, 1, (2, 2, 5, 5)), "w": rng.uniform(-1, 1, (3, 2, 3, 3)),
              "b": rng.uniform(-1, 1, 3)}
    leaves, loss = build(values)
    optimiser = SGD(leaves.items(), lr=0.5, momentum=0.0)
    for _ in range(2):
        loss.backward()
        optimiser.step()
    loss.backward()
    fresh_leaves, fresh_loss = build({n: leaf.numpy() for n, leaf in leaves.items()})
    fresh_loss.backward()
    assert loss.item() == pytest.approx(fresh_loss.item(), rel=1e-6)
    for n in leaves:
        np.testing.assert_allclose(leaves[n].grad, fresh_leaves[n].grad, rtol=1e-5, atol=1e-6)
