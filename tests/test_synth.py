"""Generated letters: the right format, deterministic, upright, and readable by the IDX reader."""

import numpy as np
import pytest
from scipy import ndimage
from clitools import no_emnist_env, set_env

from microconv.errors import DataError, TrainingError
from microconv.letters import data, photo, synth
from microconv.letters.training import TrainConfig, load_data


def test_generated_letters_look_like_emnist():
    images, labels = data.generated_letters(130, seed=5)
    assert images.shape == (130, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [5] * 26
    # Ink bright on black, framed with a dark border like EMNIST, about EMNIST's mean brightness.
    assert images[:, :, 0].mean() < 20 and images[:, 0, :].mean() < 20
    assert images.max(axis=(1, 2)).min() > 150
    assert 0.08 < images.mean() / 255 < 0.3


def test_same_seed_same_letters_other_seed_other_letters():
    a = data.generated_letters(26, seed=1)
    b = data.generated_letters(26, seed=1)
    c = data.generated_letters(26, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_generated_letters_are_upright():
    # Mean 'I' is a vertical bar; the orientation check must agree.
    images, labels = data.generated_letters(26 * 8, seed=3)
    assert data.orientation_check(images, labels)[0] == "upright"


def test_every_letter_has_a_skeleton_and_varies():
    rng = np.random.default_rng(0)
    for index in range(26):
        first, second = synth.draw_letter(index, rng), synth.draw_letter(index, rng)
        assert first.any() and not np.array_equal(first, second)


def test_written_files_use_emnist_storage(tmp_path):
    synth.write_emnist_files(tmp_path, train_size=52, test_size=26, seed=4)
    images, labels = data.load_emnist(tmp_path, "train")
    expected_images, expected_labels = data.generated_letters(52, seed=4)
    np.testing.assert_array_equal(images, expected_images)      # stored transposed, read upright
    np.testing.assert_array_equal(labels, expected_labels)      # stored as 1..26
    raw = data.read_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte.gz")
    assert raw.min() == 1 and raw.max() == 26


def test_lower_case_forms_are_generated_for_every_letter():
    images, labels = data.generated_letters(52, seed=6, forms="lower")
    assert images.shape == (52, 28, 28) and np.bincount(labels).tolist() == [2] * 26
    assert images.max(axis=(1, 2)).min() > 150
    assert sorted(synth.LOWERCASE) == list(synth.LETTERS)
    with pytest.raises(DataError, match="unknown letter forms 'cursive'"):
        synth.generate(4, forms="cursive")


def test_lower_case_letters_are_not_capitals():
    # A capital A and the a of most hands share little ink.
    upper = synth.generate(26 * 6, 7, forms="upper")
    lower = synth.generate(26 * 6, 7, forms="lower")
    for letter in "ABDEGHNQR":
        index = synth.LETTERS.index(letter)
        a = upper[0][upper[1] == index].mean(axis=0).ravel()
        b = lower[0][lower[1] == index].mean(axis=0).ravel()
        assert np.corrcoef(a, b)[0, 1] < 0.8, letter


def test_one_writer_writes_a_letter_the_same_way_every_time():
    def spread(variant):
        images, labels = synth.generate(26 * 8, 8, forms="lower", variant=variant)
        b = images[labels == 1].reshape(8, -1).astype(np.float64)
        return np.mean([np.corrcoef(x, y)[0, 1] for i, x in enumerate(b) for y in b[i + 1:]])

    assert spread(-1) > spread(None)


def test_a_photograph_shows_dark_letters_on_paper_that_the_reader_finds():
    letters, _ = synth.generate(5, seed=9, forms="upper")
    picture = synth.photograph(letters, np.random.default_rng(1), side=60)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[0] >= 60 and picture.shape[1] > 5 * 60
    gray = picture.mean(axis=2)
    assert np.percentile(gray, 1) < np.median(gray) - 40          # ink clearly darker
    assert len(photo.find_letters(picture)) == 5


def test_the_generated_share_mixes_lower_case_letters_into_training(tmp_path, monkeypatch):
    set_env(monkeypatch, no_emnist_env(tmp_path))
    plain = load_data(TrainConfig(limit=60, batch_size=8, generated_share=0.0))
    mixed = load_data(TrainConfig(limit=60, batch_size=8, generated_share=0.25))
    # as many as an epoch shows: a quarter of the data's size (training.epoch_batches)
    assert len(plain.train_images) == 60 and len(mixed.train_images) == 75
    assert plain.generated == 0 and mixed.generated == 15
    np.testing.assert_array_equal(mixed.train_images[:60], plain.train_images)
    assert "15 generated lower-case letters" in mixed.description
    assert len(mixed.test_images) == len(plain.test_images)        # the test split is the data's
    with pytest.raises(TrainingError, match="generated_share must lie in"):
        TrainConfig(generated_share=1.0).checked()


def _pieces(image, level=100):
    """Ink pieces of a 28x28 letter, largest first: (size, top row) each."""
    labels, count = ndimage.label(image > level, np.ones((3, 3)))
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, range(1, count + 1))
    tops = [s[0].start for s in ndimage.find_objects(labels)]
    return sorted(zip(sizes.tolist(), tops), reverse=True)


def test_every_lower_case_i_has_its_dot_above_the_stem():
    # a bare stroke is a capital I or an l; the dotted i is the lower-case form
    index = synth.LETTERS.index("I")
    for variant in range(len(synth.LOWERCASE["I"])):
        dotted = 0
        for seed in range(10):
            pieces = _pieces(synth.draw_letter(index, np.random.default_rng(seed), "lower",
                                               variant))
            (_, stem_top), (dot, dot_top) = pieces[0], pieces[1] if len(pieces) > 1 else (0, 99)
            dotted += dot > 0 and dot_top < stem_top
        assert dotted >= 8, (variant, dotted)


def _holes(image, level=100):
    """Closed loops of a letter: background regions that do not reach the image's edge."""
    labels, count = ndimage.label(image <= level)
    edge = set(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]).tolist())
    return len(set(range(1, count + 1)) - edge)


def test_the_double_storey_g_has_two_closed_loops():
    index = synth.LETTERS.index("G")
    double = len(synth.LOWERCASE["G"]) - 1
    loops = [_holes(synth.draw_letter(index, np.random.default_rng(seed), "lower", double))
             for seed in range(10)]
    assert sum(n >= 2 for n in loops) >= 8, loops


def test_lower_case_letters_have_the_handwritten_datas_grey_levels():
    # the data's figures (SOURCE.md and measured on its test split): mean 0.17 and spread 0.33
    # of full ink, about 9 % of pixels solid ink and 26 % inked at all
    images = synth.generate(26 * 8, seed=11, forms="lower")[0] / 255.0
    assert 0.15 < images.mean() < 0.19 and 0.30 < images.std() < 0.35
    assert 0.06 < (images > 0.9).mean() < 0.12
    assert 0.23 < (images > 0.05).mean() < 0.30
    assert (images.max(axis=(1, 2)) == 1.0).all()
