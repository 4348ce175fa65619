"""Image-folder data sets (people's own letters): the layouts, predict's preparation, clear
errors for bad folders, and fine-tuning on them that reads the same hand better afterwards."""

import json
import string

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, untrained_checkpoint
from PIL import Image, ImageDraw

from microconv.errors import DataError
from microconv.letters import folders, photo, synth
from microconv.letters.checkpoint import load_checkpoint
from microconv.letters.data import load_split
from microconv.letters.training import TrainConfig, train


def save_pictures(folder, images, labels, seed, names=string.ascii_lowercase):
    """Each letter photographed on its own (synth.photograph) into folder/<letter>/."""
    rng = np.random.default_rng(seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synth.photograph([image], rng, side=int(rng.integers(36, 64)))).save(
            target / f"{seed}-{i:03d}.png")
    return folder


def letter_picture(path, strokes=((20, 20, 20, 70),), size=(90, 90)):
    """A small grey picture with dark pen strokes (x0, y0, x1, y1)."""
    image = Image.new("L", size, 200)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        pen.line(stroke, fill=30, width=5)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# --- layouts -----------------------------------------------------------------------------------

def test_a_pool_keeps_every_fifth_picture_of_a_letter_for_testing(tmp_path):
    for i in range(7):
        letter_picture(tmp_path / "l" / f"{i}.png")
    letter_picture(tmp_path / "L" / "big.jpg", size=(300, 200))      # any size, any format
    letter_picture(tmp_path / "x" / "1.png", ((20, 20, 70, 70), (70, 20, 20, 70)))
    (tmp_path / "l" / ".DS_Store").write_bytes(b"\0junk")             # hidden: skipped
    (tmp_path / "README.txt").write_text("my letters")                # beside the folders
    train_paths, train_labels = folders.picture_files(tmp_path, "train")
    test_paths, test_labels = folders.picture_files(tmp_path, "test")
    assert len(train_paths) == 8 and len(test_paths) == 1              # l/ and L/: one class
    assert set(train_labels) == {11, 23} and set(test_labels) == {11}
    assert not set(train_paths) & set(test_paths)
    images, labels = load_split(tmp_path, "train")
    assert images.shape == (8, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == train_labels.tolist()


def test_train_and_test_folders_are_the_two_splits(tmp_path):
    letter_picture(tmp_path / "train" / "a" / "1.png")
    letter_picture(tmp_path / "train" / "b" / "1.png")
    letter_picture(tmp_path / "test" / "b" / "2.png")
    assert folders.picture_files(tmp_path, "train")[1].tolist() == [0, 1]
    assert folders.picture_files(tmp_path, "test")[1].tolist() == [1]


def test_a_picture_is_prepared_as_predict_prepares_one_letter(tmp_path):
    path = letter_picture(tmp_path / "k.png", ((20, 10, 20, 80), (20, 50, 60, 15),
                                               (28, 45, 62, 80)))
    gray = photo.read_image(path)
    expected = photo.letter_images(gray, photo.find_letter_details(gray))[0]
    np.testing.assert_array_equal(folders.prepare_picture(path), expected)


def test_pieces_of_one_letter_are_prepared_together(tmp_path):
    # Two strokes far apart: predict would see two letters; in a letter's folder it is one.
    path = letter_picture(tmp_path / "two.png", ((15, 20, 15, 70), (75, 20, 75, 70)))
    assert len(photo.find_letter_details(photo.read_image(path))) == 2
    image = folders.prepare_picture(path)
    columns = np.flatnonzero(image.max(axis=0) > 128)
    assert columns.max() - columns.min() > 14          # both strokes, side by side


# --- bad folders: one clear line -----------------------------------------------------------------

def bad_folder(tmp_path, problem):
    root = tmp_path / "letters"
    for i in range(5):
        letter_picture(root / "a" / f"{i}.png")
    if problem == "empty":
        (root / "b").mkdir()
    elif problem == "not a picture":
        (root / "a" / "notes.txt").write_text("not a picture")
    elif problem == "no ink":
        Image.new("RGB", (60, 60), (200, 190, 180)).save(root / "a" / "blank.png")
    elif problem == "faint":
        picture = np.full((60, 60), 200, np.uint8)
        picture[20:40, 30] = 190                                       # barely darker
        Image.fromarray(picture).save(root / "a" / "faint.png")
    elif problem == "odd name":
        letter_picture(root / "ab" / "1.png")
    return root


@pytest.mark.parametrize("problem, fragments", [
    ("empty", ["letters/b is empty"]),
    ("not a picture", ["notes.txt", "cannot read image"]),
    ("no ink", ["blank.png", "uniform"]),
    ("faint", ["faint.png", "no letter found"]),
    ("odd name", ["letters/ab", "one letter"]),
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_folder_is_one_clear_line(tmp_path, problem, fragments, command):
    root = bad_folder(tmp_path, problem)
    if command == "train":
        args = ["train", "--data-dir", root, "--out", tmp_path / "m.npz", "--no-dashboard"]
    else:
        args = ["evaluate", untrained_checkpoint(tmp_path), "--data-dir", root]
    assert_one_line_error(cli(*args), *fragments)


def test_a_folder_without_letters_or_emnist_files_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="neither EMNIST letters files .* nor one folder"):
        load_split(tmp_path, "train")
