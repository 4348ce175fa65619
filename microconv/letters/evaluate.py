"""How good is a trained network? Accuracy, top-2, per letter, confusions, and robustness.

``evaluate`` runs a Classifier over upright uint8 test images twice: as they are, and through
the seed's perturbation (a shift of up to 2 pixels and 5 flipped pixels, the robustness test
the blog is about). Top-2 counts an answer as right when the true letter is the best or the
second-best guess, as the blog does.
"""

from __future__ import annotations

import numpy as np

from microconv.engine.tensor import real_array
from microconv.errors import DataError
from microconv.letters.data import class_names as dataset_class_names
from microconv.letters.data import perturb


def scores(log_probs, labels):
    """Loss, accuracy and top-2 accuracy of (N, C) log-probabilities against int labels."""
    log_probs = np.asarray(log_probs)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "top2_accuracy": float("nan")}
    top2 = np.argsort(-log_probs, axis=1, kind="stable")[:, :2]
    return {
        "loss": float(-log_probs[np.arange(n), labels].mean()),
        "accuracy": float((top2[:, 0] == labels).mean()),
        "top2_accuracy": float((top2 == labels[:, None]).any(axis=1).mean()),
    }


def confusion_matrix(predicted, labels, classes):
    """classes x classes counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)),
              1)
    return matrix


def most_confused(matrix, top=10):
    """The largest off-diagonal entries as (true class, predicted class, count), biggest first."""
    off = np.array(matrix, dtype=np.int64, copy=True)
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = [(int(i // off.shape[1]), int(i % off.shape[1])) for i in flat]
    return [(t, p, int(off[t, p])) for t, p in pairs if off[t, p] > 0]


def evaluate(classifier, images, labels, seed=0, class_names=None):
    """Evaluate a microconv.letters.checkpoint.Classifier on upright uint8 images (N, 28, 28).

    Returns a dict: count, loss, accuracy, top2_accuracy, perturbed_accuracy,
    perturbed_top2_accuracy, per_class ({letter: accuracy}), confusion (list of lists, row =
    true letter), most_confused ([[true letter, predicted letter, count], ...]). The perturbed
    set is drawn from ``seed``, so the same seed gives the same numbers.
    """
    images = real_array(images, "evaluate", DataError)
    labels = real_array(labels, "evaluate", DataError)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"evaluate: labels must be a list of class numbers, got {labels.dtype} "
                        f"of shape {labels.shape}")
    labels = labels.astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"evaluate: expected uint8 images (N, 28, 28), got {images.dtype} "
                        f"{images.shape}")
    if len(images) != len(labels):
        raise DataError(f"evaluate: {len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError("evaluate: the test set is empty")
    if type(seed) is not int or seed < 0:
        raise DataError(f"evaluate: the seed must be an integer >= 0, not {seed!r}")
    header = getattr(classifier, "header", {}) or {}
    names = class_names or header.get("class_names") or dataset_class_names("letters")
    classes = len(names)
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"evaluate: labels must lie in 0..{classes - 1}")

    log_probs = classifier.predict(images)[:, :classes]
    clean = scores(log_probs, labels)
    predicted = log_probs.argmax(axis=1)
    perturbed_log_probs = classifier.predict(perturb(images, np.random.default_rng(seed)))
    perturbed = scores(perturbed_log_probs[:, :classes], labels)

    matrix = confusion_matrix(predicted, labels, classes)
    totals = matrix.sum(axis=1)
    per_class = {names[c]: (float(matrix[c, c] / totals[c]) if totals[c] else None)
                 for c in range(classes)}
    return {
        "count": int(len(labels)),
        "loss": clean["loss"],
        "accuracy": clean["accuracy"],
        "top2_accuracy": clean["top2_accuracy"],
        "perturbed_accuracy": perturbed["accuracy"],
        "perturbed_top2_accuracy": perturbed["top2_accuracy"],
        "per_class": per_class,
        "confusion": matrix.tolist(),
        "most_confused": [[names[t], names[p], c] for t, p, c in most_confused(matrix)],
    }
