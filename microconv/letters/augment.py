"""Augmentation: the ways real handwriting and real cameras differ from the training letters.

Training shows every letter a little changed, differently in every epoch, so that the network
learns the letter and not the pixels. Each change imitates something that happens on paper:

* the hand: a small rotation, a slant (shear), a letter wider or narrower (aspect) or a little
  smaller or larger (scale), a stroke bent by a smooth random field (elastic distortion);
* the pen: strokes thinner or thicker (grey erosion or dilation, blended for in-between widths);
* the framing: the letter off-centre by a pixel or two (position);
* the scan: a few pixels flipped, as in the seed's robustness test, on a share of the letters.

A share of the letters keeps its shape (only the speckle may touch them), so the network also
sees the letters as they are.

The random numbers of one image are a pure function of (seed, epoch, image index): the same
image in the same epoch gets the same changes whichever batch, process or machine it lands in,
so splitting batches across workers or resuming a run changes nothing. They come from a
counter-based hash (below) computed for a whole batch at once; the geometric changes become one
source coordinate per output pixel, and one bilinear gather resamples the whole batch (a
quarter of the time ``scipy.ndimage.map_coordinates`` takes for a stack of images, which
interpolates along the image axis too). There is no loop over images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from microconv.letters.data import flip_pixels

SIDE = 28
ELASTIC_GRID = 4              # control points per side of the smooth displacement field
STREAM = 3                    # keeps these draws apart from other uses of the same seed


@dataclass(frozen=True)
class Augmentation:
    """How strong each change may be; every image draws each one uniformly in its range."""
    rotation: float = 10.0            # degrees either way
    shear: float = 0.25               # horizontal shift per pixel of height (a slant)
    scale: tuple = (0.88, 1.05)       # size of the letter in its frame
    aspect: float = 0.15              # width changes by up to this fraction (height the other way)
    shift: float = 2.0                # pixels in each direction
    elastic: float = 1.2              # largest displacement of the smooth field, in pixels
    thickness: tuple = (-1.0, 0.6)    # -1 = one erosion step, +1 = one dilation step
    speckle_share: float = 0.5        # share of images that get the seed's flipped pixels
    speckle_pixels: int = 5
    share: float = 0.8                # share of images that get the other changes; the rest
                                      # keep their shape, so the network sees plain letters too

    def at_strength(self, strength):
        """These ranges shrunk towards no change by ``strength`` in [0, 1] (1: as they are).
        Every image still draws the same uniforms, so only the size of its changes differs."""
        if strength >= 1.0:
            return self
        s = max(0.0, float(strength))

        def towards_one(low, high):
            return (1.0 + s * (low - 1.0), 1.0 + s * (high - 1.0))

        return replace(self, rotation=s * self.rotation, shear=s * self.shear,
                       scale=towards_one(*self.scale), aspect=s * self.aspect,
                       shift=s * self.shift, elastic=s * self.elastic,
                       thickness=(s * self.thickness[0], s * self.thickness[1]),
                       speckle_share=s * self.speckle_share)


DEFAULT = Augmentation()


# --- random numbers: a pure function of (seed, epoch, index, draw) -----------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z):
    """SplitMix64's finaliser on a uint64 array: nearby inputs give unrelated outputs."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed, epoch, indices, count):
    """(len(indices), count) floats in [0, 1); entry (i, k) depends only on (seed, epoch,
    indices[i], k)."""
    def word(value):
        return np.uint64(int(value) & 0xFFFF_FFFF_FFFF_FFFF)

    base = _mix(_mix(_mix(np.array([word(seed)])) + word(STREAM)) + word(epoch))
    keys = _mix(base + np.asarray(indices, dtype=np.int64).astype(np.uint64))
    bits = _mix(keys[:, None] + np.arange(count, dtype=np.uint64)[None, :] * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# --- the changes -------------------------------------------------------------------------------

class _Draws:
    """Hands out the columns of one uniforms() table, each mapped onto a range."""

    def __init__(self, table):
        self.table = table
        self.next = 0

    def take(self, low, high, width=1):
        u = self.table[:, self.next:self.next + width]
        self.next += width
        u = u[:, 0] if width == 1 else u
        return low + (high - low) * u


def _draw_count(settings):
    """Uniforms one image uses: six for the affine map, the elastic grid, the pen, whether to
    speckle and where, whether to change the shape at all."""
    return 6 + 2 * ELASTIC_GRID ** 2 + 1 + 1 + settings.speckle_pixels + 1


def _source_coordinates(draws, n, settings):
    """(2, n, 28, 28) row and column in the original image that each output pixel comes from."""
    angle = np.radians(draws.take(-settings.rotation, settings.rotation))
    shear = draws.take(-settings.shear, settings.shear)
    scale = draws.take(*settings.scale)
    aspect = 1.0 + draws.take(-settings.aspect, settings.aspect)
    shift_x = draws.take(-settings.shift, settings.shift)
    shift_y = draws.take(-settings.shift, settings.shift)
    # Forward map from a letter's (x, y) to the picture: stretch, slant, rotate. Output pixels
    # need the inverse: where in the original does each of them come from?
    sx, sy = scale * aspect, scale / aspect
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.empty((n, 2, 2))
    forward[:, 0, 0] = cos * sx
    forward[:, 0, 1] = cos * shear * sy - sin * sy
    forward[:, 1, 0] = sin * sx
    forward[:, 1, 1] = sin * shear * sy + cos * sy
    inverse = np.linalg.inv(forward)
    centre = (SIDE - 1) / 2.0
    ys, xs = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64) - centre
    out_x = xs[None] - shift_x[:, None, None]
    out_y = ys[None] - shift_y[:, None, None]
    src_x = inverse[:, 0, 0, None, None] * out_x + inverse[:, 0, 1, None, None] * out_y
    src_y = inverse[:, 1, 0, None, None] * out_x + inverse[:, 1, 1, None, None] * out_y
    # Elastic distortion: a coarse grid of random displacements, interpolated to every pixel.
    grid = draws.take(-settings.elastic, settings.elastic, 2 * ELASTIC_GRID ** 2)
    grid = grid.reshape(n, 2, ELASTIC_GRID, ELASTIC_GRID)
    field = _SPREAD @ grid @ _SPREAD.T
    return np.stack([src_y + field[:, 1] + centre, src_x + field[:, 0] + centre])


