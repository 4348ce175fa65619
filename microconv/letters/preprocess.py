"""How 28x28 uint8 letters become network input, recorded in every checkpoint.

Images enter upright (row = y, col = x), ink bright on black, as EMNIST's pixels are after
the transpose fix. The seed scales pixels by 1/256 and then normalises every image to mean
0.172575 and standard deviation 0.25; a blank image (no ink at all) cannot be rescaled and is
mapped to the constant mean instead of NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from microconv.engine.tensor import real_array
from microconv.errors import CheckpointError, DataError
from microconv.letters import schema

SEED_MEAN = 0.172575
SEED_STD = 0.25
LIMIT = 100.0                  # |mean| and std beyond this only make the network's input huge

# What a checkpoint may record; anything else is refused before it reaches the arithmetic.
SCHEMA = schema.record({"scale": schema.number(high=1, above=0), "normalize": schema.boolean,
                        "mean": schema.number(-LIMIT, LIMIT),
                        "std": schema.number(high=LIMIT, above=0)}, closed=True)


@dataclass(frozen=True)
class Preprocessing:
    scale: float = 1.0 / 256.0     # pixel value 255 -> 0.996, as the seed's reader does
    normalize: bool = True         # per-image mean/std normalisation, as the seed's trainer does
    mean: float = SEED_MEAN
    std: float = SEED_STD

    def apply(self, images):
        """(N, 28, 28) uint8 upright images -> (N, 1, 28, 28) float32 network input."""
        images = real_array(images, "preprocess", DataError)
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"preprocess: expected images of shape (N, 28, 28), got {images.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            x = images.astype(np.float32) * np.float32(self.scale)
        if not np.isfinite(x).all():
            raise DataError("preprocess: the images hold values that are not finite pixels")
        if self.normalize:
            x = normalize_images(x, self.mean, self.std)
        return x[:, None, :, :]

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, data):
        """The preprocessing a checkpoint header records; CheckpointError when unusable."""
        try:
            SCHEMA(data, "preprocessing")
        except schema.Invalid as exc:
            raise CheckpointError(f"the checkpoint's preprocessing settings are unusable: {exc}"
                                  ) from None
        return cls(**data)


def normalize_images(x, mean=SEED_MEAN, std=SEED_STD):
    """Rescale each image (last two axes) to the given mean and population std.

    Like the seed: first scale so the mean is right, then stretch around the mean so the std
    is right. Images whose mean or spread is zero become the constant ``mean``.
    """
    x = np.asarray(x, dtype=np.float32)
    axes = (-2, -1)
    current_mean = x.mean(axis=axes, keepdims=True)
    safe_mean = np.where(current_mean > 0, current_mean, 1.0)
    x = np.where(current_mean > 0, x * (mean / safe_mean), mean)
    spread = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True))
    safe_spread = np.where(spread > 0, spread, 1.0)
    return np.where(spread > 0, mean + (x - mean) * (std / safe_spread), mean).astype(np.float32)
