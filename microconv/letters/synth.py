"""Handwriting-like letters drawn from stroke skeletons, so training works with no files at all.

Every letter A-Z has skeletons: polylines and arcs in a unit box (x to the right, y downwards),
written here for microconv, in three sets (FORMS): "mixed" (capitals, several letters also with
a lower-case form, because EMNIST letters merges the two cases into one class), "upper" (the
capitals alone) and "lower" (lower-case and joined-up forms of every letter, which training
mixes in because the handwritten data holds few). One sample is drawn like this:

1. pick a skeleton of the letter, move each control point a little (jitter);
2. squeeze or stretch it horizontally (scale), slant it like italic writing, rotate it slightly;
3. bend it with a smooth random displacement field (elastic distortion);
4. frame it like EMNIST: the ink's bounding box, aspect kept, fills the central 24x24 of 28x28;
5. draw it with a random pen width at 4x resolution, shrink to 28x28 (anti-aliased) and
   blur; set a random ink intensity, or, for the lower-case forms that training mixes into
   the handwritten data, stretch the grey levels as the data's were (see ``BLUR``).

The result is an upright uint8 image (row = y, col = x), ink bright on black, like EMNIST after
the transpose fix. Everything comes from one ``numpy.random.Generator``, so a seed gives the
same letters on every machine. ``write_emnist_files`` stores a set in EMNIST's own format
(transposed images, labels 1..26), so the IDX reader can be exercised on it too.
``photograph`` draws letters in a row on paper as a phone photographs them, for tests and
benchmarks of reading pictures.
"""

from __future__ import annotations

import io
import math
import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from microconv.errors import DataError

SIZE = 28
SUPER = 4                       # draw at 4x and shrink: smooth, anti-aliased strokes
FRAME = 24                      # the ink's bounding box fills 24 of 28 pixels, as in EMNIST


def arc(cx, cy, rx, ry, start, end, steps=16):
    """Points on an ellipse from angle start to end (degrees; 0 = right, 90 = down)."""
    angles = np.radians(np.linspace(start, end, steps))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _lower_bowl(cx=0.4, rx=0.4):
    return arc(cx, 0.72, rx, 0.28, 0, 360, 20)


