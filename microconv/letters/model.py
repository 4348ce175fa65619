"""The seed's ConvoAlphabetModel: the network that reads handwritten letters.

Built from the engine's generic layers; everything letter-specific (26 classes, 28x28 input,
the two options that run the seed's own weights) lives here, not in the engine.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from microconv import backends
from microconv.engine import ops
from microconv.engine.nn import Conv2d, Dropout, Linear, Module
from microconv.engine.tensor import Tensor
from microconv.errors import MicroconvError
from microconv.resources import require_memory

# Bytes a step takes per byte of node values (the values, their gradients, the backends' work
# space and the allocator's slack), measured on the numpy backend at batch 512: 4.7 for a
# training step, 2.7 for inference.
MEMORY_PER_VALUE_BYTE = {True: 5, False: 3}
INIT_GAIN = math.sqrt(3.0)      # initial weights: LeCun's variance, 1 / inputs (see __init__)


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
        be = backends.resolve(backend)
        self.options = {"dropout": float(dropout), "output_gelu": bool(output_gelu),
                        "pool_gelu": bool(pool_gelu)}
        rng = np.random.default_rng(seed)
        self.backend = be
        self.dtype = dtype
        # PyTorch's default weights have a variance of 1 / (3 * inputs): each GELU layer then
        # shrinks the signal, and the first hundred steps of training are spent growing it
        # back. Three times that variance (LeCun's 1 / inputs) keeps its size
        # (docs/training.md, "The default recipe").
        gain = {"weight_gain": INIT_GAIN}
        self.c1 = Conv2d(1, 32, 3, be, dtype, rng, **gain)
        self.c2 = Conv2d(32, 64, 3, be, dtype, rng, **gain)
        self.c3 = Conv2d(64, 128, 3, be, dtype, rng, **gain)
        self.fc1 = Linear(512, 64, be, dtype, rng, **gain)
        self.fc2 = Linear(64, 128, be, dtype, rng, **gain)
        self.fc3 = Linear(128, self.classes, be, dtype, rng, **gain)
        self.drop = Dropout(dropout)

    def trace(self, x, train=False):
        """The graph up to the scores, with its landmarks: (blocks, scores).

        ``blocks`` are the outputs of the three convolution blocks, (N,32,13,13) (N,64,6,6)
        (N,128,2,2); ``scores`` (N, 26) are what the log-softmax normalises. ``microconv
        serve`` shows them to explain one reading.
        """
        blocks = []
        for conv in (self.c1, self.c2, self.c3):
            x = ops.max_pool2d(conv(x), 2)
            if self.options["pool_gelu"]:
                x = ops.gelu(x)
            blocks.append(x)
        x = self.fc1(ops.flatten(x))                      # (N, 64)
        if train:
            x = self.drop(x)
        x = ops.gelu(x)
        x = ops.gelu(self.fc2(x))                         # (N, 128)
        x = self.fc3(x)                                   # (N, 26)
        if self.options["output_gelu"]:                   # only the seed's January 2023 weights
            x = ops.gelu(x)
        return blocks, x

    def __call__(self, x, train=False):
        """Build the graph from an input node x (N, 1, 28, 28) to log-probabilities (N, 26)."""
        _, x = self.trace(x, train)
        return ops.log_softmax(x)


class LetterGraph:
    """The graph a batch of letters flows through, built once per batch size and fed by assign.

    images leaf (N, 1, 28, 28) -> model -> log-probabilities (N, 26), and for training the
    NLL loss against a one-hot labels leaf. Training, inference, the benchmark and the graph
    picture all use this one recipe; each step only assigns new values to the leaves, so the
    graph, its topological order and its buffers are reused.
    """

    def __init__(self, model, batch_size, train=False):
        require_graph_memory(model, batch_size, train)
        self.model = model
        self.batch_size = batch_size
        self.images = Tensor.leaf(np.zeros((batch_size, 1, 28, 28), dtype=model.dtype),
                                  model.backend, name="images")
        # the conv blocks' outputs and the scores stay reachable, to show what each layer sees
        self.blocks, self.scores = model.trace(self.images, train=train)
        self.log_probs = ops.log_softmax(self.scores)
        self.labels = self.loss = None
        if train:
            self.labels = Tensor.leaf(np.zeros((batch_size, model.classes), dtype=model.dtype),
                                      model.backend, name="one-hot labels")
            self.loss = ops.nll_loss(self.log_probs, self.labels)

    def feed(self, images, labels=None):
        """Assign the next batch (network input) and, when training, its integer labels."""
        self.images.assign(images)
        if labels is not None:
            self.labels.assign(ops.one_hot(labels, self.model.classes, self.model.dtype))


@functools.lru_cache(maxsize=None)
def _values_per_image(options, train):
    """How many numbers the nodes of the graph hold per image (parameters not counted), from a
    graph built for one image: building computes shapes only, nothing is evaluated."""
    model = ConvoAlphabetModel("numpy", **dict(options))
    images = Tensor.leaf(np.zeros((1, 1, 28, 28), dtype=np.float32), model.backend)
    output = model(images, train=train)
    return sum(math.prod(node.shape) for node in output.toposort()
               if node.op is not None or not node.requires_grad)


def graph_bytes(model, batch_size, train=False):
    """Host memory a LetterGraph of this batch size needs to run (an estimate on the high side).
    On a device backend only the inputs live on the host; the device reports its own limit."""
    itemsize = np.dtype(model.dtype).itemsize
    if not model.backend.host_memory:
        return 2 * batch_size * (28 * 28 + model.classes) * itemsize
    values = _values_per_image(tuple(sorted(model.options.items())), bool(train))
    return MEMORY_PER_VALUE_BYTE[bool(train)] * values * itemsize * batch_size


def require_graph_memory(model, batch_size, train=False):
    """Refuse, before anything is allocated, a batch size that is not a positive integer or
    whose graph cannot fit in the memory available (a ResourceError saying how much)."""
    if type(batch_size) is not int or batch_size < 1:
        raise MicroconvError(f"the batch size must be a positive integer, not {batch_size!r}")
    require_memory(graph_bytes(model, batch_size, train),
                   f"a batch of {batch_size:,} images" + (" for training" if train else ""),
                   "use a smaller batch size")
