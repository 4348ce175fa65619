"""How well `microconv predict` reads photos of pages: the held-out generated pages.

Each page (``microconv.letters.pages``) is written to a PNG file and read by
``photo.read_letters``, exactly as ``microconv predict`` reads a photo. Two kinds of figures:

* end to end, per checkpoint: letters read right in reading order, 1 - (edit distance
  between the true letters and the letters read, spaces and newlines left out) / true
  letters, with the edit's substitutions, missed and spurious letters; and the error rate
  of the whole text with its spaces and newlines;
* the reader alone (the same for every checkpoint): true letters whose box was found
  (IoU >= 0.5 with one box read), the mean IoU of those boxes, and the error rate of the
  text the reader would give with a perfect network (lines, word gaps, order, missed,
  merged and split letters); and the network alone: its accuracy on the letters found, and
  on the data set's own 28x28 images of the same letters (the page knows which image each
  letter was drawn from), so the points lost between a letter and its photo show directly.

The held-out pages (seeds from 1000) are never used to tune the reader; ``--part tune``
measures the tuning pages instead.

    python benchmarks/photo_accuracy.py model.npz seed.npz \
        --data-dir ../shared/data/handwritten-letters
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from microconv.errors import MicroconvError
from microconv.letters import pages, photo
from microconv.letters.checkpoint import load_checkpoint

GROUPS = ("layout", "tool", "noise")


def measure(checkpoints, part="held-out", count=30, data_dir=None):
    """Totals per checkpoint and per page style: {"pages": [...], "checkpoints": {...}}."""
    classifiers = {str(path): load_checkpoint(path) for path in checkpoints}
    totals = {name: collections.Counter() for name in classifiers}
    by_style = {name: collections.defaultdict(collections.Counter) for name in classifiers}
    described = []
    direct_images, direct_truth = [], []          # the data set's images of the letters found
    pool = pages.letter_pool(data_dir, part)[0]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for page in pages.pages(part, count, data_dir):
            path = Path(folder) / f"page-{page.seed}.png"
            page.image.save(path)
            described.append({"seed": page.seed, "letters": len(page.letters),
                              "size": list(page.image.size), **page.style})
            # read as `predict` reads the file; finding and preparing do not depend on the network
            letters, images = photo.found_letters(*photo.read_photo(path))
            for true, _, _ in pages.match_boxes(page.boxes, [x.ink_box for x in letters]):
                direct_images.append(pool[page.sources[true]])
                direct_truth.append(page.letters[true])
            for name, classifier in classifiers.items():
                counts = pages.score(page, photo.read_found(classifier, letters, images))
                totals[name].update(counts)
                for group in GROUPS:
                    by_style[name][f"{group}: {page.style[group]}"].update(counts)
    for name, classifier in classifiers.items():
        totals[name]["direct_right"] = _right(classifier, direct_images, direct_truth)
    return {"part": part, "data_dir": None if data_dir is None else str(data_dir),
            "seconds": time.perf_counter() - start, "pages": described,
            "checkpoints": {name: {"total": figures(totals[name]),
                                   "by_style": {k: figures(v)
                                                for k, v in sorted(by_style[name].items())}}
                            for name in classifiers}}


def _right(classifier, images, truth):
    """How many of the letters ``images`` the network reads as ``truth``, read as the photo
    reader reads its letters."""
    if not images:
        return 0
    log_probs = photo.read_prepared(classifier, np.stack(images))
    return sum(photo.LETTERS[int(row.argmax())] == letter for row, letter in zip(log_probs, truth))


def figures(counts):
    """Rates from the counts of ``pages.score``, next to the counts themselves."""
    letters = max(counts["letters"], 1)
    matched = max(counts["boxes_matched"], 1)
    direct = ({"network_accuracy_direct": counts["direct_right"] / matched}
              if "direct_right" in counts else {})
    return {**counts, **direct,
            "letters_right": 1 - counts["letter_errors"] / letters,
            "text_error_rate": counts["text_errors"] / max(counts["text_characters"], 1),
            "boxes_found": counts["boxes_matched"] / letters,
            "mean_iou": counts["iou_sum"] / matched,
            "reader_text_error_rate": counts["reader_text_errors"]
            / max(counts["text_characters"], 1),
            "network_accuracy": counts["network_right"] / matched}


def summary(result):
    described = result["pages"]
    lines = [f"{result['part']} pages, seeds {described[0]['seed']}-{described[-1]['seed']}: "
             f"{len(described)} photos, {sum(p['letters'] for p in described)} letters "
             f"({result['seconds']:.0f} s)"]
    first = next(iter(result["checkpoints"].values()))["total"]
    lines.append(f"reader: {first['boxes_matched']} of {first['letters']} letters found "
                 f"({first['boxes_found']:.1%}, {first['letters'] - first['boxes_matched']} "
                 f"missed), mean box IoU {first['mean_iou']:.3f}; "
                 f"{first['read'] - first['boxes_matched']} of {first['read']} boxes match "
                 f"no letter (specks, or parts of a letter cut in two); text error rate with "
                 f"a perfect network {first['reader_text_error_rate']:.1%}")
    for name, entry in result["checkpoints"].items():
        total = entry["total"]
        lines.append(f"{name}: letters right {total['letters_right']:.1%} "
                     f"({total['substitutions']} misread, {total['missed']} missed, "
                     f"{total['spurious']} spurious of {total['letters']}); text error rate "
                     f"{total['text_error_rate']:.1%}; network on found letters "
                     f"{total['network_accuracy']:.1%} (their data-set images fed directly "
                     f"{total['network_accuracy_direct']:.1%})")
        lines.append("  " + "  ".join(f"{style} {values['letters_right']:.0%}/"
                                      f"{values['boxes_found']:.0%}"
                                      for style, values in entry["by_style"].items()))
    lines.append("(per style: letters right / letters found)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="EMNIST letters folder; without it, generated letters")
    parser.add_argument("--pages", type=int, default=30)
    parser.add_argument("--part", choices=pages.PARTS, default="held-out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = measure(args.checkpoints, args.part, args.pages, args.data_dir)
    except MicroconvError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result, indent=2) if args.json else summary(result))


if __name__ == "__main__":
    main()
