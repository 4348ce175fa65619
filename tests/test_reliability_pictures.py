"""Opening pictures: raster formats only, bounded sizes, and letters that read the same in
every pixel format (transparent, palette, 16-bit, floating point) as in the plain picture."""

import errno
import io
import os
import struct
import zlib

import numpy as np
import pytest
from clitools import assert_one_line_exception
from hypothesis import given
from hypothesis import strategies as st
from PIL import EpsImagePlugin, Image

from microconv.errors import DataError
from microconv.letters import checkpoint, photo
from microconv.letters.pictures import FORMATS, SAVE_FORMATS, open_picture, save_picture

POSTSCRIPT = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
              b"/Helvetica findfont 20 scalefont setfont 10 50 moveto (run) show showpage\n%%EOF\n")


def letters_page():
    """Grey values of a page with two dark letters (an L and an I) on white paper."""
    page = np.full((80, 120), 255, np.uint8)
    page[15:65, 20:28] = 0
    page[57:65, 20:50] = 0
    page[15:65, 80:88] = 0
    return page


def grey(path):
    return np.asarray(open_picture(path), dtype=np.int16)


def test_an_upload_in_memory_opens_the_same_way():
    buffer = io.BytesIO()
    Image.fromarray(transparent(letters_page()), "RGBA").save(buffer, format="PNG")
    buffer.seek(0)
    assert np.array_equal(np.asarray(open_picture(buffer)), letters_page())
    with pytest.raises(DataError, match="cannot read image in memory: not a picture in a format"):
        open_picture(io.BytesIO(POSTSCRIPT))


def test_postscript_named_png_never_reaches_the_eps_decoder(tmp_path, monkeypatch):
    path = tmp_path / "letters.png"
    path.write_bytes(POSTSCRIPT)
    assert Image.open(path).format == "EPS"            # what Pillow would do unrestricted
    reached = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: reached.append(self) or (_ for _ in ()).throw(SyntaxError))
    with pytest.raises(DataError, match="not a picture in a format microconv reads") as caught:
        open_picture(path)
    assert str(path) in str(caught.value) and reached == []
    assert "EPS" not in FORMATS


@pytest.mark.parametrize("suffix", sorted(SAVE_FORMATS))
def test_every_raster_format_reads_the_same_letters(tmp_path, suffix):
    page = letters_page()
    path = tmp_path / f"page{suffix}"
    Image.fromarray(page).save(path)
    got = grey(path)
    assert got.shape == page.shape
    lossy = suffix in (".jpg", ".jpeg", ".webp")
    assert np.abs(got - page).max() <= (60 if lossy else 0)
    assert np.abs(got - page).mean() <= (3 if lossy else 0)


def transparent(page, ink=(0, 0, 0), hidden=(255, 255, 255)):
    """RGBA: ink where the page is dark (opaque, with the page's coverage as alpha), fully
    transparent paper whose hidden colour is ``hidden``."""
    coverage = 255 - page
    rgba = np.zeros(page.shape + (4,), np.uint8)
    rgba[..., :3] = np.where(coverage[..., None] > 0, ink, hidden)
    rgba[..., 3] = coverage
    return rgba


@pytest.mark.parametrize("kind", ["rgba black on clear white", "rgba black on clear black",
                                  "la", "palette", "grey with a transparent shade"])
def test_transparent_pictures_read_like_the_plain_picture(tmp_path, kind):
    page, path = letters_page(), tmp_path / "clear.png"
    if kind.startswith("rgba"):
        hidden = (0, 0, 0) if "clear black" in kind else (255, 255, 255)
        Image.fromarray(transparent(page, hidden=hidden), "RGBA").save(path)
    elif kind == "la":
        Image.fromarray(np.stack([np.zeros_like(page), 255 - page], axis=-1), "LA").save(path)
    elif kind == "palette":
        image = Image.fromarray((page == 0).astype(np.uint8), "P")      # 0 paper, 1 ink
        image.putpalette([0, 0, 0, 0, 0, 0])                             # both black ...
        image.save(path, transparency=0)                                 # ... paper clear
    else:
        Image.fromarray(np.where(page == 0, 0, 77).astype(np.uint8), "L").save(
            path, transparency=77)
    assert np.array_equal(grey(path), page)


