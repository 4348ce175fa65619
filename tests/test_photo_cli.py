"""`microconv predict` on page photos: the text by lines, each letter's line in JSON, and
--save-letters, which files each letter found as a picture under the letter read."""

import errno
import io
import json
import os

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, untrained_checkpoint
from PIL import Image

from microconv.errors import DataError
from microconv.letters import pages, photo
from microconv.letters.checkpoint import load_checkpoint, write_atomically


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    # an untrained network: these tests are about the layout of what predict gives, not
    # about reading the letters right
    return untrained_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    page = pages.make_page(0)                         # 4 lines of words
    path = tmp_path_factory.mktemp("page") / "page.png"
    page.image.save(path)
    return page, path


def test_json_gives_the_lines_and_each_letters_line(model_file, page_file):
    page, path = page_file
    result = cli("predict", model_file, path, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["images"][0]
    letters = found["letters"]
    assert len(letters) == len(page.letters)
    assert found["lines"] == found["text"].split("\n")
    assert len(found["lines"]) == page.text.count("\n") + 1
    assert [len(line.split(" ")) for line in found["lines"]] == [
        len(line.split(" ")) for line in page.text.split("\n")]
    assert [letter["line"] for letter in letters] == page.lines
    for letter in letters:
        left, top, right, bottom = letter["ink_box"]
        frame = letter["box"]
        assert frame[0] <= left < right <= frame[2] and frame[1] <= top < bottom <= frame[3]
    assert "".join(found["text"].split()) == "".join(x["letter"] for x in letters)


def test_the_text_output_shows_the_lines(model_file, page_file):
    _, path = page_file
    found = json.loads(cli("predict", model_file, path, "--json").stdout)["images"][0]
    result = cli("predict", model_file, path)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    header = next(i for i, line in enumerate(out) if f"read {len(found['lines'])} lines" in line)
    shown = [line.strip() for line in out[header + 1:header + 1 + len(found["lines"])]]
    assert shown == found["lines"]                           # top line first


def test_save_letters_files_each_letter_under_its_guess_and_never_overwrites(
        model_file, page_file, tmp_path):
    page, path = page_file
    folder = tmp_path / "letters"
    result = cli("predict", model_file, path, "--save-letters", folder, "--json")
    assert result.exit_code == 0, result.output
    letters = json.loads(result.stdout)["images"][0]["letters"]
    saved = sorted(folder.rglob("*.png"))
    assert len(saved) == len(letters) == len(page.letters)
    for number, letter in enumerate(letters, 1):
        expected = folder / letter["letter"] / f"page-{number}.png"
        assert letter["saved"] == str(expected) and expected.exists()
    # each picture, read back the way predict reads a picture, holds exactly one letter
    for picture in saved[:12]:
        assert len(photo.find_letter_details(Image.open(picture).convert("RGB"))) == 1
    before = {p: p.read_bytes() for p in saved}
    again = cli("predict", model_file, path, "--save-letters", folder)
    assert again.exit_code == 0, again.output
    assert f"{len(letters)} letter pictures saved" in " ".join(again.stdout.split())
    assert all(p.read_bytes() == content for p, content in before.items())   # untouched
    after = sorted(folder.rglob("*.png"))
    assert len(after) == 2 * len(letters)
    assert {p.name for p in after} - {p.name for p in saved} == {
        f"page-{n}-2.png" for n in range(1, len(letters) + 1)}
    assert not list(folder.rglob(".tmp-*"))                   # no half-written leftovers


def test_save_letters_into_a_file_is_refused_and_the_file_kept(model_file, page_file,
                                                                 tmp_path):
    _, path = page_file
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    usage = cli("predict", model_file, path, "--save-letters", not_a_folder)
    assert usage.exit_code == 2 and "Traceback" not in usage.output      # a usage mistake
    assert "is a file" in " ".join(usage.stderr.split())
    assert_one_line_error(cli("predict", model_file, path, "--save-letters",
                              not_a_folder / "letters"), "cannot create folder", "notes.txt")
    assert not_a_folder.read_text() == "mine"


def test_a_photo_of_paper_without_ink(model_file, tmp_path):
    """Shaded, speckled coloured paper with no writing: one line that says so, nothing
    saved; a picture of one flat colour: one clear error."""
    page = pages.make_page(20)
    paper = np.asarray(page.image)[max(box[3] for box in page.boxes) + 20:]
    path = tmp_path / "paper.png"
    Image.fromarray(paper).save(path)
    folder = tmp_path / "letters"
    result = cli("predict", model_file, path, "--save-letters", folder)
    assert result.exit_code == 0, result.output
    assert "paper.png: no letters found" in " ".join(result.stdout.split())
    assert not list(folder.rglob("*.png"))
    found = json.loads(cli("predict", model_file, path, "--json").stdout)["images"][0]
    assert found["letters"] == [] and found["lines"] == [] and found["text"] == ""
    flat = tmp_path / "flat.png"
    Image.new("RGB", (300, 200), (200, 220, 240)).save(flat)
    assert_one_line_error(cli("predict", model_file, flat), "flat.png", "nothing to read")


def test_a_new_file_is_linked_into_place_never_over_an_existing_one(tmp_path):
    existing = tmp_path / "a.png"
    existing.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        write_atomically(existing, lambda f: f.write(b"new"), replace=False)
    assert existing.read_bytes() == b"mine"
    write_atomically(tmp_path / "b.png", lambda f: f.write(b"new"), replace=False)
    assert (tmp_path / "b.png").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_a_disk_full_while_saving_letters_leaves_no_half_written_picture(
        model_file, page_file, tmp_path, monkeypatch):
    _, path = page_file

    def full(self, file, *args, **kwargs):
        file.write(b"\x89PNG" + bytes(100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full)
    folder = tmp_path / "letters"
    with pytest.raises(DataError, match="cannot write .*page-1.png"):
        photo.read_letters(load_checkpoint(model_file), path, save_to=folder)
    assert [p for p in folder.rglob("*") if p.is_file()] == []


def test_a_photo_in_memory_reads_like_the_file(model_file, page_file):
    _, path = page_file
    classifier = load_checkpoint(model_file)
    from_file = photo.read_letters(classifier, path)
    in_memory = photo.read_letters(classifier, io.BytesIO(path.read_bytes()))
    assert in_memory == from_file
    gray, colour = photo.read_photo(path)
    assert photo.classify_letters(classifier, gray, colour=colour) == from_file


def test_the_page_benchmark_feeds_the_network_the_data_set_image_of_each_letter_found(
        monkeypatch):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "photo_accuracy", Path(__file__).parents[1] / "benchmarks" / "photo_accuracy.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    images, labels = pages.letter_pool(None, "tune")
    label_of = {image.tobytes(): label for image, label in zip(images, labels)}

    class KnowsThePool:
        """Reads a pool image (unmoved) as its true letter, anything else as no letter."""
        def predict(self, batch):
            scores = np.zeros((len(batch), 26))
            for row, image in zip(scores, batch):
                if image.tobytes() in label_of:
                    row[label_of[image.tobytes()]] = 50.0
            return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))

    monkeypatch.setattr(benchmark, "load_checkpoint", lambda path: KnowsThePool())
    total = benchmark.measure(["oracle"], "tune", 1)["checkpoints"]["oracle"]["total"]
    assert total["boxes_matched"] > 20
    assert total["network_accuracy_direct"] == 1.0        # the right image of every letter
    assert total["network_accuracy"] < 0.5                # the photo's letters are not those