# Each entry: letter -> list of variants; a variant is a list of strokes (lists of points).
SKELETONS = {
    "A": [[[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
          [_lower_bowl(), [(0.8, 0.45), (0.8, 1)]]],
    "B": [[[(0, 0), (0, 1)],
           [(0, 0), (0.5, 0)] + arc(0.5, 0.25, 0.35, 0.25, -90, 90) + [(0, 0.5)],
           [(0, 0.5), (0.55, 0.5)] + arc(0.55, 0.75, 0.4, 0.25, -90, 90) + [(0, 1)]],
          [[(0, 0), (0, 1)], _lower_bowl(0.4, 0.4)]],
    "C": [[arc(0.5, 0.5, 0.5, 0.5, -45, -315)]],
    "D": [[[(0, 0), (0, 1)], [(0, 0), (0.4, 0)] + arc(0.4, 0.5, 0.6, 0.5, -90, 90) + [(0, 1)]],
          [[(0.8, 0), (0.8, 1)], _lower_bowl()]],
    "E": [[[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.8, 0.5)]],
          [[(0.05, 0.7), (0.85, 0.7)] + arc(0.45, 0.72, 0.4, 0.28, 0, -310)]],
    "F": [[[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.8, 0.5)]],
          [arc(0.7, 0.2, 0.3, 0.2, -20, -180) + [(0.4, 1)], [(0.1, 0.45), (0.8, 0.45)]]],
    "G": [[arc(0.5, 0.5, 0.5, 0.5, -45, -360) + [(0.55, 0.55)]],
          [arc(0.4, 0.3, 0.4, 0.3, 0, 360, 20), [(0.8, 0.05), (0.8, 0.8)]
           + arc(0.45, 0.8, 0.35, 0.2, 0, 160)]],
    "H": [[[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
          [[(0, 0), (0, 1)], [(0, 0.65)] + arc(0.4, 0.65, 0.4, 0.25, -180, 0) + [(0.8, 1)]]],
    "I": [[[(0.5, 0), (0.5, 1)]],
          [[(0.5, 0), (0.5, 1)], [(0.2, 0), (0.8, 0)], [(0.2, 1), (0.8, 1)]]],
    "J": [[[(0.8, 0), (0.8, 0.7)] + arc(0.45, 0.7, 0.35, 0.3, 0, 180)],
          [[(0.3, 0), (1, 0)], [(0.7, 0), (0.7, 0.7)] + arc(0.4, 0.7, 0.3, 0.3, 0, 170)]],
    "K": [[[(0, 0), (0, 1)], [(1, 0), (0, 0.55)], [(0.3, 0.4), (1, 1)]]],
    "L": [[[(0, 0), (0, 1), (0.8, 1)]], [[(0.5, 0), (0.5, 1)]]],
    "M": [[[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
          [[(0, 0.4), (0, 1)], [(0, 0.6)] + arc(0.25, 0.6, 0.25, 0.2, -180, 0) + [(0.5, 1)],
           [(0.5, 0.6)] + arc(0.75, 0.6, 0.25, 0.2, -180, 0) + [(1, 1)]]],
    "N": [[[(0, 1), (0, 0), (1, 1), (1, 0)]],
          [[(0, 0.4), (0, 1)], [(0, 0.65)] + arc(0.4, 0.65, 0.4, 0.25, -180, 0) + [(0.8, 1)]]],
    "O": [[arc(0.5, 0.5, 0.5, 0.5, -90, 270, 24)]],
    "P": [[[(0, 1), (0, 0), (0.55, 0)] + arc(0.55, 0.27, 0.4, 0.27, -90, 90) + [(0, 0.55)]]],
    "Q": [[arc(0.5, 0.5, 0.5, 0.5, -90, 270, 24), [(0.6, 0.7), (1.05, 1.1)]],
          [arc(0.4, 0.3, 0.4, 0.3, 0, 360, 20), [(0.8, 0.05), (0.8, 1), (1.0, 0.85)]]],
    "R": [[[(0, 1), (0, 0), (0.55, 0)] + arc(0.55, 0.27, 0.4, 0.27, -90, 90) + [(0, 0.55)],
           [(0.35, 0.55), (1, 1)]],
          [[(0, 0.4), (0, 1)], [(0, 0.7)] + arc(0.45, 0.7, 0.45, 0.25, -180, -50)]],
    "S": [[arc(0.5, 0.25, 0.45, 0.25, -30, -270) + arc(0.5, 0.75, 0.45, 0.25, -90, 150)]],
    "T": [[[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
          [[(0.4, 0), (0.4, 0.85)] + arc(0.6, 0.85, 0.2, 0.15, 180, 60),
           [(0.1, 0.35), (0.8, 0.35)]]],
    "U": [[[(0, 0), (0, 0.6)] + arc(0.5, 0.6, 0.5, 0.4, 180, 0) + [(1, 0)]],
          [[(0, 0), (0, 0.6)] + arc(0.45, 0.6, 0.45, 0.4, 180, 0), [(0.9, 0), (0.9, 1)]]],
    "V": [[[(0, 0), (0.5, 1), (1, 0)]]],
    "W": [[[(0, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (1, 0)]]],
    "X": [[[(0, 0), (1, 1)], [(1, 0), (0, 1)]]],
    "Y": [[[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
          [[(0, 0), (0.5, 0.6)], [(1, 0), (0.3, 1.2)]]],
    "Z": [[[(0, 0), (1, 0), (0, 1), (1, 1)]],
          [[(0, 0), (1, 0), (0, 1), (1, 1)], [(0.25, 0.5), (0.75, 0.5)]]],
}
LETTERS = string.ascii_uppercase
assert "".join(sorted(SKELETONS)) == LETTERS


def _dot(x, y):
    """The dot of an i or j: a stroke so short that the round pen tips make it a dot."""
    return [(x, y), (x + 0.01, y - 0.01)]


# Lower-case and cursive forms, which the handwritten data holds few of. The x-height band is
# y in [0.45, 1]; ascenders reach y = 0 and descenders y = 1.45, so after framing a b is
# taller and narrower than an o, as on paper. Forms shared with SKELETONS come from there.
X_HEIGHT, BASE, DESCENT = 0.45, 1.0, 1.45


def _bowl(cx=0.3, rx=0.3, start=-20, end=-380):
    """An x-height bowl written anticlockwise from its top right, as a or d begin."""
    return arc(cx, 0.725, rx, 0.275, start, end, 20)


LOWERCASE = {
    "A": [SKELETONS["A"][1],
          [_bowl() + [(0.6, X_HEIGHT), (0.6, 0.95), (0.72, 0.92)]],
          [[(0.05, 0.52)] + arc(0.32, 0.62, 0.27, 0.17, -160, 0) + [(0.59, BASE)],
           arc(0.32, 0.84, 0.27, 0.16, -10, -330)],
          [[(0.08, 0.55)] + arc(0.32, 0.6, 0.24, 0.14, -160, 0) + [(0.56, 0.94), (0.66, BASE)],
           [(0.56, 0.7), (0.3, 0.7)] + arc(0.3, 0.85, 0.26, 0.15, -90, -260) + [(0.56, 0.9)]]],
    "B": [SKELETONS["B"][1],
          [[(0.0, 0.7), (0.3, 0.35), (0.5, 0.1), (0.45, 0.0), (0.33, 0.02), (0.2, 0.25),
            (0.1, 0.6), (0.1, BASE)] + arc(0.38, 0.8, 0.28, 0.2, 180, 480)]],
    "C": [[arc(0.35, 0.725, 0.35, 0.275, -40, -320)],
          [[(0.5, 0.5)] + arc(0.38, 0.6, 0.12, 0.1, -30, -200)
           + arc(0.38, 0.73, 0.36, 0.27, 190, 40)]],
    "D": [SKELETONS["D"][1],
          [_bowl() + [(0.6, BASE), (0.62, 0.3)] + arc(0.42, 0.18, 0.2, 0.17, 30, -160)]],
    "E": [SKELETONS["E"][1],
          [[(0.0, 0.9), (0.3, 0.75), (0.55, 0.6)] + arc(0.38, 0.6, 0.17, 0.15, 0, -200)
           + arc(0.42, 0.74, 0.24, 0.26, 180, 60) + [(0.75, 0.88)]]],
    "F": [SKELETONS["F"][1],
          [[(0.0, 0.75), (0.25, 0.4), (0.4, 0.1), (0.35, 0.0), (0.25, 0.05), (0.22, 0.4),
            (0.2, BASE), (0.17, 1.4), (0.1, 1.42), (0.1, 1.3), (0.2, BASE), (0.45, 0.8)],
           [(0.0, 0.55), (0.5, 0.55)]]],
    "G": [SKELETONS["G"][1],
          [_bowl() + [(0.6, X_HEIGHT), (0.6, 1.4)] + arc(0.48, 1.4, 0.12, 0.08, 0, 180)
           + [(0.45, 1.2), (0.85, 0.95)]],
          [arc(0.33, 0.6, 0.24, 0.16, 0, 360, 20),
           [(0.2, 0.74), (0.12, 0.86), (0.4, 0.96)] + arc(0.36, 1.2, 0.32, 0.2, -80, 250),
           [(0.5, 0.5), (0.7, 0.44)]]],
    "H": [SKELETONS["H"][1],
          [[(0.0, 0.6), (0.25, 0.2)] + arc(0.15, 0.15, 0.1, 0.15, -10, -200) + [(0.0, BASE)],
           [(0.02, 0.75)] + arc(0.3, 0.72, 0.27, 0.25, -180, 0) + [(0.57, 0.95), (0.7, 0.92)]]],
    "I": [[[(0.5, X_HEIGHT), (0.5, BASE)], _dot(0.5, 0.2)],
          [[(0.5, X_HEIGHT), (0.5, 0.92), (0.62, BASE), (0.72, 0.94)], _dot(0.5, 0.22)]],
    "J": [[[(0.6, X_HEIGHT), (0.6, 1.25)] + arc(0.38, 1.25, 0.22, 0.2, 0, 160), _dot(0.6, 0.2)],
          [[(0.6, X_HEIGHT), (0.6, 1.25)] + arc(0.38, 1.25, 0.22, 0.2, 0, 160)]],
    "K": [[[(0.0, 0.0), (0.0, BASE)], [(0.55, X_HEIGHT), (0.05, 0.75), (0.6, BASE)]],
          [[(0.0, 0.6), (0.25, 0.2)] + arc(0.15, 0.15, 0.1, 0.15, -10, -200) + [(0.0, BASE)],
           [(0.02, 0.8)] + arc(0.35, 0.6, 0.15, 0.12, 180, -90) + [(0.1, 0.75), (0.6, BASE)]]],
    "L": [SKELETONS["L"][1],
          [[(0.1, 0.8), (0.45, 0.35)] + arc(0.35, 0.15, 0.12, 0.17, 20, -180)
           + [(0.25, 0.9)] + arc(0.4, 0.88, 0.15, 0.12, 180, 30)],
          [[(0.4, 0.0), (0.4, 0.9), (0.6, BASE)]]],
    "M": [SKELETONS["M"][1]],
    "N": [SKELETONS["N"][1]],
    "O": [[arc(0.4, 0.725, 0.4, 0.275, -90, 270, 24)],
          [arc(0.4, 0.725, 0.4, 0.275, -60, -400, 24) + [(0.75, 0.5), (0.95, 0.48)]]],
    "P": [[[(0.0, X_HEIGHT), (0.0, DESCENT)],
           [(0.0, 0.55)] + arc(0.3, 0.72, 0.3, 0.27, -150, 150) + [(0.0, 0.9)]]],
    "Q": [SKELETONS["Q"][1],
          [_bowl() + [(0.6, X_HEIGHT), (0.6, DESCENT), (0.8, 1.3)]]],
    "R": [SKELETONS["R"][1]],
    "S": [[arc(0.3, 0.59, 0.27, 0.14, -30, -270) + arc(0.3, 0.86, 0.27, 0.14, -90, 150)]],
    "T": [SKELETONS["T"][1]],
    "U": [SKELETONS["U"][1],
          [[(0.0, X_HEIGHT), (0.0, 0.8)] + arc(0.3, 0.8, 0.3, 0.2, 180, 0) + [(0.6, X_HEIGHT)]]],
    "V": [[[(0.0, X_HEIGHT), (0.35, BASE), (0.7, X_HEIGHT)]],
          [[(0.0, X_HEIGHT), (0.2, 0.9)] + arc(0.35, 0.9, 0.15, 0.1, 150, 30)
           + [(0.6, X_HEIGHT), (0.8, 0.5)]]],
    "W": [[[(0.0, X_HEIGHT), (0.2, BASE), (0.45, 0.55), (0.7, BASE), (0.9, X_HEIGHT)]]],
    "X": [[[(0.0, X_HEIGHT), (0.6, BASE)], [(0.6, X_HEIGHT), (0.0, BASE)]],
          [arc(0.15, 0.725, 0.17, 0.275, -90, 90), arc(0.5, 0.725, 0.17, 0.275, -90, -270)]],
    "Y": [SKELETONS["Y"][1],
          [[(0.0, X_HEIGHT), (0.0, 0.8)] + arc(0.3, 0.8, 0.3, 0.2, 180, 0),
           [(0.6, X_HEIGHT), (0.6, 1.25)] + arc(0.38, 1.25, 0.22, 0.2, 0, 160)],
          [[(0.0, X_HEIGHT), (0.0, 0.8)] + arc(0.3, 0.8, 0.3, 0.2, 180, 0),
           [(0.6, X_HEIGHT), (0.6, 1.3)] + arc(0.45, 1.3, 0.15, 0.12, 0, 180)
           + [(0.35, 1.15), (0.8, 0.92)]]],
    "Z": [[[(0.0, X_HEIGHT), (0.6, X_HEIGHT), (0.0, BASE), (0.6, BASE)]]],
}
assert "".join(sorted(LOWERCASE)) == LETTERS
CAPITALS = {letter: variants[:1] for letter, variants in SKELETONS.items()}
FORMS = {"mixed": SKELETONS, "upper": CAPITALS, "lower": LOWERCASE}
# Pen widths in pixels of the 28x28 result; lower-case forms, with their loops, get finer pens.
PEN = {"mixed": (1.8, 4.0), "upper": (1.8, 4.0), "lower": (1.6, 3.6)}
# Gaussian blur of the 28x28 drawing, in pixels. Lower-case letters, which training mixes
# into the handwritten data, are then stretched as the data's grey levels were (its
# SOURCE.md): 0.2 of the maximum and below become black, 0.9 and above full ink. With their
# pens this gives them the data's grey levels (mean and spread, the shares of inked and of
# solid pixels, the stroke width) within a tenth. The other sets, which stand in for the data
# where there is none (training without files, the generated photo pages), keep a softer
# drawing at a random ink strength.
BLUR = {"mixed": 0.5, "upper": 0.5, "lower": 0.8}
INK_STRETCH = (0.2, 0.9)


def _densify(stroke, step=0.04):
    """Insert points so every segment is at most ``step`` long (the elastic field needs them)."""
    out = [stroke[0]]
    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
        pieces = max(1, int(math.hypot(x1 - x0, y1 - y0) / step))
        out += [(x0 + (x1 - x0) * t / pieces, y0 + (y1 - y0) * t / pieces)
                for t in range(1, pieces + 1)]
    return np.array(out, dtype=np.float64)


def _distort(strokes, rng):
    """Jitter, scale, slant, rotate and bend the strokes of one letter (unit-box coordinates)."""
    # Corners of straight strokes move freely; points along an arc only a little, so curves
    # stay smooth instead of turning into zigzags.
    strokes = [np.asarray(s, dtype=np.float64)
               + rng.normal(0, 0.035 if len(s) <= 6 else 0.005, (len(s), 2)) for s in strokes]
    strokes = [_densify(s) for s in strokes]
    x_scale = rng.uniform(0.65, 1.25)
    slant = rng.uniform(-0.35, 0.35)          # x moves by slant * height above the baseline
    angle = math.radians(rng.uniform(-10, 10))
    cos, sin = math.cos(angle), math.sin(angle)
    # Elastic distortion: two smooth random waves displace every point.
    waves = [(rng.normal(0, 0.7, 2), rng.uniform(0, 2 * math.pi), rng.uniform(0.02, 0.06))
             for _ in range(4)]
    out = []
    for s in strokes:
        x, y = s[:, 0] * x_scale, s[:, 1]
        x = x + slant * (1.0 - y)
        x, y = cos * x - sin * y, sin * x + cos * y
        for i, (freq, phase, amp) in enumerate(waves):
            shift = amp * np.sin(2 * math.pi * (freq[0] * x + freq[1] * y) + phase)
            if i % 2 == 0:
                x = x + shift
            else:
                y = y + shift
        out.append(np.stack([x, y], axis=1))
    return out


def _joined(strokes, rng, share=0.4):
    """Joined-up writing: the pen often arrives from the baseline at the left (a lead-in) and
    leaves rising to the right (an exit stroke), and a cut-out letter keeps these strokes.
    Each is added with probability ``share``."""
    strokes = [list(s) for s in strokes]
    lead_in, exit_stroke = rng.random(2) < share
    if lead_in:
        x, y = strokes[0][0]
        start = (x - rng.uniform(0.2, 0.4), max(y, BASE) - rng.uniform(0.0, 0.1))
        strokes[0] = [start] + strokes[0]
    if exit_stroke:
        x, y = strokes[-1][-1]
        strokes[-1] = strokes[-1] + [(x + rng.uniform(0.2, 0.45), y - rng.uniform(0.05, 0.3))]
    return strokes


def _round_points(points, turn_degrees=20.0):
    """Which points of a polyline get a round pen stamp: both ends and every corner where the
    direction turns by more than ``turn_degrees``."""
    steps = np.diff(points, axis=0)
    heading = np.arctan2(steps[:, 1], steps[:, 0])
    turn = np.abs((np.diff(heading) + np.pi) % (2 * np.pi) - np.pi)
    chosen = np.zeros(len(points), dtype=bool)
    chosen[[0, -1]] = True
    chosen[1:-1] = turn > np.radians(turn_degrees)
    return chosen


def draw_letter(letter_index, rng, forms="mixed", variant=None):
    """One upright uint8 28x28 image of the letter with the given index (0 = A), in one of
    the FORMS: "mixed" (capitals and a few lower-case forms), "upper" or "lower". With
    ``variant`` (an index into the letter's forms, -1 the last) every letter takes that one
    form, as one writer always writes a letter the same way; by default each draws one."""
    variants = FORMS[forms][LETTERS[letter_index]]
    chosen = rng.integers(len(variants))
    strokes = variants[chosen if variant is None else variant]
    if forms == "lower":
        strokes = _joined(strokes, rng)
    strokes = _distort(strokes, rng)
    pen = rng.uniform(*PEN[forms]) * SUPER             # in supersampled pixels
    points = np.concatenate(strokes)
    low, high = points.min(axis=0), points.max(axis=0)
    extent = max(float((high - low).max()), 1e-6)
    scale = (FRAME * SUPER - pen) / extent
    canvas = SIZE * SUPER
    centre = (low + high) / 2
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    radius = pen / 2
    for s in strokes:
        pixels = canvas / 2 + (s - centre) * scale
        draw.line([tuple(p) for p in pixels.tolist()], fill=255, width=max(1, round(pen)))
        # A round pen: round tips, and round joints where the stroke turns enough for the
        # corner of a wide line to show a notch (the dense points along a curve turn little).
        for px, py in pixels[_round_points(pixels)].tolist():
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=255)
    small = image.resize((SIZE, SIZE), Image.LANCZOS)
    small = small.filter(ImageFilter.GaussianBlur(BLUR[forms]))
    pixels = np.asarray(small, dtype=np.float64)
    if forms != "lower":
        ink = rng.uniform(0.75, 1.0) * 255 / max(pixels.max(), 1.0)
        return np.clip(pixels * ink, 0, 255).round().astype(np.uint8)
    pixels /= max(pixels.max(), 1.0)
    low, high = INK_STRETCH
    return np.round(np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def generate(n, seed=0, forms="mixed", variant=None):
    """n letters, classes as balanced as n allows, in shuffled order: (uint8 (n, 28, 28) upright
    images, int64 labels 0..25). ``forms`` and ``variant`` choose the skeletons (see
    ``draw_letter``)."""
    if forms not in FORMS:
        raise DataError(f"unknown letter forms '{forms}'; known: {', '.join(FORMS)}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(LETTERS)).astype(np.int64)
    images = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = draw_letter(int(label), rng, forms, variant)
    return images, labels


def write_emnist_files(folder, train_size, test_size, seed=0, gzipped=True, forms="mixed"):
    """Write a generated set as the four emnist-letters IDX files (transposed, labels 1..26)."""
    from microconv.letters.data import emnist_filename, write_idx
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gzipped else ""
    for split, n, split_seed in (("train", train_size, seed), ("test", test_size, seed + 1)):
        images, labels = generate(n, split_seed, forms)
        write_idx(folder / (emnist_filename("letters", split, "images") + suffix),
                  images.transpose(0, 2, 1))
        write_idx(folder / (emnist_filename("letters", split, "labels") + suffix),
                  (labels + 1).astype(np.uint8))
    return folder


def _redraw_with_pen(letter, side, pen):
    """A 28x28 letter at ``side`` pixels, its strokes redrawn ``pen`` times as wide: the
    centre line of every stroke (the ridge of the distance to the paper) is widened to the new
    width, so a thin pen leaves a thin but unbroken line. Ink coverage 0..1 (float32)."""
    big = Image.fromarray(np.asarray(letter, dtype=np.uint8)).resize((side, side), Image.BICUBIC)
    core = np.asarray(big, dtype=np.float32) > 0.45 * 255
    if not core.any():
        return np.zeros((side, side), dtype=np.float32)
    distance = ndimage.distance_transform_edt(core)
    ridge = core & (distance > ndimage.maximum_filter(distance, size=3) - 0.75)
    radius = max(1.0, pen * np.percentile(distance[ridge], 50))
    reach = ndimage.distance_transform_edt(~ridge)
    return np.clip(radius + 0.5 - reach, 0.0, 1.0).astype(np.float32)   # anti-aliased edge


def photograph(letters, rng, side=None):
    """A phone photo of 28x28 letters (upright, ink bright on black) written in one row on
    paper: an RGB uint8 array (H, W, 3).

    Drawn the way cameras and pens differ: letters ``side`` pixels tall (random when None),
    a thinner or thicker pen, ink and paper of random colours (pencil included), light falling
    off across the page, a slight rotation, blur, sensor noise and JPEG compression.
    """
    side = int(side or rng.uniform(24, 160))
    gap = int(side * rng.uniform(0.3, 0.6))
    width = len(letters) * (side + gap) + gap
    margin = gap + int(width * 0.04)       # rotating a long row lifts its ends: keep them in
    height = side + 2 * margin
    alpha = np.zeros((height, width), dtype=np.float32)
    pen = rng.uniform(0.3, 1.3)            # pen width over the data's own stroke width
    for i, letter in enumerate(letters):
        ink = _redraw_with_pen(letter, side, pen)
        top = margin + int(rng.integers(-gap // 4, gap // 4 + 1))
        left = gap + i * (side + gap)
        alpha[top:top + side, left:left + side] = np.maximum(
            alpha[top:top + side, left:left + side], ink)
    angle = rng.uniform(-4.0, 4.0)
    alpha = np.asarray(Image.fromarray(alpha).rotate(angle, Image.BILINEAR), dtype=np.float32)
    pencil = rng.random() < 0.2
    paper = rng.uniform(170, 245) + rng.normal(0, 8, 3)
    ink = rng.uniform(60, 100, 3) if pencil else rng.uniform(0, 80, 3) * rng.uniform(0.2, 1, 3)
    picture = paper + (ink - paper) * alpha[..., None]
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    direction = rng.uniform(0, 2 * math.pi)
    light = 1.0 - rng.uniform(0.0, 0.35) * (np.cos(direction) * xs + np.sin(direction) * ys)
    picture = picture * light[..., None] + rng.normal(0, rng.uniform(1, 6), picture.shape)
    image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, max(side / 50, 0.6))))
    encoded = io.BytesIO()
    image.save(encoded, format="JPEG", quality=int(rng.integers(35, 91)))
    return np.asarray(Image.open(encoded).convert("RGB"))
