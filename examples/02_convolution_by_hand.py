"""One convolution computed by hand next to mc.conv2d, and its gradients checked numerically.

Run: python examples/02_convolution_by_hand.py
"""

import numpy as np

import microconv as mc

rng = np.random.default_rng(0)
image = rng.normal(size=(1, 1, 5, 5))        # one image, one channel, 5x5
kernel = rng.normal(size=(1, 1, 3, 3))       # one output channel, 3x3
bias = np.array([0.5])

# By hand: slide the kernel over every 3x3 window ("valid" cross-correlation, stride 1).
by_hand = np.zeros((3, 3))
for r in range(3):
    for s in range(3):
        by_hand[r, s] = (image[0, 0, r:r + 3, s:s + 3] * kernel[0, 0]).sum() + bias[0]

x = mc.tensor(image, dtype="float64", requires_grad=True)
w = mc.tensor(kernel, dtype="float64", requires_grad=True)
b = mc.tensor(bias, dtype="float64", requires_grad=True)
y = mc.conv2d(x, w, b)
print("by hand:\n", by_hand.round(4))
print("mc.conv2d:\n", y.numpy()[0, 0].round(4))
print("largest difference:", np.abs(by_hand - y.numpy()[0, 0]).max())

# A loss whose output gradient is NOT uniform, so a wrong kernel gradient would show.
weights = rng.normal(size=(1, 1, 3, 3))
loss = (y * mc.tensor(weights, dtype="float64")).sum()
loss.backward()


def numeric_gradient(leaf, array, step=1e-6):
    """Central differences of the same loss, one element at a time: assign a nudged value to
    the leaf and read the loss again (only the nodes downstream of that leaf recompute)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        values = []
        for delta in (step, -step):
            array[index] = saved + delta
            leaf.assign(array)
            values.append(loss.item())
        array[index] = saved
        leaf.assign(array)
        grad[index] = (values[0] - values[1]) / (2 * step)
    return grad


for name, leaf, array in (("input", x, image), ("kernel", w, kernel), ("bias", b, bias)):
    analytic = leaf.grad                        # from loss.backward() above
    diff = np.abs(analytic - numeric_gradient(leaf, array)).max()
    print(f"{name:6s} gradient: largest difference to finite differences {diff:.2e}")
