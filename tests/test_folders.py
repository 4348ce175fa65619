"""Image-folder data sets (people's own letters): the layouts, predict's preparation, clear
errors for bad folders, and fine-tuning on them that reads the same hand better afterwards."""

import json
import string
from pathlib import Path

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, untrained_checkpoint
from PIL import Image, ImageDraw

from microconv.errors import DataError
from microconv.letters import folders, photo, synth
from microconv.letters.checkpoint import load_checkpoint, read_checkpoint
from microconv.letters.data import load_split
from microconv.letters.training import FINE_TUNE_LR, TrainConfig, resume_config, train


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
    """Four good pictures of an a, and one problem (a bad picture sorts fifth, so it lies in
    the test split that evaluate reads as well as in the data that train reads)."""
    root = tmp_path / "letters"
    for i in range(4):
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
    ("not a picture", ["notes.txt", "not a picture"]),
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
    with pytest.raises(DataError, match="lacks EMNIST letters files .* no folder of pictures"):
        load_split(tmp_path, "train")


# --- phase 4: people's own letters teach the network their hand --------------------------------

@pytest.fixture(scope="module")
def capitals_model(tmp_path_factory):
    """A small network trained on generated capitals: it reads lower-case handwriting badly,
    as a network trained on one kind of writing reads another."""
    root = tmp_path_factory.mktemp("capitals")
    data = synth.write_emnist_files(root / "data", train_size=520, test_size=130, seed=5,
                                    forms="upper")
    model = root / "capitals.npz"
    train(TrainConfig(data_dir=str(data), epochs=3, batch_size=32, eval_every=1000,
                      validation_size=100, generated_share=0.0, out=str(model)))
    return model


def lower_case_letters(per_letter, seed):
    """Letters of one writer's hand: lower case, each letter always in the same form."""
    return synth.generate(26 * per_letter, seed, forms="lower", variant=-1)


def fine_tune(model, folder, out):
    """`microconv train --resume MODEL --data-dir FOLDER --epochs 3`, as docs/training.md
    tells a user to fine-tune on their own letters."""
    result = cli("train", "--resume", model, "--data-dir", folder, "--epochs", 3,
                 "--out", out, "--no-dashboard")
    assert result.exit_code == 0, result.output
    return result


def accuracy_on(model, folder):
    result = cli("evaluate", model, "--data-dir", folder, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["accuracy"]


@pytest.fixture(scope="module")
def my_hand(tmp_path_factory):
    """(a folder of ten pictures a letter of one hand, a folder of three other pictures a letter
    of the same hand to test on)."""
    root = tmp_path_factory.mktemp("hand")
    mine = save_pictures(root / "mine", *lower_case_letters(10, seed=21), seed=21)
    others = save_pictures(root / "others" / "test", *lower_case_letters(3, seed=22),
                           seed=22).parent
    return mine, others


def test_fine_tuning_on_ten_pictures_per_letter_reads_that_hand_better(capitals_model, my_hand,
                                                                       tmp_path):
    mine, others = my_hand
    before = accuracy_on(capitals_model, others)
    tuned = tmp_path / "tuned.npz"
    result = fine_tune(capitals_model, mine, tuned)
    assert "fine-tuning it on letter pictures" in result.output
    header = read_checkpoint(tuned)[0]               # a new run from the trained weights
    assert header["config"]["lr"] == FINE_TUNE_LR["adam"]
    assert header["progress"]["epoch"] == 4 and header["dataset"]["source"] == str(mine)
    after = accuracy_on(tuned, others)
    assert before < 0.5 and after > before + 0.15, (before, after)


def test_replaying_the_first_data_keeps_it_while_the_new_hand_is_learnt(capitals_model, my_hand,
                                                                         tmp_path):
    mine, others = my_hand
    capitals = Path(read_checkpoint(capitals_model)[0]["dataset"]["source"])
    first, new_hand = load_split(capitals, "test"), load_split(others, "test")

    def accuracies(model):
        classifier = load_checkpoint(model)
        return [float((classifier.predict(images).argmax(axis=1) == labels).mean())
                for images, labels in (first, new_hand)]

    before = accuracies(capitals_model)
    after = {}
    for share in (0.0, 0.5):
        out = tmp_path / f"{share}.npz"
        train(resume_config(capitals_model, data_dir=str(mine), epochs=2, replay_share=share,
                            out=str(out)))
        after[share] = accuracies(out)
    alone, mixed = after[0.0], after[0.5]
    assert mixed[0] > alone[0] + 0.1, (before, after)      # the capitals kept better
    assert mixed[1] > before[1] + 0.15, (before, after)    # the new hand still learnt


def photos_of_words(folder, per_letter, seed):
    """Photos of lower-case writing, 13 letters each: (paths, the text on each)."""
    images, labels = lower_case_letters(per_letter, seed)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths, texts = [], []
    for k, start in enumerate(range(0, len(labels), 13)):
        path = folder / f"page{k}.png"
        Image.fromarray(synth.photograph(images[start:start + 13], rng, side=48)).save(path)
        paths.append(path)
        texts.append("".join(string.ascii_lowercase[i] for i in labels[start:start + 13]))
    return paths, texts


def read_photos(model, photos, *options):
    result = cli("predict", model, *photos, "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["images"]


def letters_read(entry):
    """The letters read on a photo, without the spaces the reader puts at word gaps."""
    return "".join(letter["letter"] for letter in entry["letters"])


def letters_right(found, texts):
    return sum(a == b for entry, text in zip(found, texts)
               for a, b in zip(letters_read(entry), text))


def test_photograph_correct_fine_tune_read_better(capitals_model, tmp_path):
    # 1. Photograph: pages of one person's lower-case writing, read by the network, and
    #    every letter found saved under the letter it was read as (predict --save-letters).
    photos, texts = photos_of_words(tmp_path / "photos", per_letter=10, seed=31)
    letters = tmp_path / "my-letters"
    found = read_photos(capitals_model, photos, "--save-letters", letters)
    whole = [len(letters_read(entry)) == 13 for entry in found]
    assert sum(whole) >= 0.8 * len(photos)
    # 2. Correct the folders by hand: move each picture whose folder is wrong into the right
    #    one. (Pages where the reader cut a letter in two are thrown away, as a user would.)
    moved = 0
    for entry, text, is_whole in zip(found, texts, whole):
        for letter, true in zip(entry["letters"], text if is_whole else [None] * 99):
            saved = Path(letter["saved"])
            if not is_whole:
                saved.unlink()
            elif letter["letter"] != true:
                (letters / true).mkdir(exist_ok=True)
                saved.rename(letters / true / saved.name)
                moved += 1
    for folder in letters.iterdir():
        if not any(folder.iterdir()):
            folder.rmdir()                         # a guess that was always wrong
    assert moved > 0
    # 3. Fine-tune on the corrected folders.
    tuned = tmp_path / "tuned.npz"
    fine_tune(capitals_model, letters, tuned)
    # 4. New photos of the same hand are read better.
    new_photos, new_texts = photos_of_words(tmp_path / "new", per_letter=6, seed=32)
    before = letters_right(read_photos(capitals_model, new_photos), new_texts)
    after = letters_right(read_photos(tuned, new_photos), new_texts)
    assert after > before + 0.15 * len(new_photos) * 13, (before, after)
