"""Evaluation numbers on a tiny case worked out by hand."""

import numpy as np
import pytest

from microconv.errors import DataError
from microconv.letters.evaluate import evaluate, most_confused, scores


class LookupClassifier:
    """Answers with fixed best and second-best guesses for known images; any other image
    (a perturbed one) is read as 'A'."""

    header = {}

    def __init__(self, images, guesses):
        self.answers = {img.tobytes(): g for img, g in zip(images, guesses)}

    def predict(self, images):
        out = np.full((len(images), 26), -10.0)
        for n, img in enumerate(images):
            best, second = self.answers.get(img.tobytes(), (0, 1))
            out[n, best], out[n, second] = -0.1, -1.0
        return out


def test_hand_worked_case():
    images = np.stack([np.full((28, 28), 10 * i, np.uint8) for i in range(6)])
    labels = np.array([0, 0, 1, 1, 2, 2])
    # (best, second) per image:  right, top-2 only, right, right, right, wrong twice
    guesses = [(0, 5), (1, 0), (1, 3), (1, 2), (2, 0), (0, 1)]
    result = evaluate(LookupClassifier(images, guesses), images, labels)
    assert result["count"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["top2_accuracy"] == pytest.approx(5 / 6)
    # Every perturbed image is unknown to the lookup, so it is read as A: right for 2 of 6.
    assert result["perturbed_accuracy"] == pytest.approx(2 / 6)
    assert result["per_class"]["A"] == 0.5 and result["per_class"]["B"] == 1.0
    assert result["per_class"]["C"] == 0.5 and result["per_class"]["D"] is None
    confusion = np.array(result["confusion"])
    assert confusion.shape == (26, 26) and confusion.sum() == 6
    assert confusion[0, 1] == 1 and confusion[2, 0] == 1 and confusion[1, 1] == 2
    assert result["most_confused"] == [["A", "B", 1], ["C", "A", 1]]
    assert result["loss"] == pytest.approx(-np.mean([-0.1, -1.0, -0.1, -0.1, -0.1, -10.0]))


def test_scores_and_most_confused():
    log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]]))
    result = scores(log_probs, [0, 1, 1])
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["top2_accuracy"] == pytest.approx(1.0)
    matrix = np.array([[5, 3, 0], [0, 5, 1], [4, 0, 5]])
    assert most_confused(matrix, top=2) == [(2, 0, 4), (0, 1, 3)]


def test_bad_input_is_refused():
    images = np.zeros((2, 28, 28), np.uint8)
    classifier = LookupClassifier(images, [(0, 1), (0, 1)])
    with pytest.raises(DataError, match="2 images but 3 labels"):
        evaluate(classifier, images, [0, 1, 2])
    with pytest.raises(DataError, match="empty"):
        evaluate(classifier, images[:0], [])
    with pytest.raises(DataError, match="uint8"):
        evaluate(classifier, images.astype(np.float32), [0, 1])
    with pytest.raises(DataError, match="0..25"):
        evaluate(classifier, images, [0, 26])