def test_light_letters_on_a_clear_background_read_as_light_on_black(tmp_path):
    page = letters_page()
    path = tmp_path / "chalk.png"
    Image.fromarray(transparent(page, ink=(255, 255, 255), hidden=(255, 255, 255)),
                    "RGBA").save(path)
    assert np.array_equal(grey(path), 255 - page)
    gray = photo.as_gray(grey(path).astype(np.float32))        # the reader turns it around
    assert np.array_equal(gray, page.astype(np.float32))


def test_letters_found_in_a_transparent_picture_match_the_plain_one(tmp_path):
    page = letters_page()
    plain, clear = tmp_path / "plain.png", tmp_path / "clear.png"
    Image.fromarray(page).save(plain)
    Image.fromarray(transparent(page), "RGBA").save(clear)
    boxes = [[x.box for x in photo.find_letter_details(grey(p).astype(np.float32))]
             for p in (plain, clear)]
    assert len(boxes[0]) == 2 and boxes[0] == boxes[1]


@pytest.mark.parametrize("kind", ["16-bit png", "32-bit tiff", "float tiff 0..1",
                                  "float tiff 0..255"])
def test_deep_grey_is_scaled_not_clipped(tmp_path, kind):
    page = letters_page()
    if kind == "16-bit png":
        path, image = tmp_path / "deep.png", Image.fromarray(page.astype(np.uint16) * 257)
    elif kind == "32-bit tiff":
        path, image = tmp_path / "deep.tif", Image.fromarray(page.astype(np.int32) * 257)
    elif kind == "float tiff 0..1":
        path, image = tmp_path / "deep.tif", Image.fromarray(page.astype(np.float32) / 255)
    else:
        path, image = tmp_path / "deep.tif", Image.fromarray(page.astype(np.float32))
    image.save(path)
    assert np.array_equal(grey(path), page)


def png_header_only(path, width, height, colour_type=2):
    """A PNG that claims a size (its IHDR) and holds almost no data."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("colour_type, what", [(2, "RGB"), (3, "P")])
def test_pictures_too_large_are_refused_before_decoding(tmp_path, colour_type, what):
    path = png_header_only(tmp_path / "huge.png", 12000, 12000, colour_type)
    with pytest.raises(DataError, match=f"too large to read \\(12000 x 12000 pixels, {what}\\)"):
        open_picture(path)


@given(prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM",
                               b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBP", b"P5\n",
                               b"%!PS-Adobe-3.0 EPSF-3.0\n", b"%PDF-1.4\n"]),
       body=st.binary(max_size=300))
def test_random_bytes_give_a_picture_or_one_line(tmp_path_factory, prefix, body):
    path = tmp_path_factory.mktemp("bytes") / "random.png"
    path.write_bytes(prefix + body)
    try:
        image = open_picture(path)
    except DataError as exc:
        assert_one_line_exception(exc, str(path))
    else:
        assert image.mode == "L" and max(image.size) <= 2048


# --- saving -----------------------------------------------------------------------------------

def test_save_picture_is_atomic_and_names_the_file(tmp_path, monkeypatch):
    out = tmp_path / "read.png"
    out.write_bytes(b"the previous picture")
    picture = Image.fromarray(letters_page())

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    with pytest.raises(DataError, match=f"cannot write {out}: No space left on device"):
        save_picture(picture, out)
    assert out.read_bytes() == b"the previous picture"
    assert [p.name for p in tmp_path.iterdir()] == ["read.png"]
    monkeypatch.undo()
    save_picture(picture.convert("RGBA"), tmp_path / "read.jpg")
    assert Image.open(tmp_path / "read.jpg").format == "JPEG"


@pytest.mark.parametrize("name, fragment", [("read.eps", "name the picture .png"),
                                            ("pipe.png", "not an ordinary file")])
def test_save_picture_refuses(tmp_path, name, fragment):
    if name == "pipe.png":
        os.mkfifo(tmp_path / name)
    with pytest.raises(DataError, match=fragment):
        save_picture(Image.fromarray(letters_page()), tmp_path / name)
