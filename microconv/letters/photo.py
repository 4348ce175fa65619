"""Read handwritten letters from a photo: find each letter, prepare it like EMNIST, classify.

The steps, each a small function:

1. ``read_image``: the photo as grey values (float32, 0 = black), scaled down when huge.
2. ``ink_maps``: adaptive thresholding. The paper's brightness is estimated locally (a box
   mean that ignores dark pixels), so shading and vignetting move the threshold with them.
   A pixel is ink when it is clearly darker than its own background; "clearly" is relative
   to the background and to the paper's noise.
3. ``connected_components``: 8-connected ink blobs, labelled run by run in NumPy.
4. ``find_letters``: keep blobs that contain strongly dark ink, drop specks and blobs cut
   by the image border, attach dots and fragments to the letter below or above them, split
   blobs where two letters touch by a thin stroke, and sort in reading order.
5. ``prepare_letter``: the EMNIST recipe (Cohen et al. 2017): crop to the ink, centre in a
   square keeping the aspect ratio, add a border of 2/24 of the side, bring the strokes to
   EMNIST's thickness, resize to 28x28, ink bright on black, upright.
6. ``read_letters`` and ``annotate``: classify each letter, draw boxes and answers.
"""

from __future__ import annotations

import os
import string
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from microconv.errors import DataError

LETTERS = string.ascii_lowercase
CROP_SIDE = 256               # pictures this small are crops: letters may touch their edges
MAX_SIDE = 2048               # larger photos are scaled down while decoding (bounded memory)
MAX_PIXELS = 150_000_000      # pixel values (pixels x channels, 1 byte each) decoded at
                              # full size by formats that cannot decode smaller (PNG): a
                              # 12000 x 12000 grey scan fits, a 12000 x 12000 RGB one does not
WEAK_DARKNESS = 0.12          # ink: at least 12 % darker than the local paper ...
STRONG_DARKNESS = 0.25        # ... and every letter holds some pixels 25 % darker
NOISE_SIGMAS = 5.0            # ... and darker than the paper's own texture by 5 sigma
WORK_SIDE = 112               # letters are thickened at 4x the final 28x28 resolution
EMNIST_BORDER = 2 / 24        # border around the square frame, as a fraction of its side
EMNIST_STROKE = 1.5           # pen width in pixels of the 28x28 result (letters span 24 of
                              # them); the one tuned number, see docs/seed.md


# ---------------------------------------------------------------------------------------------
# 1. Reading the photo


def _open_bounded(source, mode):
    """Open an image in ``mode``, upright (EXIF orientation) and at most MAX_SIDE.

    ``source`` is a path or a binary file object (an upload held in memory)."""
    path = _name(source)
    if not hasattr(source, "read") and not os.path.isfile(path):
        raise DataError(f"image {path} does not exist")
    try:
        with warnings.catch_warnings():
            # Pillow warns about pictures over 89 M pixels; MAX_PIXELS below is our own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
        # JPEG can decode straight to a reduced size, so a huge photo never sits in memory
        # at full resolution.
        image.draft(mode, (MAX_SIDE, MAX_SIDE))
        if image.width * image.height * len(image.getbands()) > MAX_PIXELS:
            raise DataError(f"image {path} is too large to read ({image.width} x "
                            f"{image.height} pixels, {image.mode}); scale it down first")
        image.thumbnail((MAX_SIDE, MAX_SIDE))     # in place, before any copy at full size
        image = ImageOps.exif_transpose(image)
        return image.convert(mode)
    except UnidentifiedImageError:
        # Pillow's own message names the file object, which means nothing to a user
        raise DataError(f"cannot read image {path}: not a picture format Pillow knows") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: damaged or unsupported ({exc})") from None


def read_image(source):
    """Grey values (H, W) float32 in 0..255 of an image (a path or a binary file object), at
    most MAX_SIDE on each side."""
    gray = np.asarray(_open_bounded(source, "L"), dtype=np.float32)
    if gray.size == 0 or gray.max() - gray.min() < 1:
        raise DataError(f"image {_name(source)} is uniform: there is nothing to read")
    return gray


