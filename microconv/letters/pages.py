"""Photos of handwritten pages, composed from single letters, with the truth about each letter.

The photo reader (``photo.py``) is measured on these pages. A page is made from one seed:

1. a layout: lines of words, rows of well-spaced letters, one long line, or lines of
   different sizes; the text is random letters, so no reader can lean on a dictionary;
2. a writing tool: a pen (thin strokes), a pencil (thin, faint, grainy grey) or a marker
   (thick strokes), in some ink colour, on paper of some colour;
3. each letter is a letter of the EMNIST test split (or, without the data, a generated
   one), cropped to its ink, scaled to the line's letter size and drawn with the tool;
4. what a phone camera and a desk add: uneven lighting, a soft shadow, vignetting, a
   rotation by a few degrees, blur, sensor noise, salt-and-pepper or coloured speckles, and
   JPEG compression.

The truth is the text (a newline between lines, a space between words) and each letter's
tight box around its ink in the final picture, in reading order.

The material has two parts that never share a seed nor a letter image: pages with seeds
below ``HELD_OUT_FIRST_SEED`` are for tuning the reader; pages from that seed on are held
out and only ever measured (``benchmarks/photo_accuracy.py``). Each part draws its letters
from its own half of every class of the test split.
"""

from __future__ import annotations

import functools
import io
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.special import expit

from microconv.errors import MicroconvError
from microconv.letters import synth
from microconv.letters.data import load_emnist

LETTERS = string.ascii_lowercase
HELD_OUT_FIRST_SEED = 1000
TUNE_SEEDS = range(0, HELD_OUT_FIRST_SEED)
HELD_OUT_SEEDS = range(HELD_OUT_FIRST_SEED, 2 * HELD_OUT_FIRST_SEED)
PARTS = ("tune", "held-out")
LAYOUTS = ("words", "rows", "one line", "mixed sizes")
TOOLS = ("pen", "pencil", "marker")
NOISES = ("sensor", "salt and pepper", "coloured speckles")
MAX_SIDE = 1800                   # pages are at most this wide or tall before rotation
INKED = 0.3                       # a letter's box holds the pixels it covers this much
GENERATED_PER_CLASS = 24          # letters per class and part when there is no data set

PAPERS = {"white": (238, 236, 230), "cream": (236, 226, 196), "grey": (196, 196, 190),
          "blue": (200, 220, 240), "yellow": (244, 234, 150), "pink": (240, 200, 206),
          "green": (204, 230, 200)}
INKS = {"black": (25, 25, 30), "blue": (25, 45, 150), "red": (170, 25, 30),
        "green": (20, 100, 45), "purple": (90, 30, 120)}
PENCIL = (95, 95, 100)


@dataclass
class Page:
    """A composed photo and its truth.

    ``boxes[i]`` (left, top, right, bottom; right and bottom exclusive) is the tight box of
    the i-th letter of ``text`` with the spaces and newlines left out, and ``lines[i]`` its
    line (0 = top line), and ``sources[i]`` the index in ``letter_pool`` of the image it
    was written from (to compare the reader's preparation with the letter it came from).
    """
    image: Image.Image
    text: str
    boxes: list
    lines: list
    seed: int
    style: dict = field(default_factory=dict)
    sources: list = field(default_factory=list)

    @property
    def letters(self):
        return "".join(self.text.split())


def part_of(seed):
    """"tune" or "held-out": which part of the material a page seed belongs to."""
    return "held-out" if seed >= HELD_OUT_FIRST_SEED else "tune"


# ---------------------------------------------------------------------------------------------
# Letters to write with


def letter_pool(data_dir, part):
    """(images, labels) to write the ``part`` pages with: upright uint8 letters, ink bright.

    With a data folder (``data_dir``): the first half of each class's test letters for
    "tune", the second half for "held-out". With None: generated letters, from a different
    seed for each part. A folder given as a string or a Path is loaded once.
    """
    return _letter_pool(None if data_dir is None else str(Path(data_dir)), part)


@functools.lru_cache(maxsize=4)
def _letter_pool(data_dir, part):
    _check_part(part)
    if data_dir is not None:
        images, labels = load_emnist(data_dir, split="test")
        keep = np.zeros(len(labels), dtype=bool)
        for label in range(len(LETTERS)):
            members = np.nonzero(labels == label)[0]
            half = len(members) // 2
            keep[members[:half] if part == "tune" else members[half:]] = True
        return images[keep], labels[keep]
    return synth.generate(GENERATED_PER_CLASS * len(LETTERS), seed=7001 + PARTS.index(part))


# ---------------------------------------------------------------------------------------------
# The page


