"""Read handwritten letters from a photo: find the lines, the words and each letter, prepare
each letter like EMNIST, classify. docs/photos.md shows the steps on a page.

The steps, each a small function:

1. ``read_photo``: the photo as grey values (float32, 0 = black) and in colour, upright,
   scaled down when huge.
2. ``ink_maps``: adaptive thresholding. ``paper`` estimates the paper's brightness under
   each pixel (a grey closing a few pen widths wide), so shading, vignetting and shadows
   move the threshold with them. A pixel is ink when it is clearly darker than its own
   paper; "clearly" is relative to the paper and to the paper's noise. Salt-and-pepper
   noise is taken out by a 3x3 median first.
3. ``ink_blobs``: 8-connected blobs of ink that hold strongly dark ink (scipy.ndimage).
4. ``find_letter_details``: drop specks and blobs cut by the image border, measure the
   slant of the writing, group letters into lines, attach dots and broken-off bits in the
   letter's ink, join the side-by-side pieces of a letter whose stroke broke, split blobs
   where two letters touch by a thin stroke, part words at wide gaps; reading order is
   lines top to bottom, letters along each line.
5. ``prepare_letter``: the EMNIST recipe (Cohen et al. 2017): crop to the ink, centre in a
   square keeping the aspect ratio, add a border of 3/24 (the data's size), bring the strokes to
   EMNIST's thickness, resize to 28x28, ink bright on black, upright.
6. ``read_letters``, ``text_of``, ``read_page`` and ``annotate``: classify each letter, give
   the text with its lines and words, draw boxes and answers; ``read_letters`` can also save
   each letter as a picture (``letter_crop``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from scipy.spatial import cKDTree

from microconv.errors import DataError
from microconv.letters.pictures import open_picture, picture_name, save_picture

LETTERS = string.ascii_lowercase
CROP_SIDE = 256               # pictures this small are crops: letters may touch their edges
WEAK_DARKNESS = 0.12          # ink: at least 12 % darker than the local paper ...
STRONG_DARKNESS = 0.18        # ... and every letter holds some pixels 18 % darker
IMPULSE = 0.3                 # a pixel this much (of the paper) off its 3x3 median is an
IMPULSE_SHARE = 0.001         # impulse; this share of impulses means salt-and-pepper noise
NOISE_SIGMAS = 5.0            # ... and darker than the paper's own texture by 5 sigma
WORK_SIDE = 112               # letters are thickened at 4x the final 28x28 resolution
EMNIST_BORDER = 2 / 24        # border around the square frame, as a fraction of its side
PREPARED_BORDER = 3 / 24      # ... and a prepared letter's, the data's letter size: see
                              # ``_prepare_gray_letter``
SOFT_EDGE = 0.02              # a letter's frame holds its ink down to this share of the core
EMNIST_STROKE = 1.5           # pen width in pixels of the 28x28 result (letters span 24 of
                              # them); the one tuned number, see docs/seed.md
MAX_SKEW = np.radians(15)     # lines of writing are taken to be within 15 degrees of level
WORD_GAP = 0.7                # a gap wider than this share of the letter height parts words
WORD_GAP_RATIO = 2.5          # ... when it is also this many times the usual gap in the line
PAPER_WINDOW = 2.0            # the paper is what is left after removing dark features this
                              # many pen widths wide
SPLIT_WIDTH = 1.5             # a blob this many letter heights wide may be letters touching
LONE_SPLIT_WIDTH = 2.5        # ... and this many when it is alone on a small picture
LONE_MARK = 0.5               # a line of one mark smaller than this share of a letter is noise
FAINT_MARK = 0.5              # ... and so is one whose share of strong ink is under this share
                              # of the page's letters' (specks joined by faint shading)
BROKEN_GAP = 0.2              # neighbours on a line are pieces of one broken letter when
BROKEN_REACH = 2.5            # ... nearly overlapping, within this many pen widths, and
BROKEN_WIDTH = 1.2            # ... together no wider than this share of the letter height
SMEAR = 0.6                   # a blob whose pen width is this share of its size is a smear
CROP_MARGIN = 0.25            # a saved letter picture shows this share of its frame around it
DOT_REACH = 0.6               # a dot is at most this share of a letter's height above it
SPECKLED = 0.02               # a page with more specks than this per letter-sized square
READ_SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))   # each letter is read as it is
                              # and moved by a pixel each way (``read_prepared``); one
                              # (0, 0) reads it once, at a fifth of the network's time
SAME_INK = 0.97               # a dot joins a letter when their ink colours agree this well
                              # (the cosine of their absorption in R, G, B)


# ---------------------------------------------------------------------------------------------
# 1. Reading the photo


def read_image(source):
    """Grey values (H, W) float32 in 0..255 of an image (a path or a binary file object), at
    most MAX_SIDE on each side."""
    return _checked(np.asarray(open_picture(source, "L"), dtype=np.float32), source)


def read_photo(source):
    """(grey (H, W), colour (H, W, 3)) float32 arrays of an image, like ``read_image``."""
    image = open_picture(source, "RGB")
    gray = _checked(np.asarray(image.convert("L"), dtype=np.float32), source)
    return gray, np.asarray(image, dtype=np.float32)


def _checked(gray, source):
    if gray.size == 0 or gray.max() - gray.min() < 1:
        raise DataError(f"image {picture_name(source)} is uniform: there is nothing to read")
    return gray


def as_gray(image):
    """Grey float32 array from a PIL image or an array (H, W) or (H, W, 3)."""
    if isinstance(image, Image.Image):
        image = image.convert("L")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"expected a grey or RGB image, got an array of shape {array.shape}")
    if _bright_ink(array):
        array = array.max() + array.min() - array       # chalk on a board, or an EMNIST image
    return array


def _bright_ink(gray):
    """True when the writing is brighter than its background: ink is the minority, so the
    far tail of the grey values lies on the ink's side of the median."""
    low, median, high = np.percentile(gray, [1, 50, 99])
    return median < 128 and (high - median) > 2 * (median - low)


