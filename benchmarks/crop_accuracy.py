"""Handwritten letters as phones photograph them, read one picture each by `microconv predict`.

The letters come from the test split of a data folder (never trained on). Each becomes a PNG
picture of its own drawn by ``synth.photograph``: a random size (24 to 160 pixels tall), a
thinner or thicker pen, coloured ink (or pencil) on coloured paper, light falling off across
the picture, a rotation of up to 4 degrees, blur, sensor noise and JPEG compression. All
pictures then go to one `microconv predict CHECKPOINT a.png b.png ... --json` run, which reads
each picture on its own, exactly as a user's crops would be read.

The letters are split in two parts chosen once from a fixed seed: "tune" for looking at while
changing things, and "held-out", which is only measured, never tuned on. A picture counts as
read right when predict reports exactly one letter and it is the true one.

    python benchmarks/crop_accuracy.py model.npz --data-dir ../shared/data/handwritten-letters
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from microconv.letters.data import load_emnist
from microconv.letters.synth import LETTERS, photograph

SELECTION_SEED = 1313        # which test letters form each part; fixed, so parts never mix
PARTS = ("tune", "held-out")


def choose_letters(labels, per_letter):
    """{part: indices into the test split}: per_letter letters of each class for each part."""
    rng = np.random.default_rng(SELECTION_SEED)
    chosen = {part: [] for part in PARTS}
    for label in range(len(LETTERS)):
        where = rng.permutation(np.flatnonzero(labels == label))
        for k, part in enumerate(PARTS):
            chosen[part].extend(where[k * per_letter:(k + 1) * per_letter].tolist())
    return {part: np.array(sorted(indices)) for part, indices in chosen.items()}


def write_crops(images, indices, folder):
    """One photographed picture per letter, named by its index in the test split."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in indices:
        rng = np.random.default_rng([SELECTION_SEED, int(index)])
        path = folder / f"{index:05d}.png"
        Image.fromarray(photograph([images[index]], rng)).save(path)
        paths.append(path)
    return paths


def microconv_command():
    """The installed `microconv` next to this interpreter, else the module run directly."""
    script = Path(sys.executable).with_name("microconv")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from microconv.cli import main; main()"]


def read_with_predict(checkpoint, paths):
    """{path: text read} from one `microconv predict --json` run over all pictures."""
    command = microconv_command() + ["predict", str(checkpoint), *map(str, paths), "--json"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"microconv predict failed: {done.stderr.strip()}")
    return {entry["image"]: entry["text"] for entry in json.loads(done.stdout)["images"]}


def score(paths, truth, texts):
    right = sum(texts[str(p)] == t for p, t in zip(paths, truth))
    found = Counter(min(len(texts[str(p)]), 2) for p in paths)
    confused = Counter((t, texts[str(p)]) for p, t in zip(paths, truth)
                       if texts[str(p)] != t and len(texts[str(p)]) == 1)
    return {"pictures": len(paths), "right": right, "accuracy": right / len(paths),
            "no_letter_found": found[0], "several_letters_found": found[2],
            "most_confused": [f"{t}->{r} x{n}" for (t, r), n in confused.most_common(8)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "data"
                        / "handwritten-letters")
    parser.add_argument("--per-letter", type=int, default=20,
                        help="letters of each class in each part (default 20: 520 per part)")
    parser.add_argument("--part", choices=PARTS + ("both",), default="both")
    parser.add_argument("--keep", type=Path, help="keep the pictures in this folder")
    args = parser.parse_args()

    images, labels = load_emnist(args.data_dir, "test")
    chosen = choose_letters(labels, args.per_letter)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="crops-"))
    result = {"checkpoint": str(args.checkpoint), "load_average": os.getloadavg()}
    try:
        for part in PARTS if args.part == "both" else (args.part,):
            paths = write_crops(images, chosen[part], folder / part)
            truth = [LETTERS[labels[i]].lower() for i in chosen[part]]
            result[part] = score(paths, truth, read_with_predict(args.checkpoint, paths))
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