def make_page(seed, data_dir=None):
    """The page photo of one seed; letters come from ``letter_pool(data_dir, part_of(seed))``.

    ``data_dir`` is a folder with the EMNIST letters files (its test split is used), or None
    for generated letters.
    """
    rng = np.random.default_rng(seed)
    images, labels = letter_pool(data_dir, part_of(seed))
    style = _choose_style(seed, rng)
    words_per_line = _layout(style, rng)
    by_class = [np.nonzero(labels == c)[0] for c in range(len(LETTERS))]
    ink_layer, owner, text, sources = _write(words_per_line, style, images, by_class, rng)
    ink_layer, owner = _fit(ink_layer, owner)
    picture, owner = _photograph(ink_layer, owner, style, rng)
    boxes = [_box(s) for s in ndimage.find_objects(owner)]
    lines = [line for line, words in enumerate(text.split("\n"))
             for _ in words.replace(" ", "")]
    return Page(picture, text, boxes, lines, seed, style, sources)


def pages(part, count, data_dir=None):
    """The first ``count`` pages of a part ("tune" or "held-out")."""
    seeds = TUNE_SEEDS if _check_part(part) == "tune" else HELD_OUT_SEEDS
    return [make_page(seed, data_dir) for seed in seeds[:count]]


def _check_part(part):
    if part not in PARTS:
        raise MicroconvError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")
    return part


def _box(slices):
    rows, cols = slices
    return (cols.start, rows.start, cols.stop, rows.stop)


