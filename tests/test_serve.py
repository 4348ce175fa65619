"""microconv serve without a browser: the JSON API, bad uploads, many requests at once, and
the command itself."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, untrained_checkpoint
from PIL import Image
from servetools import (  # noqa: F401 - module_pad_server is the pad_server fixture
    TEXT,
    module_pad_server,
    pad_picture,
    png,
    reader_checkpoint,
    request,
    sample_letter,
    strokes_of,
    text_photo,
)

from microconv.cli import serve
from microconv.letters import pages, photo, synth
from microconv.letters.checkpoint import load_checkpoint

PAGE_IN_COLOUR = 33     # a tuning page whose reading depends on the ink's colour


@pytest.fixture(scope="module")
def drawn():
    """The pad's PNG of a letter of the test split, drawn stroke by stroke, and the letter."""
    image, letter = sample_letter()
    return pad_picture(strokes_of(image)), letter


# ---------------------------------------------------------------------------- reading a letter

def test_letter_answer_is_what_predict_reads_with_every_layer(pad_server, drawn, tmp_path):
    url, reader, trained = pad_server
    picture, letter = drawn
    status, answer = request(url + "api/letter", "POST", picture, "image/png")
    assert status == 200, answer
    # the same picture through `microconv predict`'s reader: same letter, same top-3
    path = tmp_path / "letter.png"
    path.write_bytes(picture)
    (expected,) = photo.read_letters(reader.classifier, path)
    assert answer["letter"] == expected["letter"]
    assert [x for x, _ in answer["top3"]] == [x for x, _ in expected["top3"]]
    assert np.allclose([p for _, p in answer["top3"]], [p for _, p in expected["top3"]],
                       atol=1e-4)
    if trained:
        assert answer["letter"] == letter
    # the input exactly as the network receives it: predict's preparation, then preprocessing
    gray = photo.read_image(path)
    prepared = photo.letter_images(gray, photo.find_letter_details(gray))
    network_input = reader.classifier.preprocess(prepared)[0, 0]
    assert np.allclose(answer["input"], network_input, atol=1e-4)
    # what each layer sees: the three blocks' maps and the 26 scores before the softmax
    assert [np.shape(block) for block in answer["blocks"]] == [(32, 13, 13), (64, 6, 6),
                                                               (128, 2, 2)]
    scores = np.array(answer["scores"])
    assert scores.shape == (26,)
    # the scores are the network's on the letter as it is (the answer averages shifted views)
    once = reader.classifier.predict(prepared)[0]
    assert np.allclose(scores - scores.max(), once - once.max(), atol=1e-3)


def test_a_letter_runs_the_network_once_on_every_view(drawn, tmp_path, monkeypatch):
    reader = serve.LetterReader(load_checkpoint(untrained_checkpoint(tmp_path)))
    expected = reader.read_letter(drawn[0])
    fed, feed = [], reader._graph.feed

    def counted_feed(views):
        fed.append(len(views))
        feed(views)

    monkeypatch.setattr(reader._graph, "feed", counted_feed)
    monkeypatch.setattr(reader.classifier, "predict", None)        # no second run
    assert reader.read_letter(drawn[0]) == expected
    assert fed == [len(photo.READ_SHIFTS)]
    letter = serve.drawn_letter(photo.read_image(io.BytesIO(drawn[0])))[None]
    monkeypatch.undo()
    ranked = photo.top_letters(photo.read_prepared(reader.classifier, letter)[0])
    assert [x for x, _ in expected["top3"]] == [x for x, _ in ranked]
    assert np.allclose([p for _, p in expected["top3"]], [p for _, p in ranked], atol=1e-5)


def test_a_letter_in_pieces_is_read_as_one(pad_server):
    url, _, _ = pad_server
    # a k whose arms do not touch its stem, 114 x 199 pixels of ink: the photo reader sees two
    # letters (the stem, 9 pixels wide, and the arms, 84)
    picture = pad_picture([[(80, 30), (80, 220)], [(180, 40), (110, 125)],
                           [(115, 135), (185, 220)]])
    assert len(photo.find_letters(photo.read_image(io.BytesIO(picture)))) == 2
    status, answer = request(url + "api/letter", "POST", picture, "image/png")
    assert status == 200, answer
    seen = np.array(answer["input"])
    rows, cols = np.nonzero(seen > seen.min() + 0.2 * (seen.max() - seen.min()))
    width, height = np.ptp(cols) + 1, np.ptp(rows) + 1
    assert 0.5 < width / height < 0.65                 # the whole k: 114 / 199 = 0.57