def _name(source):
    """How messages name an image: its path, or "in memory" for a file object."""
    return "in memory" if hasattr(source, "read") else os.fspath(source)


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


def box_mean(values, weights, radius):
    """Weighted mean of ``values`` over a (2r+1)^2 window, and the weight in each window.

    Pixels with weight 0 (ink) do not count, and the window shrinks at the borders, so the
    paper's brightness near an edge is estimated from the paper that is really there. Wide
    windows are summed on blocks of pixels: the paper's brightness changes slowly, and a
    photo's estimate then costs milliseconds.
    """
    block = max(1, radius // 8)
    h, w = values.shape
    weighted = _block_sum(values * weights, block)
    weight = _block_sum(weights, block)
    r = max(1, round(radius / block))
    total = _window_sum(_window_sum(weighted, r, 0), r, 1)
    count = _window_sum(_window_sum(weight, r, 0), r, 1)
    mean = total / np.maximum(count, 1e-9)
    if block > 1:                 # back to full size: each block's value for its pixels
        mean = np.repeat(np.repeat(mean, block, axis=0), block, axis=1)[:h, :w]
        count = np.repeat(np.repeat(count, block, axis=0), block, axis=1)[:h, :w]
    return mean.astype(np.float32), count


def _block_sum(a, block):
    if block == 1:
        return np.asarray(a, dtype=np.float64)
    h, w = a.shape
    padded = np.zeros((-(-h // block) * block, -(-w // block) * block))
    padded[:h, :w] = a
    return padded.reshape(padded.shape[0] // block, block, -1, block).sum(axis=(1, 3))


def _window_sum(a, radius, axis):
    """Sum over [i - r, i + r] along one axis (clipped at the ends), from a running sum."""
    n = a.shape[axis]
    running = np.cumsum(a, axis=axis, dtype=np.float64)
    running = np.concatenate([np.zeros_like(running.take([0], axis=axis)), running], axis=axis)
    hi = np.minimum(np.arange(n) + radius + 1, n)
    lo = np.maximum(np.arange(n) - radius, 0)
    return running.take(hi, axis=axis) - running.take(lo, axis=axis)


def ink_maps(gray):
    """(weak, strong, darkness): boolean ink maps and the relative darkness 1 - gray/paper.

    The paper's brightness is a local mean over a window of about a tenth of the shorter
    side (much wider than a pen stroke, much narrower than the shading across a photo) that
    leaves out the ink. Where ink fills most of that window, a window four times as wide
    gives the estimate, so a big dark smear is seen as dark rather than as new paper.
    """
    radius = max(8, min(gray.shape) // 20)
    everything = np.ones_like(gray)
    paper, _ = box_mean(gray, everything, 4 * radius)
    for _ in range(2):        # re-estimate without the ink, which would pull the mean down
        not_ink = (gray > paper * (1 - WEAK_DARKNESS)).astype(np.float32)
        near, near_count = box_mean(gray, not_ink, radius)
        wide, wide_count = box_mean(gray, not_ink, 4 * radius)
        enough = near_count > 0.25 * (2 * radius + 1) ** 2
        paper = np.where(enough, near, np.where(wide_count > 0, wide, paper))
    darkness = 1.0 - gray / np.maximum(paper, 1.0)
    paper_noise = 1.4826 * np.median(np.abs(darkness - np.median(darkness)))   # robust sigma
    weak_limit = max(WEAK_DARKNESS, NOISE_SIGMAS * paper_noise)
    weak = darkness > weak_limit
    strong = darkness > max(STRONG_DARKNESS, 2 * weak_limit)
    return weak, strong, darkness


# ---------------------------------------------------------------------------------------------
# 3. Connected components


@dataclass
class Blob:
    """One 8-connected ink component: its horizontal runs and bounding box."""
    rows: np.ndarray            # run row
    starts: np.ndarray          # run first column
    ends: np.ndarray            # run end column (exclusive)
    strong: int                 # strongly dark pixels inside

    @property
    def box(self):
        return (int(self.starts.min()), int(self.rows.min()),
                int(self.ends.max()), int(self.rows.max()) + 1)

    @property
    def area(self):
        return int((self.ends - self.starts).sum())


def connected_components(mask, strong=None):
    """8-connected components of a boolean image as Blobs (horizontal runs + union-find).

    Runs of ink in each row are found with one ``np.diff``; a run joins the runs of the next
    row that touch it (diagonals included), found with ``searchsorted``. Only the runs go
    through the Python union-find loop, never the pixels.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    run_rows, starts, ends = _runs(mask)
    if len(starts) == 0:
        return []
    wide = w + 2                                   # keys row * wide + col keep (row, col) order
    end_keys = run_rows * wide + ends
    start_keys = run_rows * wide + starts
    first = np.searchsorted(end_keys, (run_rows + 1) * wide + starts, side="left")
    last = np.searchsorted(start_keys, (run_rows + 1) * wide + ends, side="right")
    parent = list(range(len(starts)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in np.nonzero(last > first)[0]:
        for b in range(first[a], last[a]):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    ids = np.array([root(i) for i in range(len(starts))])
    if strong is not None:
        strong_sums = np.zeros((h, w + 1), dtype=np.int64)
        strong_sums[:, 1:] = np.cumsum(strong, axis=1)
        run_strong = strong_sums[run_rows, ends] - strong_sums[run_rows, starts]
    else:
        run_strong = ends - starts
    blobs = []
    order = np.argsort(ids, kind="stable")
    split_at = np.nonzero(np.diff(ids[order]))[0] + 1
    for group in np.split(order, split_at):
        blobs.append(Blob(run_rows[group], starts[group], ends[group],
                          int(run_strong[group].sum())))
    return blobs


def _runs(mask):
    """(rows, starts, ends) of the runs of True in each row of a 2-D mask, in reading order;
    ``ends`` are exclusive."""
    edges = np.diff(mask.astype(np.int8), axis=1, prepend=0, append=0)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    return rows, starts, ends


def blob_mask(blobs, box):
    """Boolean mask of the given blobs' pixels inside box (left, top, right, bottom)."""
    left, top, right, bottom = box
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for blob in blobs:
        for row, start, end in zip(blob.rows, blob.starts, blob.ends):
            r = row - top
            if 0 <= r < mask.shape[0]:
                mask[r, max(start - left, 0):max(min(end, right) - left, 0)] = True
    return mask


# ---------------------------------------------------------------------------------------------
# 4. Finding letters


@dataclass
class Letter:
    """A letter found on the photo: its blobs, tight ink box, EMNIST-style square box, and
    the typical letter size of its line (which sets the pen width it is prepared with)."""
    blobs: list
    ink_box: tuple
    box: tuple = ()
    line_size: float = 0.0


def _mask_box(mask):
    """(left, top, right, bottom) of a mask's True pixels; None when it has none."""
    rows = np.nonzero(mask.any(axis=1))[0]
    if len(rows) == 0:
        return None
    cols = np.nonzero(mask.any(axis=0))[0]
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _shift_box(box, dx, dy):
    left, top, right, bottom = box
    return (int(left) + dx, int(top) + dy, int(right) + dx, int(bottom) + dy)


def _union_box(boxes):
    boxes = np.array(boxes)
    return (int(boxes[:, 0].min()), int(boxes[:, 1].min()),
            int(boxes[:, 2].max()), int(boxes[:, 3].max()))


def _stroke_width(mask):
    """Typical pen width in pixels: the median length of horizontal and vertical ink runs,
    whichever is shorter (a run along a stroke is long, across it short)."""
    widths = []
    for m in (mask, mask.T):
        _, starts, ends = _runs(m)
        if len(starts):
            widths.append(float(np.median(ends - starts)))
    return min(widths) if widths else 1.0


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


def find_letter_details(image):
    """Letters (blobs and boxes) on an image, in reading order. See ``find_letters``."""
    gray = as_gray(image)
    if max(gray.shape) <= CROP_SIDE:
        # A small picture is a crop of a letter or a word, which may touch its edges: give it
        # a margin of paper so nothing is mistaken for the cut-off edge of a photo.
        margin = max(gray.shape) // 4
        padded = np.pad(gray, margin, mode="constant", constant_values=np.median(gray))
        return [_shifted(x, -margin) for x in _find_in(padded)]
    return _find_in(gray)


def _shifted(letter, offset):
    blobs = [Blob(b.rows + offset, b.starts + offset, b.ends + offset, b.strong)
             for b in letter.blobs]
    return Letter(blobs, _shift_box(letter.ink_box, offset, offset),
                  _shift_box(letter.box, offset, offset), letter.line_size)


def _find_in(gray):
    h, w = gray.shape
    weak, strong, _ = ink_maps(gray)
    blobs = [b for b in connected_components(weak, strong) if b.strong > 0]
    # Blobs cut by the photo's border are shading or partial objects, never a readable letter.
    blobs = [b for b in blobs if not _touches_border(b.box, w, h)]
    if not blobs:
        return []
    sizes = np.array([max(b.box[2] - b.box[0], b.box[3] - b.box[1]) for b in blobs])
    floor = max(6, min(h, w) // 100)                  # anything smaller is a speck
    big = sizes >= floor
    if not big.any():
        return []
    typical = float(np.median(sizes[big]))            # the writing's letter size
    letters = [Letter([b], b.box) for b, s in zip(blobs, sizes) if s >= 0.3 * typical]
    pieces = [b for b, s in zip(blobs, sizes) if floor / 2 <= s < 0.3 * typical]
    letters = _merge_overlapping(letters)
    _attach_pieces(letters, pieces, typical)
    height = float(np.median([x.ink_box[3] - x.ink_box[1] for x in letters]))
    letters = [part for letter in letters for part in _split_touching(letter, height)]
    letters = [x for x in letters if _looks_like_writing(x, typical)]
    for letter in letters:
        letter.box = square_box(letter.ink_box)
    return _reading_order(letters)


def find_letters(image):
    """Boxes (left, top, right, bottom) of the handwritten letters on an image.

    ``image`` is a PIL image or an array (grey or RGB, paper bright and ink dark). Boxes are
    EMNIST frames (square, with a 2/24 border; they may reach past the image's edge), in
    reading order: lines top to bottom, letters left to right. An image without writing
    gives an empty list.
    """
    return [letter.box for letter in find_letter_details(image)]


def _touches_border(box, w, h):
    left, top, right, bottom = box
    return left <= 0 or top <= 0 or right >= w or bottom >= h


def _merge_overlapping(letters):
    """Blobs stacked above each other (broken strokes, an i's dot grown large) are one letter:
    merge when their columns overlap by more than half of the narrower one."""
    letters = sorted(letters, key=lambda x: x.ink_box[0])
    merged = []
    for letter in letters:
        for other in merged:
            a, b = letter.ink_box, other.ink_box
            overlap = min(a[2], b[2]) - max(a[0], b[0])
            narrower = min(a[2] - a[0], b[2] - b[0])
            close = max(a[1], b[1]) - min(a[3], b[3]) < 0.5 * max(a[3] - a[1], b[3] - b[1])
            if overlap > 0.5 * narrower and close:
                other.blobs += letter.blobs
                other.ink_box = _union_box([a, b])
                break
        else:
            merged.append(letter)
    return merged


def _attach_pieces(letters, pieces, typical):
    """Give each small piece (a dot, a cross stroke) to the nearest letter in its column
    range; pieces far from every letter are specks and are dropped."""
    for piece in pieces:
        px = (piece.box[0] + piece.box[2]) / 2
        py = (piece.box[1] + piece.box[3]) / 2
        best, best_distance = None, 0.75 * typical
        for letter in letters:
            left, top, right, bottom = letter.ink_box
            dx = max(left - px, 0, px - right)
            dy = max(top - py, 0, py - bottom)
            distance = max(dx * 3, dy)                # a dot sits above, not beside
            if distance < best_distance:
                best, best_distance = letter, distance
        if best is not None:
            best.blobs.append(piece)
            best.ink_box = _union_box([best.ink_box, piece.box])


def _split_touching(letter, typical_height):
    """Split a blob much wider than tall (than the writing's usual letter height, too) where
    two letters touch: in the middle of the longest stretch of columns, in the blob's middle
    half, that hold about one stroke of ink. Like the seed's finder, this can also cut a
    very wide m or w."""
    left, top, right, bottom = letter.ink_box
    width, height = right - left, bottom - top
    if width < 1.5 * max(height, typical_height):
        return [letter]
    mask = blob_mask(letter.blobs, letter.ink_box)
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
    for a, b in ((0, cut), (cut, width)):
        part_box = _mask_box(mask[:, a:b])
        if part_box is None:
            continue
        box = _shift_box(part_box, left + a, top)
        parts.append(Letter(_clip_blobs(letter.blobs, left + a, left + b), box))
    return [q for p in parts for q in _split_touching(p, typical_height)]


def _clip_blobs(blobs, left, right):
    """The blobs' runs restricted to columns [left, right)."""
    clipped = []
    for blob in blobs:
        starts = np.maximum(blob.starts, left)
        ends = np.minimum(blob.ends, right)
        keep = ends > starts
        if keep.any():
            clipped.append(Blob(blob.rows[keep], starts[keep], ends[keep], blob.strong))
    return clipped


def _looks_like_writing(letter, typical):
    """Drop what is not pen writing: a tiny mark, or a solid smear (a shadow, a stain) whose
    "stroke" is as wide as the smear itself."""
    left, top, right, bottom = letter.ink_box
    size = max(right - left, bottom - top)
    if size < 0.3 * typical:
        return False
    return _stroke_width(blob_mask(letter.blobs, letter.ink_box)) < 0.45 * size


def _reading_order(letters):
    """Group letters into lines by vertical overlap; lines top to bottom, letters left to right.
    Every letter of a line gets the pen width of the line's typical letter size."""
    lines = []
    for letter in sorted(letters, key=lambda x: (x.ink_box[1] + x.ink_box[3]) / 2):
        top, bottom = letter.ink_box[1], letter.ink_box[3]
        for line in lines:
            overlap = min(bottom, line["bottom"]) - max(top, line["top"])
            if overlap > 0.5 * min(bottom - top, line["bottom"] - line["top"]):
                line["letters"].append(letter)
                line["top"], line["bottom"] = min(top, line["top"]), max(bottom, line["bottom"])
                break
        else:
            lines.append({"top": top, "bottom": bottom, "letters": [letter]})
    lines.sort(key=lambda line: line["top"])
    ordered = []
    for line in lines:
        size = np.median([max(x.ink_box[2] - x.ink_box[0], x.ink_box[3] - x.ink_box[1])
                          for x in line["letters"]])
        for letter in sorted(line["letters"], key=lambda x: x.ink_box[0]):
            letter.line_size = float(size)              # one pen per line of writing
            ordered.append(letter)
    return ordered


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
    # Ink intensity: 0 at the ink threshold, 1 in the stroke's core; soft edges stay soft.
    core = float(np.percentile(darkness[own_ink], 90))
    ink = np.clip((darkness - WEAK_DARKNESS) / max(core - WEAK_DARKNESS, 1e-3), 0.0, 1.0)
    ink = np.where(_grow(own_ink, 1), ink, 0.0)
    # EMNIST: crop to the ink, centre in a square keeping the aspect ratio, add the border.
    ink_box = _mask_box(own_ink)
    frame = square_box(ink_box)
    ink = _crop_padded(ink, frame, fill=0.0)
    # Work at 4x28 pixels whatever the photo's resolution, so the stroke width can be set
    # in quarter pixels of the result.
    zoom = WORK_SIDE / (frame[2] - frame[0])
    work = Image.fromarray(np.round(ink * 255).astype(np.uint8))
    work = np.asarray(work.resize((WORK_SIDE, WORK_SIDE), Image.BICUBIC), dtype=np.float32)
    # A photo's pen is thin next to NIST's: widen the strokes (never thin them).
    if pen is None:
        pen = pen_width(max(ink_box[2] - ink_box[0], ink_box[3] - ink_box[1]))
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
    return _grey_dilate(mask.astype(np.float32), radius) > 0


def _grey_dilate(a, radius):
    """Maximum over a (2r+1)^2 square: separable shifts, no SciPy needed."""
    if radius <= 0:
        return a
    for axis in (0, 1):
        out = a.copy()
        for shift in range(1, radius + 1):
            forward = np.roll(a, shift, axis=axis)
            backward = np.roll(a, -shift, axis=axis)
            # np.roll wraps around; the wrapped edge is cleared (the frame's border is paper)
            index = [slice(None)] * 2
            index[axis] = slice(0, shift)
            forward[tuple(index)] = 0
            index[axis] = slice(a.shape[axis] - shift, None)
            backward[tuple(index)] = 0
            out = np.maximum(out, np.maximum(forward, backward))
        a = out
    return a


# ---------------------------------------------------------------------------------------------
# 6. Reading and drawing


def letter_images(gray, letters, stroke=EMNIST_STROKE):
    """(N, 28, 28) uint8 EMNIST-like images of found letters."""
    gray = as_gray(gray)              # once for the photo, not once per letter
    images = [_prepare_gray_letter(gray, x.box, blob_mask(x.blobs, x.box),
                                   pen_width(x.line_size, stroke)) for x in letters]
    return np.stack(images) if images else np.zeros((0, 28, 28), dtype=np.uint8)


def read_letters(classifier, source, top=3, stroke=EMNIST_STROKE):
    """Find, prepare and classify the letters on a photo (a path or a binary file object).

    Returns, in reading order, ``{"box": (l, t, r, b), "letter": "a", "top3": [(letter,
    probability), ...]}`` per letter. ``classifier`` is a ``checkpoint.Classifier`` (its
    recorded preprocessing is applied); ``stroke`` is the pen width of the 28x28 letters.
    """
    return classify_letters(classifier, read_image(source), top, stroke)


def classify_letters(classifier, gray, top=3, stroke=EMNIST_STROKE):
    """``read_letters`` on a grey image from ``read_image``; boxes are in its pixels."""
    letters = find_letter_details(gray)
    if not letters:
        return []
    log_probs = classifier.predict(letter_images(gray, letters, stroke))
    results = []
    for letter, scores in zip(letters, log_probs):
        ranked = top_letters(scores, top)
        results.append({"box": tuple(int(v) for v in letter.box), "letter": ranked[0][0],
                        "top3": ranked})
    return results


def top_letters(log_probs, top=3):
    """The ``top`` most likely letters of one row of log-probabilities (or of the scores
    before the log-softmax: the same softmax), as (letter, probability) pairs, best first."""
    probs = np.exp(log_probs - log_probs.max())
    probs = probs / probs.sum()
    best = np.argsort(-probs)[:top]
    return [(LETTERS[int(i)], float(probs[i])) for i in best]


def _font(size):
    try:
        return ImageFont.load_default(size=size)       # Pillow >= 10.1: scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def annotate(path, results, out_path):
    """Draw each letter's box and the letter read below it; write the picture to out_path."""
    image = _open_bounded(path, "RGB")
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
    try:
        image.save(out_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot write {os.fspath(out_path)}: {exc}") from None
    return out_path