def _choose_style(seed, rng):
    """Tool and layout go round in turn with the seed, so any few pages hold them all; the
    rest is drawn at random."""
    tool = TOOLS[seed % len(TOOLS)]
    paper = str(rng.choice(list(PAPERS)))
    ink = "pencil" if tool == "pencil" else str(rng.choice(list(INKS)))
    return {
        "layout": LAYOUTS[(seed // len(TOOLS)) % len(LAYOUTS)],
        "tool": tool,
        "paper": paper,
        "ink": ink,
        "letter_height": float(rng.uniform(28, 64)),
        "lighting": float(rng.uniform(0.0, 0.45)) if rng.random() < 0.7 else 0.0,
        "shadow": float(rng.uniform(0.25, 0.5)) if rng.random() < 0.4 else 0.0,
        "vignette": float(rng.uniform(0.15, 0.4)) if rng.random() < 0.5 else 0.0,
        "rotation": float(rng.uniform(-4, 4)) if rng.random() < 0.75 else 0.0,
        "blur": float(rng.uniform(0.5, 1.4)) if rng.random() < 0.5 else 0.0,
        "noise": NOISES[seed // (len(TOOLS) * len(LAYOUTS)) % len(NOISES)]
        if rng.random() < 0.8 else "sensor",
        "jpeg_quality": int(rng.integers(35, 92)) if rng.random() < 0.75 else None,
    }


def _layout(style, rng):
    """The lines of the page: each a list of words, each word a list of (class index, the
    line's size factor)."""
    layout = style["layout"]
    if layout == "one line":
        line_count, letters_per_line = 1, int(rng.integers(18, 30))
    elif layout == "rows":
        line_count, letters_per_line = int(rng.integers(2, 5)), int(rng.integers(6, 11))
    else:
        line_count, letters_per_line = int(rng.integers(2, 5)), int(rng.integers(10, 20))
    lines = []
    for _ in range(line_count):
        size = float(rng.uniform(0.7, 1.3)) if layout == "mixed sizes" else 1.0
        words, left = [], letters_per_line + int(rng.integers(-2, 3))
        while left > 0:
            length = 1 if layout == "rows" else min(left, int(rng.integers(1, 8)))
            words.append([(int(rng.integers(len(LETTERS))), size) for _ in range(length)])
            left -= length
        lines.append(words)
    return lines


def _letter_alpha(image, height, tool, rng):
    """Coverage (0..1) of one letter drawn ``height`` pixels tall (EMNIST's 24-pixel frame)
    with the tool: thin for a pen, thinner and grainy for a pencil, thick for a marker."""
    ink = image.astype(np.float32) / max(float(image.max()), 1.0)
    rows = np.nonzero(ink.max(axis=1) > 0.2)[0]
    cols = np.nonzero(ink.max(axis=0) > 0.2)[0]
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = height / 24.0
    big = ndimage.zoom(np.pad(ink, 1), scale, order=1)
    if tool == "marker":
        big = ndimage.grey_dilation(big, size=max(1, round(scale * 1.2)))
        level = 0.35
    elif tool == "pencil":
        level = 0.6
    else:
        level = float(rng.uniform(0.45, 0.6))
    alpha = np.clip((big - level) / 0.12 + 0.5, 0.0, 1.0)     # a soft edge about 1 px wide
    if tool == "pencil":
        alpha *= rng.uniform(0.7, 1.0, size=alpha.shape)
    rows = np.nonzero(alpha.max(axis=1) > INKED)[0]
    cols = np.nonzero(alpha.max(axis=0) > INKED)[0]
    return alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]    # cropped to the ink


def _write(lines, style, images, by_class, rng):
    """Draw the letters: (coverage image, owner labels 1..N, text, the index in ``images``
    of each letter's image). Gaps are measured between the letters' ink, in units of the
    line's letter height."""
    height = style["letter_height"]
    margin = int(rng.uniform(1.0, 2.5) * height)
    word_gap = (1.2, 1.8) if style["layout"] == "rows" else (0.8, 1.3)
    placed, x_ends, text_lines, sources = [], [], [], []
    y, previous_height = margin, 0.0
    for words in lines:
        line_height = height * words[0][0][1]
        if previous_height:             # the space between lines fits the taller of the two
            y += previous_height + max(previous_height, line_height) * rng.uniform(0.6, 1.4)
        previous_height = line_height
        x = margin + rng.uniform(0, 1.5) * height
        text_words = []
        for word in words:
            for label, _ in word:
                size = line_height * rng.uniform(0.85, 1.15)
                pick = by_class[label][rng.integers(len(by_class[label]))]
                alpha = _letter_alpha(images[pick], size, style["tool"], rng)
                top = y + (line_height - alpha.shape[0]) / 2 + rng.normal(0, 0.05 * line_height)
                placed.append((int(round(x)), int(round(top)), alpha))
                sources.append(int(pick))
                x += alpha.shape[1] + rng.uniform(0.1, 0.4) * line_height
            x += rng.uniform(*word_gap) * line_height
            text_words.append("".join(LETTERS[label] for label, _ in word))
        x_ends.append(x)
        text_lines.append(" ".join(text_words))
    y += previous_height
    width = int(max(x_ends) + margin)
    # a photo of a page is about 4:3, whatever the writing fills of it
    canvas_height = int(max(y + margin, width * rng.uniform(0.55, 0.8)))
    shift = int(rng.uniform(0, canvas_height - y - margin + 1))
    placed = [(left, top + shift, alpha) for left, top, alpha in placed]
    coverage = np.zeros((canvas_height, width), dtype=np.float32)
    owner = np.zeros((canvas_height, width), dtype=np.int32)
    for index, (left, top, alpha) in enumerate(placed, 1):
        h, w = alpha.shape
        region = coverage[top:top + h, left:left + w]
        coverage[top:top + h, left:left + w] = np.maximum(region, alpha)
        owner[top:top + h, left:left + w][alpha > INKED] = index
    return coverage, owner, "\n".join(text_lines), sources


def _fit(coverage, owner):
    """Scale the page down to at most MAX_SIDE pixels a side (the size the reader works at)."""
    scale = MAX_SIDE / max(coverage.shape)
    if scale >= 1:
        return coverage, owner
    size = (round(coverage.shape[1] * scale), round(coverage.shape[0] * scale))
    coverage = np.asarray(Image.fromarray(coverage).resize(size, Image.BILINEAR))
    owner = np.asarray(Image.fromarray(owner).resize(size, Image.NEAREST))
    return coverage, owner


def _photograph(coverage, owner, style, rng):
    """Ink on paper under a camera: (RGB picture, owner labels in the picture's pixels)."""
    paper = np.array(PAPERS[style["paper"]], dtype=np.float32)
    ink = np.array(PENCIL if style["ink"] == "pencil" else INKS[style["ink"]], dtype=np.float32)
    if style["tool"] == "pencil":          # graphite: faint, and never as dark as ink
        ink = paper - (paper - ink) * rng.uniform(0.5, 0.8)
    rgb = paper * (1 - coverage[..., None]) + ink * coverage[..., None]
    if style["rotation"]:
        rgb, owner = _rotate(rgb, owner, style["rotation"], tuple(paper))
    rgb *= rng.uniform(0.97, 1.03, size=3)                   # white balance
    h, w = owner.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = np.ones((h, w), dtype=np.float32)
    if style["lighting"]:
        angle = rng.uniform(0, 2 * np.pi)
        along = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
        along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
        light *= 1 - style["lighting"] * along
    if style["shadow"]:
        light *= 1 - style["shadow"] * _shadow_mask(h, w, rng)
    if style["vignette"]:
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        light *= 1 - style["vignette"] * r2 / 2
    rgb *= light[..., None]
    if style["blur"]:
        rgb = ndimage.gaussian_filter(rgb, sigma=(style["blur"], style["blur"], 0))
    rgb += rng.normal(0, rng.uniform(2, 6), size=rgb.shape)
    picture = Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8))
    picture = _add_noise(picture, style["noise"], rng)
    if style["jpeg_quality"]:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=style["jpeg_quality"])
        picture = Image.open(buffer).convert("RGB")
    return picture, owner