def test_an_empty_pad_is_a_clear_error(pad_server):
    url, _, _ = pad_server
    status, answer = request(url + "api/letter", "POST", pad_picture([]), "image/png")
    assert status == 422 and "nothing to read" in answer["error"]
    specks = np.full((256, 256), 255, np.uint8)
    specks[100:102, 100:102] = 0                     # a speck is not a letter
    status, answer = request(url + "api/letter", "POST", png(specks), "image/png")
    assert status == 422 and answer["error"].startswith("the picture: no letter found")


# ---------------------------------------------------------------------------- reading a photo

def test_photo_answer_has_boxes_lines_and_text(pad_server):
    url, _, trained = pad_server
    picture = text_photo(TEXT)
    status, answer = request(url + "api/photo", "POST", picture, "image/png")
    assert status == 200, answer
    assert (answer["width"], answer["height"]) == Image.open(io.BytesIO(picture)).size
    letters = answer["letters"]
    assert len(letters) == len("".join(TEXT.split()))
    assert [x["line"] for x in letters] == [0, 0, 0, 1, 1]
    assert [x["word"] for x in letters] == [0, 0, 1, 0, 0]
    for line in (0, 1):
        lefts = [x["box"][0] for x in letters if x["line"] == line]
        assert lefts == sorted(lefts)
    assert answer["text"] == photo.text_of(letters)
    assert answer["lines"] == answer["text"].split("\n")
    if trained:
        assert answer["text"] == TEXT


def test_photo_answer_is_what_predict_reports(pad_server, tmp_path):
    url, _, _ = pad_server
    # red ink on paper with coloured speckles, in lines and words: read without its colours,
    # this page gives other letters (a speck joins a letter as if it were its dot)
    page = pages.make_page(PAGE_IN_COLOUR)
    path = tmp_path / "page.png"
    page.image.save(path)
    gray, colour = photo.read_photo(path)
    in_grey = [x.ink_box for x in photo.find_letter_details(gray)]
    assert in_grey != [x.ink_box for x in photo.find_letter_details(gray, colour)]
    status, answer = request(url + "api/photo", "POST", path.read_bytes(), "image/png")
    assert status == 200, answer
    result = cli("predict", reader_checkpoint(tmp_path)[0], path, "--json")
    assert result.exit_code == 0, result.output
    (expected,) = json.loads(result.stdout)["images"]
    assert expected.pop("image") == str(path)
    assert "\n" in answer["text"] and " " in answer["text"]
    # the server runs the network on one BLAS thread, predict on all: the last bits may differ
    probabilities = []
    for reading in (answer, expected):
        probabilities.append([[p for _, p in x["top3"]] for x in reading["letters"]])
        for x in reading["letters"]:
            x["top3"] = [letter for letter, _ in x["top3"]]
    assert np.allclose(*probabilities, atol=1e-5)
    assert answer == expected


# ---------------------------------------------------------------------------- bad requests

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json",
                                          "multipart/form-data; boundary=x",
                                          "application/octet-stream"])
def test_only_image_content_types_are_taken(pad_server, drawn, content_type):
    url, _, _ = pad_server
    for endpoint in ("api/letter", "api/photo"):
        status, answer = request(url + endpoint, "POST", drawn[0], content_type)
        assert status == 415
        assert "image Content-Type" in answer["error"] and "\n" not in answer["error"]


