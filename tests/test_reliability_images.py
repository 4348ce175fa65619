"""Pictures for ``predict`` that are broken, empty, blank, enormous or hold no letter.

Each gets a clear answer: letters, "no letters found", or one error line naming the file,
never a crash. Huge pictures are scaled down while decoding where the format allows (JPEG)
and otherwise read once at full size up to pictures.MAX_PIXELS, then scaled down.
"""

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, untrained_checkpoint
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from microconv.errors import DataError
from microconv.letters import photo, pictures
from microconv.letters.checkpoint import Classifier
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing


@pytest.fixture(scope="module")
def classifier():
    return Classifier(ConvoAlphabetModel("numpy", seed=0), Preprocessing())


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("model"))


def simple_png(path, width, height, ink=(), channels=1):
    """A large PNG written row by row: white paper with black rectangles (rows, columns).

    Compressing a handful of distinct rows is fast and the file stays small, so a
    12000 x 12000 picture costs the test well under a second and no memory.
    """
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    distinct, packer, parts = {}, zlib.compressobj(6), []
    for y in range(height):
        inked = tuple(i for i, (rows, _) in enumerate(ink) if y in rows)
        if inked not in distinct:
            line = bytearray(b"\xff" * (width * channels))
            for i in inked:
                cols = ink[i][1]
                line[cols.start * channels:cols.stop * channels] = bytes(
                    (cols.stop - cols.start) * channels)
            distinct[inked] = b"\0" + bytes(line)          # filter byte 0: none
        parts.append(packer.compress(distinct[inked]))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


# A letter L drawn with a 500-pixel pen on a 12000 x 12000 page.
HUGE_L = [(range(3000, 9000), slice(4000, 4500)), (range(8500, 9000), slice(4000, 8000))]


# --- files that are not pictures -----------------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("empty.png", b"", "cannot read image"),
    ("notes.png", b"these are my notes, not a picture\n", "cannot read image"),
    ("cut.png", None, "cannot read image"),
    ("random.jpg", bytes(range(256)) * 8, "cannot read image"),
])
def test_unreadable_files(tmp_path, model_file, name, content, message):
    path = tmp_path / name
    if content is None:                                   # a PNG cut off half way
        simple_png(tmp_path / "whole.png", 300, 200, [(range(50, 150), slice(100, 120))])
        content = (tmp_path / "whole.png").read_bytes()[:120]
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        photo.read_image(path)
    assert_one_line_error(cli("predict", model_file, path), message, name)


def test_a_folder_instead_of_a_picture(tmp_path, model_file):
    (tmp_path / "pictures").mkdir()
    assert_one_line_error(cli("predict", model_file, tmp_path / "pictures"), "pictures")


def test_the_bad_picture_among_good_ones_is_named(tmp_path, model_file):
    good = simple_png(tmp_path / "good.png", 200, 200, [(range(40, 160), slice(90, 110))])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert_one_line_error(cli("predict", model_file, good, bad), "bad.png")


# --- pictures with nothing to read ---------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 128, 255])
def test_uniform_pictures(tmp_path, model_file, value):
    path = tmp_path / "blank.png"
    Image.new("L", (120, 80), value).save(path)
    assert_one_line_error(cli("predict", model_file, path), "uniform", "blank.png")


def test_paper_without_letters(tmp_path, model_file):
    rng = np.random.default_rng(0)
    paper = np.clip(rng.normal(215, 4, size=(300, 400)), 0, 255).astype(np.uint8)
    path = tmp_path / "paper.png"
    Image.fromarray(paper).save(path)
    result = cli("predict", model_file, path)
    assert result.exit_code == 0, result.output
    assert "paper.png: no letters found" in " ".join(result.stdout.split())
    found = json.loads(cli("predict", model_file, path, "--json").stdout)["images"][0]
    assert found["letters"] == [] and found["text"] == ""


# --- enormous pictures ---------------------------------------------------------------------------

