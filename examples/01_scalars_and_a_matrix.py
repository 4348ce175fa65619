"""The graph engine on a few numbers: build nodes, read values lazily, back-propagate.

Run: python examples/01_scalars_and_a_matrix.py
"""

import numpy as np

import microconv as mc

# Leaves hold values; every other node only remembers its op and inputs until asked.
a = mc.tensor(2.0, requires_grad=True, dtype="float64", name="a")
b = mc.tensor(-3.0, requires_grad=True, dtype="float64", name="b")
c = a * b + a          # nothing is computed yet
print("c is", c, "- no value computed so far")
print("c =", c.numpy(), " (a*b + a with a=2, b=-3)")

c.backward()
print("dc/da =", a.grad, " (b + 1)")
print("dc/db =", b.grad, " (a)")

# The same with a tiny matrix product and a sum, the shape of one linear layer.
x = mc.tensor([[1.0, 2.0]], dtype="float64", name="x")                 # (1, 2)
w = mc.tensor([[0.5], [-1.0]], requires_grad=True, dtype="float64", name="w")  # (2, 1)
y = (x @ w).sum()
print("\ny = sum(x @ w) =", y.numpy())
y.backward()
print("dy/dw =", w.grad.ravel(), " (x transposed)")

# The graph, leaves first: what backward walks in reverse.
print("\ntopological order of y:")
for node in y.toposort():
    print("  ", node)

# Changing a leaf makes exactly the nodes downstream of it stale.
w.assign(np.array([[1.0], [1.0]]))
print("\nafter w.assign([[1], [1]]): y =", y.numpy())