@pytest.mark.parametrize("body, reason", [
    (b"", "empty"),
    (b"not a picture at all", "not a picture in a format microconv reads"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cannot read image"),          # a damaged PNG
])
def test_what_is_not_a_picture_gets_a_4xx_with_a_reason(pad_server, body, reason):
    url, _, _ = pad_server
    for endpoint in ("api/letter", "api/photo"):
        status, answer = request(url + endpoint, "POST", body, "image/png")
        assert 400 <= status < 500 and reason in answer["error"], answer


def test_uploads_over_the_limit_get_413(pad_server):
    url, _, _ = pad_server
    big = os.urandom(20 * 2**20)
    status, answer = request(url + "api/photo", "POST", big, "image/jpeg")
    assert status == 413 and "limit" in answer["error"]
    # without a Content-Length the server counts while reading
    chunks = (big[i:i + 2**20] for i in range(0, len(big), 2**20))
    status, answer = request(url + "api/photo", "POST", chunks, "image/jpeg", chunked=True)
    assert status == 413 and "limit" in answer["error"]


def huge_png(width, height):
    """A small PNG file whose header claims width x height grey pixels."""
    data = png(np.zeros((8, 8), np.uint8))
    header = struct.pack(">II", width, height) + data[24:29]
    chunk = b"IHDR" + header
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def test_pictures_of_huge_dimensions_are_refused(pad_server):
    url, _, _ = pad_server
    for endpoint in ("api/letter", "api/photo"):
        status, answer = request(url + endpoint, "POST", huge_png(60_000, 60_000), "image/png")
        assert status == 422 and "cannot read image" in answer["error"], answer
        status, answer = request(url + endpoint, "POST", huge_png(13_000, 13_000), "image/png")
        assert status == 422 and "too large" in answer["error"], answer


def test_a_crash_in_one_request_answers_500_and_the_server_goes_on(pad_server, drawn,
                                                                   monkeypatch):
    url, _, _ = pad_server

    def broken(gray):
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(serve, "drawn_letter", broken)
    status, answer = request(url + "api/letter", "POST", drawn[0], "image/png")
    assert status == 500
    assert answer["error"] == "internal error (RuntimeError: a bug over two lines)"
    monkeypatch.undo()
    assert request(url + "api/letter", "POST", drawn[0], "image/png")[0] == 200


def test_unknown_paths_and_methods_answer_json(pad_server):
    url, _, _ = pad_server
    assert request(url + "api/nothing-here") == (404, {"error": "Not Found"})
    assert request(url + "api/letter") == (405, {"error": "Method Not Allowed"})


# ---------------------------------------------------------------------------- many at once

@pytest.fixture
def rapid_thread_switches():
    """Python switches threads every 10 microseconds instead of every 5 ms, so requests that
    share something without a lock are very likely to mix it up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(interval)


def test_fifty_requests_at_once_are_all_answered_each_with_its_own_letter(
        pad_server, rapid_thread_switches):
    url, reader, _ = pad_server
    images, _ = synth.generate(6, seed=2)
    pictures = [pad_picture(strokes_of(image)) for image in images]
    alone = [reader.read_letter(picture)["scores"] for picture in pictures]
    jobs = [i % len(pictures) for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(
            lambda i: request(url + "api/letter", "POST", pictures[i], "image/png"), jobs))
    assert [status for status, _ in answers] == [200] * len(jobs)
    mixed = [i for i, (_, answer) in zip(jobs, answers)
             if not np.allclose(answer["scores"], alone[i], atol=1e-4)]
    assert mixed == []


# ---------------------------------------------------------------------------- the page

def test_the_page_and_its_files_are_served_and_fetch_nothing_from_elsewhere(pad_server):
    url, _, _ = pad_server
    for name in ("", "static/style.css", "static/pad.js"):
        with urllib.request.urlopen(url + name) as response:
            text = response.read().decode()
        assert response.status == 200 and text
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    status, info = request(url + "api/info")
    assert status == 200 and info["letters"] == list(photo.LETTERS)
    assert info["max_upload_bytes"] == serve.MAX_UPLOAD_BYTES


# ---------------------------------------------------------------------------- the command

def test_serve_prints_the_address_and_serves_until_ctrl_c(tmp_path):
    path = untrained_checkpoint(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", "from microconv.cli import main; main()", "serve", str(path),
         "--port", "0", "--backend", "python"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line + process.stderr.read()
        url = line[line.index("http://"):].split()[0]
        status, info = request(url + "api/info")
        assert status == 200 and info["checkpoint"] == str(path)
        assert info["backend"].startswith("pure Python")      # the backend asked for
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode in (0, 130)


def test_serve_without_the_web_extra_says_how_to_get_it(tmp_path):
    # as if starlette were not installed: an import of it fails
    code = ("import sys; sys.modules['starlette'] = None; "
            "from microconv.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, "serve", "model.npz"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and 'pip install "microconv[web]"' in message


def test_serve_on_a_busy_port_is_a_one_line_error(tmp_path):
    # the other mistakes (checkpoint, host, device) are in test_reliability_cli's table
    path = untrained_checkpoint(tmp_path)
    with serve.listen("127.0.0.1", 0) as busy:
        port = busy.getsockname()[1]
        assert_one_line_error(cli("serve", path, "--port", port),
                              f"cannot listen on 127.0.0.1:{port}")


