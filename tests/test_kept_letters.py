"""Generated letters kept in the user cache: the same letters, bit for bit, without drawing."""

import shutil

import numpy as np
import pytest

from microconv.letters import data, synth


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "microconv" / "generated"


def no_drawing(*args, **kwargs):
    raise AssertionError("the letters were drawn again")


def test_kept_letters_are_the_drawn_ones_and_are_not_drawn_twice(cache, monkeypatch):
    drawn = data.generated_letters(30, 4, forms="lower")
    first = data.kept_letters(30, 4, forms="lower")
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr(synth, "generate", no_drawing)
    again = data.kept_letters(30, 4, forms="lower")
    for images, labels in (first, again):
        np.testing.assert_array_equal(images, drawn[0])
        np.testing.assert_array_equal(labels, drawn[1])
        assert images.dtype == np.uint8 and labels.dtype == np.int64
    with pytest.raises(AssertionError, match="drawn again"):
        data.kept_letters(30, 5, forms="lower")           # another seed: other letters


def test_a_changed_generator_draws_again(cache, tmp_path, monkeypatch):
    data.kept_letters(26, 1)
    changed = tmp_path / "synth.py"
    shutil.copy(synth.__file__, changed)
    with changed.open("a") as source:
        source.write("\n# a change to the drawing\n")
    monkeypatch.setattr(synth, "__file__", str(changed))
    data.kept_letters(26, 1)
    assert len(list(cache.iterdir())) == 2


def test_a_damaged_or_unwritable_cache_only_means_drawing_again(cache, tmp_path, monkeypatch):
    expected = data.generated_letters(26, 2)
    data.kept_letters(26, 2)
    (kept,) = cache.iterdir()
    kept.write_bytes(kept.read_bytes()[:100])
    for images, labels in (data.kept_letters(26, 2), data.kept_letters(26, 2)):
        np.testing.assert_array_equal(images, expected[0])
        np.testing.assert_array_equal(labels, expected[1])
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    images, _ = data.kept_letters(26, 2)
    np.testing.assert_array_equal(images, expected[0])