def test_a_12000_pixel_png_is_scaled_down_and_read(tmp_path, model_file):
    path = simple_png(tmp_path / "huge.png", 12000, 12000, HUGE_L)
    gray = photo.read_image(path)
    assert gray.shape == (pictures.MAX_SIDE, pictures.MAX_SIDE)
    result = cli("predict", model_file, path, "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""                            # no Pillow warning either
    letters = json.loads(result.stdout)["images"][0]["letters"]
    assert len(letters) == 1
    left, top, right, bottom = letters[0]["box"]
    assert 0 <= left < right <= pictures.MAX_SIDE and 0 <= top < bottom <= pictures.MAX_SIDE


def peak_memory_mb(path):
    """Peak resident memory of a fresh Python that reads the picture (megabytes)."""
    # VmHWM (Linux) belongs to the new program alone; ru_maxrss would include the memory of
    # the pytest process it was forked from.
    code = ("import sys\nfrom microconv.letters import photo\n"
            "try:\n    print(photo.read_image(sys.argv[1]).shape)\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
            "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"
            "print(int(status.split()[0]) // 1024)\n")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, check=True, timeout=120)
    answer, peak = done.stdout.strip().splitlines()
    return answer, int(peak)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_pictures_stay_within_bounded_memory(tmp_path):
    grey = simple_png(tmp_path / "grey.png", 12000, 12000, HUGE_L)
    answer, grey_peak = peak_memory_mb(grey)
    assert answer == f"({pictures.MAX_SIDE}, {pictures.MAX_SIDE})"
    # One full-size decode (144 MB of grey values) and nothing else at full size.
    assert grey_peak < 144 + 250, grey_peak
    # 9000 x 9000 RGB would take 243 MB to decode: refused before decoding anything.
    colour = simple_png(tmp_path / "colour.png", 9000, 9000, HUGE_L[:1], channels=3)
    answer, colour_peak = peak_memory_mb(colour)
    assert answer.startswith("DataError") and "too large to read" in answer
    assert colour_peak < grey_peak - 100, (colour_peak, grey_peak)


def test_a_huge_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    page = Image.new("L", (8000, 6000), 230)
    page.paste(20, (3600, 2000, 3800, 4400))
    page.save(path, quality=80)
    monkeypatch.setattr(pictures, "MAX_PIXELS", 20_000_000)  # less than the full 48 M pixels
    gray = photo.read_image(path)
    assert max(gray.shape) <= pictures.MAX_SIDE and gray.shape[1] > gray.shape[0]


def test_too_large_to_decode_is_one_line(tmp_path, model_file):
    path = simple_png(tmp_path / "colour.png", 9000, 9000, HUGE_L[:1], channels=3)
    assert_one_line_error(cli("predict", model_file, path), "too large to read",
                          "scale it down first")


# --- anything at all -----------------------------------------------------------------------------

@pytest.mark.parametrize("height", [1, 2])
def test_strips_a_pixel_or_two_tall(classifier, height):
    """Noise in a 1-2 pixel strip once sent the touching-letter splitter into endless
    recursion (found by the fuzzing below)."""
    for seed in range(10):
        noise = np.random.default_rng(seed).integers(0, 256, size=(height, 42))
        assert isinstance(photo.find_letters(noise.astype(np.float32)), list)


@given(height=st.integers(1, 48), width=st.integers(1, 48), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["noise", "dots", "black and white", "two halves"]))
def test_any_small_picture_gives_letters_or_one_clear_error(tmp_path_factory, classifier,
                                                             height, width, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        pixels = rng.integers(0, 256, size=(height, width))
    elif kind == "dots":
        pixels = np.full((height, width), 255)
        pixels[rng.integers(0, height, 5), rng.integers(0, width, 5)] = 0
    elif kind == "black and white":
        pixels = rng.choice([0, 255], size=(height, width))
    else:
        pixels = np.full((height, width), 200)
        pixels[:height // 2] = 10
    path = tmp_path_factory.mktemp("any") / "any.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    try:
        results = photo.read_letters(classifier, path)
    except DataError as exc:
        assert "\n" not in str(exc) and "any.png" in str(exc)
        return
    for result in results:
        assert result["letter"] in photo.LETTERS and len(result["top3"]) == 3
