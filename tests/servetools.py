"""The drawing pad's tests share these: a checkpoint, a running server, pictures to send.

The checkpoint is the seed's own weights (imported from ../shared/seed-artifacts, where they
read the generated text below correctly) or, without ../shared, a freshly initialised model:
the tests that compare the page with the API hold for any weights.
"""

import contextlib
import http.client
import io
import json
from urllib.parse import urlsplit

import numpy as np
import pytest
from optional import LETTERS_DATA, REQUIRE_BROWSER, SEED_STATE, skip_unless_required
from PIL import Image, ImageDraw

from microconv.letters import hello_dl, synth
from microconv.letters.data import load_emnist
from microconv.letters.model import ConvoAlphabetModel

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:
    skip_unless_required(REQUIRE_BROWSER,
                         'the web extra is not installed (pip install -e ".[web]")', module=True)

from microconv.cli import serve  # noqa: E402  (after the skip: it needs the web extra)
from microconv.letters.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from microconv.letters.preprocess import Preprocessing  # noqa: E402

PAD_SIDE = 256          # the pad's canvas (index.html)
PEN = 9                 # the pad's pen width (pad.js)
TEXT = "pa d\nbe"       # the seed's weights read it on text_photo(TEXT)


def reader_checkpoint(folder):
    """(path, True) for the seed's weights, else (path, False) for an untrained model."""
    path = folder / "reader.npz"
    if SEED_STATE.exists():
        hello_dl.import_seed(SEED_STATE, path)
        return path, True
    save_checkpoint(path, ConvoAlphabetModel("numpy", seed=0), Preprocessing())
    return path, False


@contextlib.contextmanager
def serving(folder):
    """(base URL, reader, whether the weights are trained) of a server on a free local port."""
    path, trained = reader_checkpoint(folder)
    reader = serve.LetterReader(load_checkpoint(path))
    with serve.running(serve.create_app(reader, path.name)) as url:
        yield url, reader, trained


# Named apart from the fixture so that a test asking for pad_server does not shadow an import.
@pytest.fixture(scope="module", name="pad_server")
def module_pad_server(tmp_path_factory):
    """One server per test module, as serving gives it."""
    with serving(tmp_path_factory.mktemp("serve")) as server:
        yield server


def request(url, method="GET", body=None, content_type=None, chunked=False):
    """(status, JSON answer) of one request; a chunked body is an iterable of bytes."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {} if content_type is None else {"Content-Type": content_type}
    try:
        connection.request(method, parts.path, body=body, headers=headers,
                           encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def png(image):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def sample_letter():
    """(28x28 uint8 image, its letter): a letter of the test split, or a generated one."""
    if LETTERS_DATA.exists():
        images, labels = load_emnist(LETTERS_DATA, "test")
        index = 4
    else:
        images, labels = synth.generate(8, seed=4)
        index = 0
    return images[index], "abcdefghijklmnopqrstuvwxyz"[labels[index]]


def strokes_of(image):
    """Pen strokes that copy a 28x28 letter onto the pad: one stroke along every run of ink
    in each half-pixel row, in pad pixels ((x, y) points, 2 per stroke)."""
    rows = np.asarray(Image.fromarray(image).resize((56, 56), Image.BILINEAR)) > 96
    cell = PAD_SIDE / 56
    strokes = []
    for row, ink in enumerate(rows):
        edges = np.diff(np.concatenate([[0], ink.astype(np.int8), [0]]))
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            y = (row + 0.5) * cell
            strokes.append([((start + 0.5) * cell, y), ((end - 0.5) * cell, y)])
    return strokes


def text_photo(text, seed=11):
    """A PNG 'photo' of generated handwritten letters, dark on grey paper: ``text``'s lines
    top to bottom, each letter in a square of its own, a space an empty square."""
    rng = np.random.default_rng(seed)
    side, margin = 112, 40
    lines = text.split("\n")
    paper = 190 + rng.normal(0, 3, (len(lines) * (side + margin) + margin,
                                    max(map(len, lines)) * side + 2 * margin))
    for row, line in enumerate(lines):
        top = margin + row * (side + margin)
        for column, letter in enumerate(line):
            if letter == " ":
                continue
            ink = synth.draw_letter(synth.LETTERS.index(letter.upper()), rng)
            big = np.asarray(Image.fromarray(ink).resize((side, side), Image.BICUBIC), np.float64)
            left = margin + column * side
            paper[top:top + side, left:left + side] -= big / 255 * 140
    return png(np.clip(paper, 0, 255))


def pad_picture(strokes):
    """The pad's PNG after drawing the strokes with its pen: black on opaque white."""
    picture = Image.new("L", (PAD_SIDE, PAD_SIDE), 255)
    pen = ImageDraw.Draw(picture)
    for stroke in strokes:
        pen.line(stroke, fill=0, width=PEN)
        for x, y in (stroke[0], stroke[-1]):
            pen.ellipse((x - PEN / 2, y - PEN / 2, x + PEN / 2, y + PEN / 2), fill=0)
    return png(picture)
