"""microconv: a small, readable deep-learning framework that shows how convolutional networks work.

The public API uses PyTorch's names::

    import microconv as mc
    x = mc.tensor(images, backend="numpy")
    w = mc.tensor(weights, requires_grad=True)
    loss = mc.nll_loss(mc.log_softmax(mc.flatten(mc.conv2d(x, w, b))), labels)
    loss.backward(); w.grad
"""

from microconv import backends
from microconv.engine.ops import (
                              conv2d,
                              dropout,
                              flatten,
                              gelu,
                              linear,
                              log_softmax,
                              matmul,
                              max_pool2d,
                              nll_loss,
                              one_hot,
                              relu,
                              reshape,
                              tensor,
)
from microconv.engine.tensor import Tensor
from microconv.errors import (
                              BackendError,
                              CheckpointError,
                              DataError,
                              MicroconvError,
                              ResourceError,
                              ShapeError,
                              TrainingError,
)
from microconv.letters.checkpoint import load_checkpoint, save_checkpoint
from microconv.letters.data import generated_letters, load_emnist, perturb
from microconv.letters.evaluate import evaluate
from microconv.letters.training import TrainConfig, TrainingInterrupted, train

__version__ = "0.1.0"

__all__ = [
    "BackendError", "CheckpointError", "DataError", "MicroconvError", "ResourceError",
    "ShapeError", "Tensor",
    "TrainConfig", "TrainingError", "TrainingInterrupted", "__version__", "backends", "conv2d",
    "dropout", "evaluate", "flatten", "gelu", "generated_letters", "linear", "load_checkpoint",
    "load_emnist", "log_softmax", "matmul", "max_pool2d", "nll_loss", "one_hot", "perturb", "relu",
    "reshape", "save_checkpoint", "tensor", "train",
]
