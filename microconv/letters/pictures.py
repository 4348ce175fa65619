"""Opening and saving pictures safely: raster formats only, bounded sizes, and letters that read
the same whatever pixel format the file stores them in.

``open_picture`` is the one way a picture a user gives us is opened:

* only the raster formats in ``FORMATS`` are tried. Pillow would otherwise identify a file by
  its content, and a ``.png`` holding PostScript would reach the EPS decoder, which runs
  Ghostscript where it is installed;
* the size is checked before decoding: JPEG decodes straight to a reduced size; other formats
  are refused when their pixels would pass ``MAX_PIXELS`` bytes, then scaled to ``MAX_SIDE``;
* transparency is flattened onto a background the letters stand out from: dark letters on a
  transparent background read as dark on white (as the plain picture would), light letters
  as light on black;
* 16-bit and 32-bit grey (``I;16``, ``I``) and floating-point pictures are scaled to 0..255
  instead of being clipped, which turns most of a 16-bit picture white.

``save_picture`` writes a picture atomically in the format its file name asks for.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from microconv.errors import DataError
from microconv.letters.checkpoint import write_atomically

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")     # PPM also reads PGM and PBM
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".gif": "GIF",
                ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP", ".ppm": "PPM", ".pgm": "PPM"}
MAX_SIDE = 2048               # larger pictures are scaled down (while decoding, for JPEG)
MAX_PIXELS = 150_000_000      # bytes of pixel values decoded (and converted) at full size: a
                              # 12000 x 12000 grey scan fits, a 12000 x 12000 RGB one does not

_OPAQUE_MODES = {"1": "L", "L": "L", "RGB": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
                 "HSV": "RGB", "RGBX": "RGB"}
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def open_picture(source, mode="L"):
    """A picture as a Pillow image in ``mode`` ("L" grey or "RGB"): upright (its EXIF
    orientation applied), at most MAX_SIDE a side, transparency flattened, deep grey scaled to
    8 bits. ``source`` is a path or a binary file object (an upload held in memory). Anything
    that is not such a picture is a DataError naming the file ("in memory" for an object)."""
    path = picture_name(source)
    if not hasattr(source, "read") and not os.path.isfile(path):
        raise DataError(f"image {path} does not exist")
    try:
        with warnings.catch_warnings():
            # Pillow warns about damaged metadata and pictures over 89 M pixels (MAX_PIXELS is
            # our own limit): the answer is a picture or one DataError, never a warning.
            warnings.simplefilter("ignore")
            return _open_bounded(source, path, mode)
    except UnidentifiedImageError:
        raise DataError(f"cannot read image {path}: not a picture in a format microconv reads "
                        f"({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read image {path}: damaged or unsupported ({exc})") from None


def picture_name(source):
    """How messages name a picture: its path, or "in memory" for a file object."""
    return "in memory" if hasattr(source, "read") else os.fspath(source)


def _open_bounded(source, path, mode):
    image = Image.open(source, formats=FORMATS)
    image.draft(mode, (MAX_SIDE, MAX_SIDE))
    if image.width * image.height * _bytes_per_pixel(image) > MAX_PIXELS:
        raise DataError(f"image {path} is too large to read ({image.width} x "
                        f"{image.height} pixels, {image.mode}); scale it down first")
    image = _eight_bits(image)
    image.thumbnail((MAX_SIDE, MAX_SIDE))         # in place, before any other copy
    image = ImageOps.exif_transpose(image)
    return _flatten(image).convert(mode)


def _bytes_per_pixel(image):
    """Bytes per pixel decoded, plus those of a full-size conversion when one is needed."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA", "LA", "1"):
        return max(1, len(image.getbands()))
    if mode.startswith("I;16"):
        return 2 + 1
    if mode in ("I", "F"):
        return 4 + 8 + 1                               # the values, float64 scaling, the result
    return len(image.getbands()) + 4                   # palette, CMYK, ...: converted to RGB(A)


def _eight_bits(image):
    """The image in L, LA, RGB or RGBA with 8 bits per channel."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_grey_to_bytes(np.asarray(image), mode))
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return image.convert("LA" if mode in ("LA", "La") else "RGBA")
    return image if mode in ("L", "RGB") else image.convert(_OPAQUE_MODES.get(mode, "RGB"))


def _grey_to_bytes(values, mode):
    """Deep grey values to 0..255: 16-bit pictures by their top byte, other integer and float
    pictures by the range they evidently use (0..1, 0..255, 0..65535, else their own)."""
    if mode.startswith("I;16"):
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    for top in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
        if low >= 0 and high <= top:
            scaled = values * (255.0 / top)
            break
    else:
        scaled = (values - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten(image):
    """Transparency composited onto white, or onto black when what is opaque is mostly light
    (light letters on a transparent background); an opaque image is returned as it is."""
    if image.mode not in ("LA", "RGBA"):
        return image
    alpha = np.asarray(image.getchannel("A"), dtype=np.float64) / 255.0
    if alpha.min() >= 1.0:
        return image.convert("L" if image.mode == "LA" else "RGB")
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    weight = alpha.sum()
    light = weight > 0 and (grey * alpha).sum() / weight > 127.5
    shade = 0 if light else 255
    background = Image.new("RGBA", image.size, (shade, shade, shade, 255))
    return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")


def save_picture(image, path, replace=True):
    """Write a Pillow image to ``path`` atomically, in the format its extension names (.png,
    .jpg, ...); the previous file there stays whole if anything fails. DataError otherwise.
    With ``replace=False`` a file already at ``path`` is left alone: FileExistsError."""
    path = os.fspath(path)
    kind = SAVE_FORMATS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"cannot write {path}: name the picture .png, .jpg or another of "
                        f"{', '.join(SAVE_FORMATS)}")
    if kind in ("JPEG", "PPM", "BMP") and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    try:
        write_atomically(path, lambda f: image.save(f, format=kind), error=DataError,
                         replace=replace)
    except ValueError as exc:
        raise DataError(f"cannot write {path}: {exc}") from None
