"""Generated letters: the right format, deterministic, upright, and readable by the IDX reader."""

import numpy as np

from microconv.letters import data, synth


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