# ---------------------------------------------------------------------------------------------
# 2. Adaptive thresholding


def local_mean(values, weights, radius):
    """Mean of ``values`` over a (2r+1)^2 window counting only pixels of weight 1, and the
    share of each window those pixels fill.

    The window shrinks at the image's borders (pixels outside count as weight 0), so the
    paper's brightness near an edge comes from the paper that is really there. Wide windows
    are averaged on blocks of pixels: the paper's brightness changes slowly, and a photo's
    estimate then costs milliseconds.
    """
    block = max(1, radius // 8)
    h, w = values.shape
    weighted = _block_sum(values * weights, block)
    weight = _block_sum(weights, block)
    size = 2 * max(1, round(radius / block)) + 1
    total = ndimage.uniform_filter(weighted, size, mode="constant")
    count = ndimage.uniform_filter(weight, size, mode="constant")
    mean = total / np.maximum(count, 1e-12)
    share = count / block ** 2
    if block > 1:                 # back to full size: each block's value for its pixels
        mean = np.repeat(np.repeat(mean, block, axis=0), block, axis=1)[:h, :w]
        share = np.repeat(np.repeat(share, block, axis=0), block, axis=1)[:h, :w]
    return mean.astype(np.float32), share


def _block_sum(a, block):
    if block == 1:
        return np.asarray(a, dtype=np.float64)
    h, w = a.shape
    padded = np.zeros((-(-h // block) * block, -(-w // block) * block))
    padded[:h, :w] = a
    return padded.reshape(padded.shape[0] // block, block, -1, block).sum(axis=(1, 3))


def ink_maps(gray):
    """(weak, strong, darkness): boolean ink maps and the relative darkness 1 - gray/paper.

    A pixel is ink when it is clearly darker than the paper around it (``paper``); weak ink
    is at least WEAK_DARKNESS darker and darker than NOISE_SIGMAS of the paper's own texture,
    strong ink half as dark again (and at least STRONG_DARKNESS). On a photo peppered with
    single dark and bright pixels (salt-and-pepper noise), the ink is looked for on a 3x3
    median of it, which removes them and keeps every stroke two pixels wide or more.
    """
    smooth = ndimage.median_filter(gray, 3)
    impulses = np.mean(np.abs(gray - smooth) > IMPULSE * np.median(gray))
    if impulses > IMPULSE_SHARE:
        gray = smooth
    darkness = 1.0 - gray / np.maximum(paper(gray, smooth), 1.0)
    paper_noise = 1.4826 * np.median(np.abs(darkness - np.median(darkness)))   # robust sigma
    weak_limit = max(WEAK_DARKNESS, NOISE_SIGMAS * paper_noise)
    weak = darkness > weak_limit
    strong = darkness > max(STRONG_DARKNESS, 1.5 * weak_limit)
    return weak, strong, darkness


def paper(gray, smooth=None):
    """The paper's brightness under every pixel, with the writing taken away.

    First a rough estimate: a local mean over a window of about a tenth of the shorter side
    that leaves out the ink (and where ink fills that window, a window four times wider, so
    a big dark smear stays dark rather than becoming new paper). It finds the writing well
    enough to measure its pen width. Then a grey closing (a maximum, then a minimum, over a
    square a few pen widths wide) removes every stroke and keeps what is wider: the paper,
    its shading and the hard edges of shadows, which a wide mean would smear into ink.
    The closing works on ``smooth``, the 3x3 median of ``gray`` (computed when not given),
    so single bright pixels (salt noise) cannot pass for paper.
    """
    rough = _rough_paper(gray)
    rough_ink = 1.0 - gray / np.maximum(rough, 1.0) > WEAK_DARKNESS
    big = np.zeros_like(rough_ink)
    for blob in ink_blobs(rough_ink, rough_ink, _speck_floor(gray.shape)):
        big[blob.ys, blob.xs] = True
    if not big.any():
        return rough
    side = 2 * int(np.ceil(PAPER_WINDOW * _stroke_width(big))) + 1
    if smooth is None:
        smooth = ndimage.median_filter(gray, 3)
    closed = ndimage.grey_closing(smooth, size=(side, side))
    return ndimage.uniform_filter(closed, side)


def _rough_paper(gray):
    radius = max(8, min(gray.shape) // 20)
    everything = np.ones_like(gray)
    estimate, _ = local_mean(gray, everything, 4 * radius)
    for _ in range(2):        # re-estimate without the ink, which would pull the mean down
        not_ink = (gray > estimate * (1 - WEAK_DARKNESS)).astype(np.float32)
        near, near_share = local_mean(gray, not_ink, radius)
        wide, wide_share = local_mean(gray, not_ink, 4 * radius)
        estimate = np.where(near_share > 0.25, near, np.where(wide_share > 0, wide, estimate))
    return estimate


# ---------------------------------------------------------------------------------------------
# 3. Connected components


@dataclass
class Ink:
    """Pixels of ink, (row, column) pairs: one blob, a letter, or a piece of one."""
    ys: np.ndarray
    xs: np.ndarray

    @property
    def box(self):
        """(left, top, right, bottom), right and bottom exclusive."""
        return (int(self.xs.min()), int(self.ys.min()),
                int(self.xs.max()) + 1, int(self.ys.max()) + 1)

    @property
    def size(self):
        left, top, right, bottom = self.box
        return max(right - left, bottom - top)

    def mask(self, box):
        """Boolean mask, the shape of ``box``, of these pixels inside it."""
        left, top, right, bottom = (int(v) for v in box)
        mask = np.zeros((bottom - top, right - left), dtype=bool)
        inside = (self.ys >= top) & (self.ys < bottom) & (self.xs >= left) & (self.xs < right)
        mask[self.ys[inside] - top, self.xs[inside] - left] = True
        return mask

    def shifted(self, dx, dy):
        return Ink(self.ys + dy, self.xs + dx)


def _joined(parts):
    return Ink(np.concatenate([p.ys for p in parts]), np.concatenate([p.xs for p in parts]))


def ink_blobs(weak, strong, min_size=1):
    """8-connected blobs of weak ink that hold some strong ink and are at least
    ``min_size`` pixels wide or tall, as Ink."""
    labels, count = ndimage.label(weak, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return []
    has_strong = np.bincount(labels[strong], minlength=count + 1) > 0
    blobs = []
    for index, (rows, cols) in enumerate(ndimage.find_objects(labels), 1):
        if not has_strong[index] or max(rows.stop - rows.start, cols.stop - cols.start) < min_size:
            continue
        ys, xs = np.nonzero(labels[rows, cols] == index)
        blobs.append(Ink(ys + rows.start, xs + cols.start))
    return blobs


# ---------------------------------------------------------------------------------------------
# 4. Finding lines and letters


@dataclass
class Letter:
    """A letter found on the photo: its ink, where it sits in the text, and the typical
    letter size of its line (which sets the pen width it is prepared with)."""
    ink: Ink
    line: int = 0
    word: int = 0
    line_size: float = 0.0

    @property
    def ink_box(self):
        """The tight box around the letter's ink."""
        return self.ink.box

    @property
    def box(self):
        """The EMNIST frame: a square around the ink with a 2/24 border."""
        return square_box(self.ink.box)


def square_box(ink_box, border=EMNIST_BORDER):
    """EMNIST's frame: a square around the ink box (aspect kept), plus a border on each side."""
    left, top, right, bottom = ink_box
    side = max(right - left, bottom - top)
    pad = int(round(side * border))
    cx2, cy2 = left + right, top + bottom           # twice the centre, to stay in integers
    full = side + 2 * pad
    new_left = (cx2 - full) // 2
    new_top = (cy2 - full) // 2
    return (int(new_left), int(new_top), int(new_left + full), int(new_top + full))


def _mask_box(mask):
    """(left, top, right, bottom) of a mask's True pixels; None when it has none."""
    rows = np.nonzero(mask.any(axis=1))[0]
    if len(rows) == 0:
        return None
    cols = np.nonzero(mask.any(axis=0))[0]
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _runs(mask):
    """(rows, starts, ends) of the runs of True in each row of a 2-D mask; ends exclusive."""
    edges = np.diff(mask.astype(np.int8), axis=1, prepend=0, append=0)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def _stroke_width(mask):
    """Typical pen width in pixels: the median length of horizontal and vertical ink runs,
    whichever is shorter (a run along a stroke is long, across it short)."""
    widths = []
    for m in (mask, mask.T):
        _, starts, ends = _runs(m)
        if len(starts):
            widths.append(float(np.median(ends - starts)))
    return min(widths) if widths else 1.0


def find_letter_details(image, colour=None):
    """Letters on an image, in reading order, each with its line and word. See
    ``find_letters``. ``colour`` (H, W, 3), when given, is the same picture in colour: a
    small mark near a letter joins it (the dot of an i) only when it has the letter's ink."""
    return _letter_details(*_gray_and_colour(image, colour))


def _gray_and_colour(image, colour):
    """(``as_gray(image)``, ``colour``, by default the image's own colour channels)."""
    gray = as_gray(image)
    if colour is None:
        array = np.asarray(image, dtype=np.float32)
        colour = array[..., :3] if array.ndim == 3 else gray[..., None]
    return gray, colour


def _letter_details(gray, colour):
    """``find_letter_details`` on a grey image already made by ``as_gray``."""
    if max(gray.shape) <= CROP_SIDE:
        # A small picture is a crop of a letter or a word, which may touch its edges: give it
        # a margin of paper so nothing is mistaken for the cut-off edge of a photo.
        margin = max(gray.shape) // 4
        padded = np.pad(gray, margin, mode="constant", constant_values=_edge_paper(gray))
        colour = np.pad(colour, ((margin, margin), (margin, margin), (0, 0)), mode="edge")
        letters = _find_in(padded, colour, crop=True)
        for letter in letters:
            letter.ink = letter.ink.shifted(-margin, -margin)
        return letters
    return _find_in(gray, colour)


def _edge_paper(gray):
    """The paper value to put beside each edge of a crop, ((top, bottom), (left, right)): the
    edge's own median, so paper that darkens towards an edge (a shadow, vignetting) makes no
    step that would read as ink; the picture's median where the edge's median lies nearer the
    ink than the paper (a letter running along that edge)."""
    ink, bright = np.percentile(gray, 1), np.percentile(gray, 90)
    whole = np.median(gray)

    def paper_of(edge):
        value = np.median(edge)
        return value if value - ink > 0.5 * (bright - ink) else whole
    return ((paper_of(gray[0]), paper_of(gray[-1])), (paper_of(gray[:, 0]), paper_of(gray[:, -1])))


def find_letters(image):
    """Boxes (left, top, right, bottom) of the handwritten letters on an image.

    ``image`` is a PIL image or an array (grey or RGB, paper bright and ink dark). Boxes are
    EMNIST frames (square, with a 2/24 border; they may reach past the image's edge), in
    reading order: lines top to bottom, letters left to right. An image without writing
    gives an empty list.
    """
    return [letter.box for letter in find_letter_details(image)]


def _speck_floor(shape):
    """The fewest pixels a blob of ink needs to be more than a speck on a picture this size."""
    return max(6, min(shape) // 100)


def _find_in(gray, colour, crop=False):
    h, w = gray.shape
    weak, strong, _ = ink_maps(gray)
    floor = _speck_floor(gray.shape)
    # Blobs cut by the photo's border are shading or partial objects, never a readable letter.
    blobs = [b for b in ink_blobs(weak, strong, floor // 2) if not _touches_border(b.box, w, h)]
    big = [b for b in blobs if b.size >= floor]
    if not big:
        return []
    typical = _typical_size(big)
    letters = _merge_stacked([Letter(b) for b in big if b.size >= 0.3 * typical])
    pieces = [b for b in blobs if b.size < 0.3 * typical]
    angle = _skew(letters, typical)
    lines = _lines(letters, angle)
    _attach_pieces(lines, pieces, colour, weak, typical)
    strong_share = np.median([_strong_share(x, strong) for line in lines for x in line])
    found = []
    for line in lines:
        height = float(np.median([x.ink_box[3] - x.ink_box[1] for x in line]))
        # A crop holding one blob is most likely one letter (a picture of a data set, or
        # one saved by read_letters): only a blob wider than any letter is cut.
        wider_than = LONE_SPLIT_WIDTH if crop and len(lines) == len(line) == 1 else SPLIT_WIDTH
        line = _join_broken(line, height, angle)
        line = [part for x in line for part in _split_touching(x, height, wider_than)]
        line = [x for x in line if _looks_like_writing(x, typical)]
        if len(line) == 1 and (line[0].ink.size < LONE_MARK * typical or
                               _strong_share(line[0], strong) < FAINT_MARK * strong_share):
            continue                  # a small or faint mark alone on its line: specks clumped
        if line:
            found += _words(line, angle, found[-1].line + 1 if found else 0)
    return found


def _strong_share(letter, strong):
    """The share of a letter's ink pixels that are strong ink."""
    return float(strong[letter.ink.ys, letter.ink.xs].mean())


def _touches_border(box, w, h):
    left, top, right, bottom = box
    return left <= 0 or top <= 0 or right >= w or bottom >= h


def _typical_size(blobs):
    """The writing's letter size: the median size of the blobs, each counted by its ink, so
    that many specks cannot outvote a few letters."""
    sizes = np.array([b.size for b in blobs], dtype=float)
    weights = np.array([len(b.ys) for b in blobs], dtype=float)
    order = np.argsort(sizes)
    cumulative = np.cumsum(weights[order])
    return float(sizes[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def _merge_stacked(letters):
    """Blobs stacked above each other (broken strokes, an i's dot grown large) are one letter:
    merge when their columns overlap by more than half of the narrower one and the gap
    between them is under a third of the taller one."""
    merged = []
    for letter in sorted(letters, key=lambda x: x.ink_box[0]):
        for other in merged:
            a, b = letter.ink_box, other.ink_box
            overlap = min(a[2], b[2]) - max(a[0], b[0])
            narrower = min(a[2] - a[0], b[2] - b[0])
            gap = max(a[1], b[1]) - min(a[3], b[3])
            if overlap > 0.5 * narrower and gap < max(a[3] - a[1], b[3] - b[1]) / 3:
                other.ink = _joined([other.ink, letter.ink])
                break
        else:
            merged.append(letter)
    return merged


def _centres(letters):
    boxes = np.array([x.ink_box for x in letters], dtype=float).reshape(-1, 4)
    return (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2


def _skew(letters, typical):
    """The angle (radians) of the lines of writing: the median direction from each letter to
    its nearest neighbour on the right at about the same height."""
    x, y = _centres(letters)
    dx = x[None, :] - x[:, None]
    dy = y[None, :] - y[:, None]
    near = (dx > 0) & (dx < 4 * typical) & (np.abs(dy) < 0.5 * typical)
    if not near.any():
        return 0.0
    dx = np.where(near, dx, np.inf)
    has = near.any(axis=1)
    nearest = np.argmin(dx, axis=1)[has]
    rows = np.nonzero(has)[0]
    angles = np.arctan2(dy[rows, nearest], dx[rows, nearest])
    return float(np.clip(np.median(angles), -MAX_SKEW, MAX_SKEW))


def _along_across(ink, angle):
    """The ink's pixel coordinates along the line of writing and across it (downwards)."""
    cos, sin = np.cos(angle), np.sin(angle)
    return ink.xs * cos + ink.ys * sin, ink.ys * cos - ink.xs * sin


def _lines(letters, angle):
    """Group letters into lines, top to bottom, each sorted along the writing.

    Across the writing (the page turned by ``angle``), a letter joins a line when it
    overlaps the line's band (the median top and bottom of its letters so far) by more
    than half of the smaller of the two; a tall letter cannot stretch the band, so lines
    close together stay apart.
    """
    spans = []
    for letter in letters:
        along, across = _along_across(letter.ink, angle)
        spans.append((float(across.min()), float(across.max()) + 1, float(along.mean())))
    lines = []                                   # [members, tops, bottoms]
    for i in sorted(range(len(letters)), key=lambda k: spans[k][0] + spans[k][1]):
        top, bottom, _ = spans[i]
        for line in lines:
            band_top, band_bottom = np.median(line[1]), np.median(line[2])
            overlap = min(bottom, band_bottom) - max(top, band_top)
            if overlap > 0.5 * min(bottom - top, band_bottom - band_top):
                line[0].append(i)
                line[1].append(top)
                line[2].append(bottom)
                break
        else:
            lines.append([[i], [top], [bottom]])
    lines.sort(key=lambda line: np.median(line[1]))
    return [[letters[i] for i in sorted(line[0], key=lambda k: spans[k][2])] for line in lines]


def _ink_colour(colour, ink, weak):
    """How the ink absorbs light in each channel: 1 - ink colour / paper colour, both
    medians, the paper from the unlinked pixels of the ink's box and a margin around it."""
    left, top, right, bottom = ink.box
    pad = max(2, (right - left + bottom - top) // 8)
    h, w = weak.shape
    region = (slice(max(top - pad, 0), min(bottom + pad, h)),
              slice(max(left - pad, 0), min(right + pad, w)))
    paper_pixels = colour[region][~weak[region]]
    if len(paper_pixels) == 0:
        return None
    paper = np.maximum(np.median(paper_pixels, axis=0), 1.0)
    return 1.0 - np.median(colour[ink.ys, ink.xs], axis=0) / paper


def _same_ink(colour, piece, letter, weak):
    """True when a piece is written in the letter's colour: their inks absorb the channels in
    the same proportions (the strength may differ: a faint bit of stroke is still ink)."""
    a = _ink_colour(colour, piece, weak)
    b = _ink_colour(colour, letter.ink, weak)
    if a is None or b is None or len(a) == 1:
        return True
    cosine = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-9)
    return cosine >= SAME_INK


def _attach_pieces(lines, pieces, colour, weak, typical):
    """Give small pieces (the dot of an i, a broken-off bit of stroke) to the letter they sit
    on, or just above or below, when they have that letter's ink; the rest are specks.

    On a speckled page (many pieces far from every letter) a mark above a letter is more
    likely a speck than a dot, so there only pieces inside a letter's box join it.
    """
    letters = [letter for line in lines for letter in line]
    if not letters or not pieces:
        return
    boxes = np.array([x.ink_box for x in letters], dtype=float)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centres = np.array([[(p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2] for p in pieces])
    px, py = centres[:, :1], centres[:, 1:]                      # (pieces, 1) against (letters,)
    dx = np.maximum(np.maximum(boxes[:, 0] - px, px - boxes[:, 2]), 0)
    dy = np.maximum(np.maximum(boxes[:, 1] - py, py - boxes[:, 3]), 0)
    near = (dx <= 0.15 * widths + 1) & (dy <= DOT_REACH * heights)
    specks = np.count_nonzero(~near.any(axis=1))
    if specks * typical ** 2 / weak.size > SPECKLED:
        near = (dx == 0) & (dy == 0)
    distance = np.where(near, np.maximum(3 * dx, dy), np.inf)
    for piece, row in zip(pieces, distance):
        if np.isfinite(row).any():
            best = letters[int(np.argmin(row))]
            if _same_ink(colour, piece, best, weak):
                best.ink = _joined([best.ink, piece])


def _words(line, angle, number):
    """Number the words of a line: a gap along the writing starts a new word when it is wider
    than WORD_GAP of the line's letter height and WORD_GAP_RATIO times the line's usual gap
    between letters (writing with wide letter spacing is still one word). Gives the letters
    their line number and their line's letter size."""
    size = float(np.median([x.ink.size for x in line]))
    height = float(np.median([x.ink_box[3] - x.ink_box[1] for x in line]))
    extents = [_along_across(x.ink, angle)[0] for x in line]
    ends = np.maximum.accumulate([float(e.max()) + 1 for e in extents])
    gaps = np.array([float(e.min()) for e in extents[1:]]) - ends[:-1]
    narrow = gaps[gaps <= WORD_GAP * height]
    usual = float(np.median(narrow)) if len(narrow) else 0.0
    limit = max(WORD_GAP * height, WORD_GAP_RATIO * usual)
    words = np.concatenate([[0], np.cumsum(gaps > limit)])
    for letter, word in zip(line, words):
        letter.line, letter.word, letter.line_size = number, int(word), size   # one pen a line
    return line


def _join_broken(line, height, angle):
    """Join neighbours on a line that are the pieces of one letter whose stroke broke (a
    faint pencil line, a gap in the pen's ink): side by side, with their extents along the
    writing overlapping or nearly so (the gap under BROKEN_GAP of the narrower piece), their
    ink within BROKEN_REACH pen widths of each other, and together no wider than
    BROKEN_WIDTH of the line's letter height. Two letters stand further apart or make a
    wider pair."""
    joined = []
    for letter in line:
        if joined and _pieces_of_one(joined[-1], letter, height, angle):
            joined[-1] = Letter(_joined([joined[-1].ink, letter.ink]))
        else:
            joined.append(letter)
    return joined


def _pieces_of_one(a, b, height, angle):
    """True when neighbours ``a`` and ``b`` look like the pieces of one letter (see
    ``_join_broken``)."""
    (a_start, a_end), (b_start, b_end) = (_extent_along(x.ink, angle) for x in (a, b))
    overlap = min(a_end, b_end) - max(a_start, b_start)
    narrower = min(a_end - a_start, b_end - b_start)
    together = max(a_end, b_end) - min(a_start, b_start)
    if overlap < -BROKEN_GAP * narrower or together > BROKEN_WIDTH * height:
        return False
    both = _joined([a.ink, b.ink])
    pen = _stroke_width(both.mask(both.box))
    gap = cKDTree(np.column_stack([a.ink.ys, a.ink.xs])).query(
        np.column_stack([b.ink.ys, b.ink.xs]), distance_upper_bound=BROKEN_REACH * pen + 1)[0]
    return bool(np.min(gap) <= BROKEN_REACH * pen)


def _extent_along(ink, angle):
    along = _along_across(ink, angle)[0]
    return float(along.min()), float(along.max()) + 1


def _split_touching(letter, typical_height, wider_than=SPLIT_WIDTH):
    """Split a blob much wider than tall (``wider_than`` times its height and the writing's
    usual letter height) where two letters touch: in the middle of the longest stretch of
    columns, in the blob's middle half, that hold about one stroke of ink. Like the seed's
    finder, this can also cut a very wide m or w."""
    left, top, right, bottom = letter.ink_box
    width, height = right - left, bottom - top
    if width < wider_than * max(height, typical_height):
        return [letter]
    mask = letter.ink.mask(letter.ink_box)
    column_ink = mask.sum(axis=0)
    stroke = _stroke_width(mask)
    lo, hi = int(width * 0.25), int(width * 0.75)
    thin = column_ink[lo:hi] <= 1.5 * stroke
    _, run_starts, run_ends = _runs(thin[None, :])
    if len(run_starts) == 0:
        return [letter]
    longest = int(np.argmax(run_ends - run_starts))        # cut in the middle of the
    cut = lo + (run_starts[longest] + run_ends[longest]) // 2   # longest thin stretch
    if not 0 < cut < width:            # a blob a few pixels wide: no cut that makes it smaller
        return [letter]
    parts = []
    for keep in (letter.ink.xs < left + cut, letter.ink.xs >= left + cut):
        if keep.any():
            parts.append(Letter(Ink(letter.ink.ys[keep], letter.ink.xs[keep])))
    return [q for p in parts for q in _split_touching(p, typical_height, wider_than)]


def _looks_like_writing(letter, typical):
    """Drop what is not pen writing: a tiny mark, or a solid smear (a shadow, a stain) whose
    "stroke" is as wide as the smear itself."""
    size = letter.ink.size
    if size < 0.3 * typical:
        return False
    return _stroke_width(letter.ink.mask(letter.ink_box)) < SMEAR * size


# ---------------------------------------------------------------------------------------------
# 5. EMNIST-like preparation


def prepare_letter(gray, box, mask=None, pen=None):
    """One letter as EMNIST shows it: uint8 (28, 28), upright, ink bright on black.

    ``gray`` is the photo's grey image and ``box`` a frame from ``find_letters`` (any box
    that holds the letter works: the frame is rebuilt around the ink). ``mask`` (the box's
    size) marks the letter's own ink, so parts of neighbouring letters inside the frame are
    left out; without it every clearly dark pixel in the box counts. ``pen`` is the stroke
    width, in photo pixels, that the letter gets before shrinking (see ``pen_width``); by
    default it is set from this letter's own size.
    """
    return _prepare_gray_letter(as_gray(gray), box, mask, pen)


def _prepare_gray_letter(gray, box, mask, pen):
    """``prepare_letter`` on a grey image already made by ``as_gray``."""
    left, top, right, bottom = (int(v) for v in box)
    if right <= left or bottom <= top:
        raise DataError(f"prepare_letter: empty box {box}")
    crop = _crop_padded(gray, (left, top, right, bottom))
    paper = float(np.percentile(crop, 75))             # most of a frame is paper
    darkness = np.clip(1.0 - crop / max(paper, 1.0), 0.0, 1.0)
    own_ink = darkness > WEAK_DARKNESS if mask is None else np.asarray(mask, dtype=bool)
    if own_ink.shape != crop.shape:
        raise DataError(f"prepare_letter: mask shape {own_ink.shape} does not fit box {box}")
    if not own_ink.any():
        return np.zeros((28, 28), dtype=np.uint8)
    # Ink intensity: the darkness as a share of the stroke's core, on the letter's own ink
    # and the pixel around it, so the soft edges of the strokes stay as soft as the photo
    # shows them (EMNIST's strokes fade out over a pixel or two; a faint pencil line keeps
    # its width).
    core = float(np.percentile(darkness[own_ink], 90))
    ink = np.where(_grow(own_ink, 1), np.clip(darkness / max(core, 1e-3), 0.0, 1.0), 0.0)
    # EMNIST: crop to the ink (all of it, soft edges included), centre in a square keeping
    # the aspect ratio, add the border. The data's letters were cropped at a fifth of their
    # ink and blurred after framing; a photo's harder strokes with EMNIST's 2/24 border came
    # out 1.2 pixels longer than theirs, with 3/24 as long (on the tuning letters).
    ink_box = _mask_box(ink > SOFT_EDGE)
    if ink_box is None:               # the marked "ink" is no darker than the frame's paper
        return np.zeros((28, 28), dtype=np.uint8)
    frame = square_box(ink_box, PREPARED_BORDER)
    ink = _crop_padded(ink, frame, fill=0.0)
    # Work at 4x28 pixels whatever the photo's resolution, so the stroke width can be set
    # in quarter pixels of the result.
    zoom = WORK_SIDE / (frame[2] - frame[0])
    work = Image.fromarray(np.round(ink * 255).astype(np.uint8))
    work = np.asarray(work.resize((WORK_SIDE, WORK_SIDE), Image.BICUBIC), dtype=np.float32)
    # A photo's pen is thin next to NIST's: widen the strokes (never thin them).
    if pen is None:
        own_box = _mask_box(own_ink)
        pen = pen_width(max(own_box[2] - own_box[0], own_box[3] - own_box[1]))
    radius = int(round((pen - _stroke_width(own_ink)) * zoom / 2))
    if radius > 0:
        work = _grey_dilate(work, radius)
    small = Image.fromarray(np.round(work).astype(np.uint8)).resize((28, 28), Image.BICUBIC)
    letter = np.asarray(small, dtype=np.float32)
    if letter.max() > 0:
        letter = letter * (255.0 / letter.max())       # EMNIST scales each image to 0..255
    return np.round(letter).astype(np.uint8)


def pen_width(letter_size, stroke=EMNIST_STROKE):
    """Stroke width in photo pixels for writing whose letters are ``letter_size`` pixels.

    Letters span 24 of their 28 pixels and get strokes ``stroke`` pixels wide there. On
    NIST's forms one writer used one pen, so a small letter was scaled up more and came out
    bolder; ``read_letters`` therefore gives every letter of a line the same pen, set from
    the line's typical letter size (an undotted i stays a short, bold stroke, not an l).
    """
    return stroke * letter_size / 24.0


def _crop_padded(array, box, fill=None):
    """array[top:bottom, left:right], padding outside the image with ``fill`` (default: the
    median of what is inside, i.e. more paper)."""
    left, top, right, bottom = box
    h, w = array.shape
    pad = [(max(0, -top), max(0, bottom - h)), (max(0, -left), max(0, right - w))]
    inner = array[max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
    if fill is None:
        fill = float(np.median(inner)) if inner.size else float(np.median(array))
    if inner.size == 0:
        return np.full((bottom - top, right - left), fill, dtype=array.dtype)
    return np.pad(inner, pad, mode="constant", constant_values=fill)


def _grow(mask, radius):
    return ndimage.binary_dilation(mask, np.ones((2 * radius + 1,) * 2, dtype=bool))


def _grey_dilate(a, radius):
    """Maximum over a (2r+1)^2 square; outside the frame is paper (0)."""
    if radius <= 0:
        return a
    return ndimage.grey_dilation(a, size=2 * radius + 1, mode="constant", cval=0.0)


# ---------------------------------------------------------------------------------------------
# 6. Reading and drawing


def letter_images(gray, letters, stroke=EMNIST_STROKE):
    """(N, 28, 28) uint8 EMNIST-like images of found letters."""
    return _gray_letter_images(as_gray(gray), letters, stroke)


def _gray_letter_images(gray, letters, stroke):
    """``letter_images`` of a grey image already made by ``as_gray``."""
    images = [_prepare_gray_letter(gray, x.box, x.ink.mask(x.box),
                                   pen_width(x.line_size, stroke)) for x in letters]
    return np.stack(images) if images else np.zeros((0, 28, 28), dtype=np.uint8)


def read_letters(classifier, source, top=3, stroke=EMNIST_STROKE, save_to=None):
    """Find, prepare and classify the letters on a photo (a path or a binary file object).

    Returns, in reading order (lines top to bottom, letters left to right), per letter::

        {"box": (l, t, r, b), "ink_box": (l, t, r, b), "line": 0, "word": 0,
         "letter": "a", "top3": [(letter, probability), ...]}

    ``box`` is the square EMNIST frame the letter was prepared from, ``ink_box`` the tight
    box around its ink; ``line`` counts lines from the top and ``word`` the words within the
    line. ``classifier`` is a ``checkpoint.Classifier`` (its recorded preprocessing is
    applied); ``stroke`` is the pen width of the 28x28 letters.

    With ``save_to`` (a folder), each letter is also written there as a picture (see
    ``letter_crop``), in a sub-folder named by the letter read:
    ``save_to/<letter>/<photo name>-<number>.png``, numbered from 1 in reading order; a name
    already taken gets a suffix (``-2``, ``-3``, ...), so no file is ever replaced. Each
    result then also holds the picture's path as "saved".
    """
    return read_page(classifier, source, top, stroke, save_to)["letters"]


def read_page(classifier, source, top=3, stroke=EMNIST_STROKE, save_to=None):
    """A photo read as ``microconv predict`` and ``microconv serve`` report it::

        {"width": 640, "height": 480, "text": "ab c\\nd", "lines": ["ab c", "d"],
         "letters": [...]}

    ``letters`` are ``read_letters``'s results (the arguments are its own), ``text`` is
    ``text_of`` them and ``lines`` the text split at its newlines (none when no letter was
    found). ``width`` and ``height`` are those of the picture as read, which the boxes refer
    to: upright, and scaled down when larger than ``pictures.MAX_SIDE``.
    """
    gray, colour = read_photo(source)
    results, letters = _classified(classifier, gray, colour, top, stroke)
    if save_to is not None:
        stem = "letter" if hasattr(source, "read") else Path(source).stem
        for number, result in enumerate(results, 1):
            crop = letter_crop(colour, letters, number - 1)
            result["saved"] = _save_new_png(crop, Path(save_to) / result["letter"],
                                            f"{stem}-{number}")
    text = text_of(results)
    return {"width": gray.shape[1], "height": gray.shape[0], "text": text,
            "lines": text.split("\n") if results else [], "letters": results}


def classify_letters(classifier, gray, top=3, stroke=EMNIST_STROKE, colour=None):
    """``read_letters`` on a grey image from ``read_image`` (``colour``, when given, is the
    same picture in colour, as ``read_photo`` gives it); boxes are in its pixels."""
    return _classified(classifier, gray, colour, top, stroke)[0]


def _classified(classifier, gray, colour, top, stroke):
    """(results, letters): the letters found and what the network reads in each."""
    letters, images = found_letters(gray, colour, stroke)
    return read_found(classifier, letters, images, top), letters


def found_letters(image, colour=None, stroke=EMNIST_STROKE):
    """(letters, their prepared 28x28 images): the part of reading a photo that does not
    depend on the network, so several networks can read one photo found once."""
    gray, colour = _gray_and_colour(image, colour)
    letters = _letter_details(gray, colour)
    return letters, _gray_letter_images(gray, letters, stroke)


def read_found(classifier, letters, images, top=3):
    """The results of ``read_letters`` for letters found and prepared by ``found_letters``."""
    if not letters:
        return []
    log_probs = read_prepared(classifier, images)
    results = []
    for letter, scores in zip(letters, log_probs):
        ranked = top_letters(scores, top)
        results.append({"box": tuple(int(v) for v in letter.box),
                        "ink_box": tuple(int(v) for v in letter.ink_box),
                        "line": letter.line, "word": letter.word,
                        "letter": ranked[0][0], "top3": ranked})
    return results


def read_prepared(classifier, images, shifts=READ_SHIFTS):
    """Log-probabilities (N, classes) of prepared 28x28 letters: the network's probabilities
    averaged over the letter moved by each of ``shifts`` ((rows, columns) in pixels), so that
    a letter framed a pixel off its data-set position is read as well as one framed exactly.
    ``classifier`` is anything with ``predict`` (a ``checkpoint.Classifier``)."""
    images = np.asarray(images)
    if len(images) == 0 or len(shifts) == 1:
        return classifier.predict(images)
    return mean_of_views(classifier.predict(shifted_views(images, shifts)), len(shifts))


def shifted_views(images, shifts=READ_SHIFTS):
    """(len(shifts) * N, H, W): the N images moved by each shift in turn, as
    ``read_prepared`` reads them."""
    return np.concatenate([_shifted(np.asarray(images), dy, dx) for dy, dx in shifts])


def mean_of_views(log_probs, view_count):
    """Log-probabilities (N, classes) from those of ``shifted_views``' ``view_count`` copies
    of N letters: the log of each letter's mean probability over its views."""
    probs = np.exp(log_probs).reshape(view_count, len(log_probs) // view_count, -1)
    return np.log(np.maximum(probs.mean(axis=0), 1e-30))


def _shifted(images, dy, dx):
    """(N, H, W) images moved down by dy and right by dx pixels; what enters is black."""
    moved = np.zeros_like(images)
    h, w = images.shape[1:]
    moved[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return moved


def top_letters(log_probs, top=3):
    """The ``top`` most likely letters of one row of log-probabilities (or of the scores
    before the log-softmax: the same softmax), as (letter, probability) pairs, best first."""
    probs = np.exp(log_probs - log_probs.max())
    probs = probs / probs.sum()
    best = np.argsort(-probs)[:top]
    return [(LETTERS[int(i)], float(probs[i])) for i in best]


def joined_letter(letters):
    """The ink of several found letters as one letter (a picture known to hold one letter,
    which the reader cut in two or found in pieces)."""
    ink = _joined([x.ink for x in letters])
    return Letter(ink, line_size=float(ink.size))


def one_letter(gray, name):
    """The 28x28 letter of a picture known to hold one letter (the drawing pad, a picture in a
    letter folder), prepared as ``predict`` prepares letters; ink the reader takes for several
    letters (a k drawn with a gap) is joined into one. A DataError naming ``name`` when the
    picture holds no letter."""
    gray, colour = _gray_and_colour(gray, None)
    letters = _letter_details(gray, colour)
    if not letters:
        raise DataError(f"{name}: no letter found (no ink clearly darker than the paper, or "
                        "only ink cut by the picture's edge)")
    if len(letters) > 1:
        letters = [joined_letter(letters)]
    return _gray_letter_images(gray, letters, EMNIST_STROKE)[0]


def letter_crop(colour, letters, index):
    """Letter ``index`` of ``letters`` as a colour picture (uint8, H x W x 3): its EMNIST
    frame with a margin of CROP_MARGIN of its side, as the photo shows it, except that any
    other letter reaching into the picture is painted over with the paper's colour. Read
    back through ``find_letter_details`` (and so ``predict``), it gives this one letter."""
    letter = letters[index]
    left, top, right, bottom = letter.box
    pad = int(round(CROP_MARGIN * (right - left)))
    h, w = colour.shape[:2]
    box = (max(left - pad, 0), max(top - pad, 0), min(right + pad, w), min(bottom + pad, h))
    crop = np.array(colour[box[1]:box[3], box[0]:box[2]], dtype=np.float32)
    if crop.ndim == 2:
        crop = crop[..., None]
    own = _grow(letter.ink.mask(box), 1)
    others = np.zeros_like(own)
    for other in letters:
        if other is not letter:
            others |= other.ink.mask(box)
    others = _grow(others, 2) & ~own
    paper_pixels = crop[~own & ~others]
    if others.any() and len(paper_pixels):
        crop[others] = np.median(paper_pixels, axis=0)
    if crop.shape[2] == 1:                          # a grey photo
        crop = np.repeat(crop, 3, axis=2)
    return np.clip(np.round(crop), 0, 255).astype(np.uint8)


def _save_new_png(pixels, folder, name):
    """Write pixels as folder/name.png (or name-2.png, ... when taken), atomically; the path."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    picture = Image.fromarray(pixels)
    for attempt in range(1, 10_000):
        target = folder / (f"{name}.png" if attempt == 1 else f"{name}-{attempt}.png")
        if target.exists():
            continue
        try:
            save_picture(picture, target, replace=False)
            return str(target)
        except FileExistsError:       # taken since we looked: try the next name
            continue
    raise DataError(f"cannot save letter {name}: every name in {folder} is taken")


def text_of(results):
    """The text read: letters of a word together, a space between words, a newline between
    lines. ``results`` are ``read_letters``'s (any dicts with "letter", "line", "word")."""
    text, previous = "", None
    for result in results:
        if previous is not None and result["line"] != previous["line"]:
            text += "\n"
        elif previous is not None and result["word"] != previous["word"]:
            text += " "
        text += result["letter"]
        previous = result
    return text


def _font(size):
    try:
        return ImageFont.load_default(size=size)       # Pillow >= 10.1: scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def annotate(path, results, out_path):
    """Draw each letter's box and the letter read below it; write the picture to out_path
    (atomically, in the format its extension names)."""
    image = open_picture(path, "RGB")
    draw = ImageDraw.Draw(image)
    sides = [r["box"][2] - r["box"][0] for r in results]
    size = int(np.median(sides)) if sides else 0
    font = _font(max(12, int(size * 0.6)))              # one size for the whole picture
    for result in results:
        left, top, right, bottom = result["box"]
        draw.rectangle((left, top, right - 1, bottom - 1), outline=(0, 170, 0),
                       width=max(2, size // 40))
        draw.text(((left + right) / 2, bottom + size * 0.1), result["letter"], fill=(200, 0, 0),
                  font=font, anchor="mt")
    save_picture(image, out_path)
    return out_path
