"""PNG charts of a training run from the metrics database, for people who would rather look.

Three pictures: the loss over time (every batch, a smoothed line, and the validations), the
accuracy over time (running training accuracy, validation accuracy and top-2), and the final
test confusion matrix as a heatmap. matplotlib is an optional extra
(``pip install 'microconv[report]'``); without it ``write_report`` says so in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from microconv.errors import MicroconvError
from microconv.letters.checkpoint import check_outputs, write_atomically
from microconv.letters.metrics import read_run

SMOOTHING = 50          # batches in the moving average drawn over the raw loss


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MicroconvError("microconv report draws with matplotlib, which is not installed: "
                             "pip install 'microconv[report]' (or pip install matplotlib)"
                             ) from None
    matplotlib.use("Agg")            # files only, never a window
    import matplotlib.pyplot as plt
    return plt


def moving_average(values, window=SMOOTHING):
    """The mean of each value and up to window-1 before it (same length as values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _time_axis(rows):
    return np.array([r["elapsed_s"] for r in rows], dtype=np.float64) / 60.0


def loss_chart(plt, run, path):
    figure, axes = plt.subplots(figsize=(8, 4.5))
    batches = run["batches"]
    if batches:
        minutes = _time_axis(batches)
        losses = [r["loss"] for r in batches]
        axes.plot(minutes, losses, color="#9ecae1", linewidth=0.6, label="batch loss")
        axes.plot(minutes, moving_average(losses), color="#08519c", linewidth=1.5,
                  label=f"mean of last {SMOOTHING} batches")
    if run["validations"]:
        axes.plot(_time_axis(run["validations"]), [v["loss"] for v in run["validations"]],
                  "o-", color="#d94801", markersize=3, label="validation loss")
    axes.set_xlabel("minutes")
    axes.set_ylabel("loss (negative log-likelihood)")
    axes.set_title("Loss over the run")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def accuracy_chart(plt, run, path):
    figure, axes = plt.subplots(figsize=(8, 4.5))
    batches = run["batches"]
    if batches:
        axes.plot(_time_axis(batches), moving_average([r["accuracy"] for r in batches]),
                  color="#08519c", linewidth=1.2, label=f"training (last {SMOOTHING} batches)")
    validations = run["validations"]
    if validations:
        minutes = _time_axis(validations)
        axes.plot(minutes, [v["accuracy"] for v in validations], "o-", color="#d94801",
                  markersize=3, label="validation")
        axes.plot(minutes, [v["top2_accuracy"] for v in validations], "s--", color="#fd8d3c",
                  markersize=3, label="validation top-2")
    evaluation = run["evaluation"]
    if evaluation and evaluation.get("accuracy") is not None:
        axes.axhline(evaluation["accuracy"], color="#238b45", linestyle=":",
                     label=f"test {evaluation['accuracy']:.1%}")
    axes.set_ylim(0, 1)
    axes.set_xlabel("minutes")
    axes.set_ylabel("accuracy")
    axes.set_title("Accuracy over the run")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def confusion_chart(plt, run, path):
    matrix = np.asarray(run["confusion"], dtype=np.float64)
    names = list((run["evaluation"] or {}).get("per_class") or [])
    if len(names) != len(matrix):
        names = [str(i) for i in range(len(matrix))]
    # Row shares, so every letter counts the same however many test images it has.
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(8, 7))
    image = axes.imshow(np.sqrt(shares), cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("letter read")
    axes.set_ylabel("true letter")
    axes.set_title("Test confusion matrix (colour: square root of the row share)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def write_report(database, out_dir, run_id=None):
    """Write loss.png, accuracy.png and (after a finished run) confusion.png, each atomically;
    returns the paths written. A chart may not replace the database or its SQLite files."""
    out_dir = Path(out_dir)
    names = ("loss.png", "accuracy.png", "confusion.png")
    check_outputs([("--out", out_dir / name) for name in names],
                  [("DATABASE", f"{database}{suffix}") for suffix in ("", "-wal", "-shm")])
    run = read_run(database, run_id)          # a bad database is the first thing to hear about
    if not run["batches"]:
        raise MicroconvError(f"run {run['run']['id']} in {database} has no batches to draw")
    plt = _pyplot()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MicroconvError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    written = []
    charts = [("loss.png", loss_chart), ("accuracy.png", accuracy_chart)]
    if run["confusion"]:
        charts.append(("confusion.png", confusion_chart))
    for name, draw in charts:
        path = out_dir / name
        write_atomically(path, lambda f, draw=draw: draw(plt, run, f), error=MicroconvError)
        written.append(path)
    return written