def _rotate(rgb, owner, degrees, fill):
    """Rotate the picture and its owner labels together (expanding the canvas)."""
    channels = [Image.fromarray(rgb[..., c]).rotate(degrees, Image.BICUBIC, expand=True,
                                                    fillcolor=float(fill[c]))
                for c in range(3)]
    turned = np.stack([np.asarray(c, dtype=np.float32) for c in channels], axis=2)
    labels = Image.fromarray(owner).rotate(degrees, Image.NEAREST, expand=True, fillcolor=0)
    return turned, np.asarray(labels, dtype=np.int32)


def _shadow_mask(h, w, rng):
    """0..1: a soft shadow over the part of the page beyond a random line, like a hand's or a
    phone's shadow falling in from one side."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    distance = np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)
    edge = rng.uniform(0.1, 0.4) * min(h, w)
    softness = rng.uniform(0.02, 0.08) * min(h, w)
    return expit((distance - edge) / softness)


def _add_noise(picture, kind, rng):
    """Salt and pepper (single black and white pixels) or coloured speckles (dots up to a
    few pixels wide, some dark); sensor noise alone adds nothing here."""
    w, h = picture.size
    if kind == "salt and pepper":
        pixels = np.asarray(picture).copy()
        count = int(rng.uniform(0.002, 0.01) * w * h)
        ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
        pixels[ys, xs] = np.where(rng.random(count) < 0.5, 0, 255)[:, None]
        return Image.fromarray(pixels)
    if kind == "coloured speckles":
        draw = ImageDraw.Draw(picture)
        count = int(rng.uniform(0.4, 1.2) * w * h / 1000)
        for _ in range(count):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(0.5, 2.2)
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        return picture.filter(ImageFilter.SMOOTH) if rng.random() < 0.3 else picture
    return picture


# ---------------------------------------------------------------------------------------------
# Scoring a reading against the truth


def edit_counts(truth, read):
    """(substitutions, deletions, insertions) of a cheapest edit from ``truth`` to ``read``
    (Levenshtein): deletions are characters missed, insertions characters read in excess."""
    n, m = len(truth), len(read)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]),
                             cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    substitutions = deletions = insertions = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]):
            substitutions += truth[i - 1] != read[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            deletions, i = deletions + 1, i - 1
        else:
            insertions, j = insertions + 1, j - 1
    return int(substitutions), deletions, insertions


def box_iou(a, b):
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match_boxes(truth, found, threshold=0.5):
    """Pairs (truth index, found index, IoU) that overlap by at least ``threshold``, one
    found box per true box, chosen for the largest total overlap."""
    if not truth or not found:
        return []
    iou = np.array([[box_iou(t, f) for f in found] for t in truth])
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols)
            if iou[r, c] >= threshold]


def score(page, results):
    """Counts that compare a reading (``photo.read_letters``'s results) with a page's truth.

    End to end: the letters read against the true letters, in reading order (whitespace
    left out), and the whole text with its spaces and newlines. The reader alone: the true
    letters are put in place of the guesses of the letters it found (a box that matches no
    letter gives "?"), so the text that results has only the reader's errors (missed,
    spurious, merged or split letters, reading order, lines, word gaps). The network alone:
    its guesses on the letters whose box matches a true one.
    """
    from microconv.letters.photo import text_of
    read_letters = "".join(r["letter"] for r in results)
    substitutions, missed, spurious = edit_counts(page.letters, read_letters)
    pairs = match_boxes(page.boxes, [r["ink_box"] for r in results])
    truth_of = {found: page.letters[true] for true, found, _ in pairs}
    placed = [dict(r, letter=truth_of.get(i, "?")) for i, r in enumerate(results)]
    return {
        "pages": 1,
        "letters": len(page.letters),
        "read": len(results),
        "letter_errors": substitutions + missed + spurious,
        "substitutions": substitutions,
        "missed": missed,
        "spurious": spurious,
        "text_characters": len(page.text),
        "text_errors": sum(edit_counts(page.text, text_of(results))),
        "boxes_matched": len(pairs),
        "iou_sum": sum(iou for _, _, iou in pairs),
        "reader_text_errors": sum(edit_counts(page.text, text_of(placed))),
        "network_right": sum(results[found]["letter"] == page.letters[true]
                             for true, found, _ in pairs),
    }
