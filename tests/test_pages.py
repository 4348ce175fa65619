"""The page photos the reader is measured on: seeded, upright letters, a truth that fits the
picture, tuning and held-out parts that share nothing, and the scoring of a reading."""

import hashlib

import numpy as np
import pytest
from optional import LETTERS_DATA, needs

from microconv.errors import DataError, MicroconvError
from microconv.letters import pages



@pytest.fixture(scope="module")
def page():
    return pages.make_page(0)                     # generated letters: no data set needed


def test_a_seed_gives_the_same_page_every_time(page):
    again = pages.make_page(0)
    assert again.text == page.text and again.boxes == page.boxes
    assert np.array_equal(np.asarray(again.image), np.asarray(page.image))
    assert pages.make_page(1).text != page.text


def test_the_truth_fits_the_text_and_the_picture(page):
    letters = page.letters
    assert letters.isalpha() and letters == letters.lower()
    assert len(page.boxes) == len(page.lines) == len(letters) >= 20
    assert max(page.lines) == page.text.count("\n") and " " in page.text
    width, height = page.image.size
    gray = np.asarray(page.image.convert("L"), dtype=np.float32)
    paper = np.median(gray)
    for left, top, right, bottom in page.boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        inside = gray[top:bottom, left:right]
        assert inside.min() < paper - 40                     # ink inside every box
    # reading order: lines go down the page, letters of a line go right
    for line in range(max(page.lines) + 1):
        lefts = [b[0] for b, n in zip(page.boxes, page.lines) if n == line]
        assert lefts == sorted(lefts)
    tops = [np.median([b[1] for b, n in zip(page.boxes, page.lines) if n == line])
            for line in range(max(page.lines) + 1)]
    assert tops == sorted(tops)


def test_letters_are_drawn_upright():
    """EMNIST files store letters transposed; the pool is upright, and so is the drawing: an
    L (stem on the left, foot at the bottom) stays an L."""
    letter_l = np.zeros((28, 28), dtype=np.uint8)
    letter_l[4:24, 6:10] = 255                                # the stem, on the left
    letter_l[20:24, 6:22] = 255                               # the foot, at the bottom
    alpha = pages._letter_alpha(letter_l, 48, "pen", np.random.default_rng(0))
    h, w = alpha.shape
    assert h > w                                              # taller than wide
    assert alpha[:, : w // 3].sum() > 2 * alpha[:, -w // 3:].sum()
    assert alpha[-h // 4:].sum() > alpha[: h // 4].sum()


def test_the_first_pages_hold_every_layout_tool_and_noise():
    styles = [pages._choose_style(seed, np.random.default_rng(seed)) for seed in range(36)]
    assert {s["layout"] for s in styles[:12]} == set(pages.LAYOUTS)
    assert {s["tool"] for s in styles[:12]} == set(pages.TOOLS)
    assert {s["noise"] for s in styles} == set(pages.NOISES)
    held_out = [pages._choose_style(seed, np.random.default_rng(seed))
                for seed in pages.HELD_OUT_SEEDS[:36]]
    assert {s["noise"] for s in held_out} == set(pages.NOISES)


def _digests(images):
    return {hashlib.sha256(image.tobytes()).hexdigest() for image in images}


@pytest.mark.parametrize("data_dir", [None, pytest.param(LETTERS_DATA, marks=needs(LETTERS_DATA))],
                         ids=["generated", "data set"])
def test_tuning_and_held_out_pages_share_no_letter(data_dir):
    folder = None if data_dir is None else str(data_dir)
    tune, tune_labels = pages.letter_pool(folder, "tune")
    held, held_labels = pages.letter_pool(folder, "held-out")
    assert not _digests(tune) & _digests(held)
    assert set(tune_labels) == set(held_labels) == set(range(26))
    assert pages.part_of(pages.TUNE_SEEDS[-1]) == "tune"
    assert pages.part_of(pages.HELD_OUT_SEEDS[0]) == "held-out"
    with pytest.raises(MicroconvError, match="unknown part"):
        pages.pages("everything", 1)


def test_a_data_folder_without_letters_is_an_error_not_generated_letters(tmp_path):
    with pytest.raises(DataError):
        pages.make_page(0, tmp_path)


def test_edit_counts_name_what_went_wrong():
    assert pages.edit_counts("abc", "abc") == (0, 0, 0)
    assert pages.edit_counts("abc", "axc") == (1, 0, 0)
    assert pages.edit_counts("abcd", "abd") == (0, 1, 0)         # a letter missed
    assert pages.edit_counts("abc", "abxc") == (0, 0, 1)         # a letter too many
    assert pages.edit_counts("", "ab") == (0, 0, 2)


def test_a_perfect_reading_scores_no_error_and_a_bad_one_is_counted(page):
    perfect = [{"ink_box": box, "line": line, "word": word, "letter": letter}
               for box, line, word, letter in zip(page.boxes, page.lines, _words(page),
                                                  page.letters)]
    score = pages.score(page, perfect)
    assert score["letter_errors"] == score["text_errors"] == 0
    assert score["reader_text_errors"] == 0 and score["boxes_matched"] == len(page.letters)
    assert score["network_right"] == len(page.letters)
    assert score["iou_sum"] == pytest.approx(len(page.letters))
    # drop the first letter, misread the second, and shift the third box off its letter
    worse = [dict(r) for r in perfect[1:]]
    worse[0]["letter"] = "z" if worse[0]["letter"] != "z" else "y"
    left, top, right, bottom = worse[1]["ink_box"]
    worse[1]["ink_box"] = (right, top, 2 * right - left, bottom)
    score = pages.score(page, worse)
    assert (score["missed"], score["substitutions"], score["spurious"]) == (1, 1, 0)
    assert score["boxes_matched"] == len(page.letters) - 2
    assert score["reader_text_errors"] == 2                     # the missing one, and "?"


def _words(page):
    """The word number, within its line, of each letter of the truth."""
    numbers = []
    for line in page.text.split("\n"):
        for word_number, word in enumerate(line.split(" ")):
            numbers += [word_number] * len(word)
    return numbers