def _spread_matrix():
    """(28, ELASTIC_GRID): linear interpolation from the control points to every pixel."""
    knots = np.linspace(0, SIDE - 1, ELASTIC_GRID)
    eye = np.eye(ELASTIC_GRID)
    return np.stack([np.interp(np.arange(SIDE), knots, eye[k]) for k in range(ELASTIC_GRID)],
                    axis=1)


_SPREAD = _spread_matrix()
_CROSS = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)


def _bilinear(images, coordinates):
    """(N, 28, 28) float32: each image sampled at its own (row, column) coordinates
    (2, N, 28, 28) by bilinear interpolation, black outside the frame."""
    n = len(images)
    side = SIDE + 2                             # a black border: outside reads as 0
    padded = np.zeros((n, side, side), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = images
    rows, cols = (np.clip(c + 1.0, 0.0, side - 1 - 1e-6) for c in coordinates)
    row0, col0 = rows.astype(np.intp), cols.astype(np.intp)
    down, right = (rows - row0).astype(np.float32), (cols - col0).astype(np.float32)
    flat = padded.reshape(-1)
    corner = np.arange(n)[:, None, None] * side * side + row0 * side + col0
    top = flat[corner] + right * (flat[corner + 1] - flat[corner])
    bottom = flat[corner + side] + right * (flat[corner + side + 1] - flat[corner + side])
    return top + down * (bottom - top)


def _pen(images, amount):
    """Strokes thicker (amount > 0, towards a dilation by one pixel) or thinner (amount < 0,
    towards an erosion), blended so widths in between occur too."""
    out = images.copy()
    for chosen, morphology in ((amount > 0, ndimage.grey_dilation),
                               (amount < 0, ndimage.grey_erosion)):
        part = images[chosen]
        weight = np.abs(amount[chosen])[:, None, None]
        out[chosen] = part + weight * (morphology(part, footprint=_CROSS) - part)
    return out


def augment(images, seed, epoch, indices, settings=DEFAULT):
    """A changed copy of a batch of upright uint8 letters (N, 28, 28).

    ``indices`` are the images' positions in the whole training set: with ``seed`` and
    ``epoch`` they fix every random choice, so one image gets the same changes in any batch.
    """
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        return images.copy()
    draws = _Draws(uniforms(seed, epoch, indices, _draw_count(settings)))
    coordinates = _source_coordinates(draws, n, settings)
    pen = draws.take(*settings.thickness)
    speckled = draws.take(0.0, 1.0) < settings.speckle_share
    positions = draws.take(0.0, SIDE * SIDE, settings.speckle_pixels).astype(np.int64)
    reshaped = draws.take(0.0, 1.0) < settings.share
    out = images.copy()
    if reshaped.any():
        moved = _bilinear(images[reshaped], coordinates[:, reshaped])
        moved = _pen(moved, pen[reshaped])
        out[reshaped] = np.clip(np.rint(moved), 0, 255).astype(np.uint8)
    if speckled.any():
        out[speckled] = flip_pixels(out[speckled], positions[speckled])
    return out
