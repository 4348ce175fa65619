"""Augmentation: each change does what it says, and an image's changes depend only on
(seed, epoch, image index), never on the batch it travels in."""

import numpy as np
import pytest

from microconv.letters import augment as aug
from microconv.letters.data import generated_letters

LETTERS, _ = generated_letters(24, seed=11)
INDICES = np.arange(100, 124)
NOTHING = aug.Augmentation(rotation=0.0, shear=0.0, scale=(1.0, 1.0), aspect=0.0, shift=0.0,
                           elastic=0.0, thickness=(0.0, 0.0), speckle_share=0.0, share=1.0)


def only(**change):
    """Settings that make just the named changes."""
    return aug.Augmentation(**{**NOTHING.__dict__, **change})


def centre_of_ink(images):
    """(N, 2) row and column of each image's ink centre."""
    weights = images.astype(np.float64)
    rows, cols = np.mgrid[0:28, 0:28]
    total = weights.sum(axis=(1, 2))
    return np.stack([(weights * rows).sum(axis=(1, 2)) / total,
                     (weights * cols).sum(axis=(1, 2)) / total], axis=1)


def test_an_image_gets_the_same_changes_in_any_batch():
    whole = aug.augment(LETTERS, seed=3, epoch=2, indices=INDICES)
    order = np.random.default_rng(0).permutation(len(LETTERS))
    # Other batches, in another order, as a second worker or a resumed run would see them.
    for part in np.array_split(order, 3):
        np.testing.assert_array_equal(aug.augment(LETTERS[part], 3, 2, INDICES[part]),
                                      whole[part])


def test_changes_differ_between_epochs_seeds_and_images():
    first = aug.augment(LETTERS, 3, 1, INDICES)
    assert not np.array_equal(first, aug.augment(LETTERS, 3, 2, INDICES))
    assert not np.array_equal(first, aug.augment(LETTERS, 4, 1, INDICES))
    same = np.repeat(LETTERS[:1], 8, axis=0)
    copies = aug.augment(same, 3, 1, np.arange(8))
    assert len({c.tobytes() for c in copies}) == 8


def test_the_random_numbers_are_uniform_and_independent_of_neighbours():
    u = aug.uniforms(0, 1, np.arange(20_000), 3)
    assert u.min() >= 0 and u.max() < 1
    assert np.allclose(u.mean(axis=0), 0.5, atol=0.01)
    assert abs(np.corrcoef(u[:-1, 0], u[1:, 0])[0, 1]) < 0.03     # index i vs i + 1
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03         # draw k vs k + 1


def test_no_change_leaves_the_letters_as_they_are():
    before = LETTERS.copy()
    np.testing.assert_array_equal(aug.augment(LETTERS, 0, 1, INDICES, NOTHING), LETTERS)
    out = aug.augment(LETTERS, 0, 1, INDICES)
    assert out.dtype == np.uint8 and out.shape == LETTERS.shape
    np.testing.assert_array_equal(LETTERS, before)                   # the data is untouched


def test_strength_scales_every_change_from_none_to_the_full_ranges():
    np.testing.assert_array_equal(
        aug.augment(LETTERS, 0, 1, INDICES, aug.DEFAULT.at_strength(0.0)), LETTERS)
    assert aug.DEFAULT.at_strength(1.0) == aug.DEFAULT
    half, full = (aug.augment(LETTERS, 0, 1, INDICES, aug.DEFAULT.at_strength(s))
                  for s in (0.5, 1.0))
    changed = [np.abs(out.astype(int) - LETTERS).sum() for out in (half, full)]
    assert 0 < changed[0] < changed[1]


def test_the_default_changes_keep_the_letter_in_its_frame():
    out = aug.augment(LETTERS, 0, 1, INDICES)
    ring = np.ones((28, 28), bool)
    ring[1:27, 1:27] = False
    on_the_edge = out[:, ring].sum(axis=1) / out.sum(axis=(1, 2), dtype=np.float64)
    assert on_the_edge.mean() < 0.04 and on_the_edge.max() < 0.2
    moved = np.abs(centre_of_ink(out) - centre_of_ink(LETTERS)).max(axis=1)
    assert moved.max() < 4.0 and moved.mean() > 0.3


def test_position_moves_the_ink_by_at_most_the_shift():
    moved = centre_of_ink(aug.augment(LETTERS, 0, 1, INDICES, only(shift=2.0)))
    offsets = np.abs(moved - centre_of_ink(LETTERS))
    assert offsets.max() < 2.6 and offsets.mean() > 0.5


@pytest.mark.parametrize("thickness, thicker", [((0.5, 1.0), True), ((-1.0, -0.5), False)])
def test_the_pen_gets_thicker_or_thinner(thickness, thicker):
    out = aug.augment(LETTERS, 0, 1, INDICES, only(thickness=thickness))
    ratio = out.astype(np.float64).sum(axis=(1, 2)) / LETTERS.astype(np.float64).sum(axis=(1, 2))
    assert (ratio > 1.15).all() if thicker else (ratio < 0.9).all()


def test_rotation_and_slant_tilt_an_upright_bar():
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 4:24, 13:15] = 255

    def tilt(settings, index):
        image = aug.augment(bar, 0, 1, [index], settings)[0].astype(np.float64)
        rows, cols = np.nonzero(image)
        return abs(np.polyfit(rows, cols, 1, w=image[rows, cols])[0])   # columns per row

    tilts = [tilt(only(rotation=12.0), i) for i in range(20)]
    assert max(tilts) < np.tan(np.radians(12.5)) and max(tilts) > np.tan(np.radians(6))
    slants = [tilt(only(shear=0.3), i) for i in range(20)]
    assert max(slants) < 0.32 and max(slants) > 0.15


def test_a_share_of_the_letters_keeps_its_shape():
    out = aug.augment(LETTERS, 0, 1, INDICES, aug.Augmentation(speckle_share=0.0, share=0.5))
    kept = (out == LETTERS).all(axis=(1, 2))
    assert 0 < kept.sum() < len(LETTERS)


def test_speckle_flips_a_few_pixels_of_the_chosen_share():
    out = aug.augment(LETTERS, 0, 1, INDICES, only(speckle_share=0.5))
    changed = (out != LETTERS).sum(axis=(1, 2))
    assert changed.max() <= 5 and 0 < (changed > 0).sum() < len(LETTERS)
    assert set(np.unique(out[out != LETTERS])) <= set(np.unique(255 - LETTERS[out != LETTERS]))
