"""Fine-tuning a trained model on someone's own letters: how the learning rate, the warm-up and
the replayed share trade learning the new hand against forgetting the handwritten letters.

The new hand: photographed generated lower-case letters (``synth.photograph``; random forms,
pens, inks and papers), each picture one letter, in a folder as a user makes one: 10 pictures
a letter to train on (``train/``) and 10 other pictures a letter of the same kind
(``test/``). Each setting fine-tunes the model as

    microconv train --resume MODEL --data-dir FOLDER --epochs 3 --lr RATE --warmup STEPS \
        --replay-share SHARE

does (``training.resume_config``), then reads the folder's 260 test pictures and the half of
the handwritten test split that the part names (``pages.letter_pool``: "tune" the first half
of each letter, "held-out" the second; the pictures are drawn from other seeds per part).

    python benchmarks/fine_tune_rate.py model.npz --data-dir ../shared/data/handwritten-letters \
        --rates 0.0002 0.0005 0.001 --warmups 50 10 --replay-shares 0 0.5 --seeds 0 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import string
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from microconv.errors import MicroconvError
from microconv.letters import pages, synth
from microconv.letters.checkpoint import load_checkpoint
from microconv.letters.folders import load_image_folder
from microconv.letters.training import resume_config, train

PICTURE_SEEDS = {"tune": (101, 102), "held-out": (201, 202)}    # (train/, test/) per part
PER_LETTER = 10


def write_folder(folder, seed):
    """PER_LETTER photographed lower-case letters per letter into folder/<letter>/."""
    images, labels = synth.generate(PER_LETTER * 26, seed, forms="lower")
    rng = np.random.default_rng(seed)
    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / string.ascii_lowercase[label]
        target.mkdir(parents=True, exist_ok=True)
        picture = synth.photograph([image], rng, side=int(rng.integers(36, 64)))
        Image.fromarray(picture).save(target / f"{seed}-{i:03d}.png")


def accuracy(model, images, labels):
    return float((load_checkpoint(model).predict(images).argmax(axis=1) == labels).mean())


def measure(model, data_dir, rates, warmups, replay_shares, seeds, part="tune", epochs=(3,)):
    """{"before": {...}, "runs": [{"epochs", "lr", "warmup", "replay_share", "seed", "steps",
    "seconds", "new_hand", "handwritten"}, ...], "means": [...]}: accuracies before and after
    each fine-tuning run, and their means over the seeds of each setting."""
    handwritten = pages.letter_pool(str(data_dir), part)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "my-letters"
        for split, seed in zip(("train", "test"), PICTURE_SEEDS[part]):
            write_folder(folder / split, seed)
        new_hand = load_image_folder(folder, "test")
        result = {"part": part, "model": str(model),
                  "before": {"new_hand": accuracy(model, *new_hand),
                             "handwritten": accuracy(model, *handwritten)}, "runs": []}
        for length, lr, warmup, share, seed in itertools.product(epochs, rates, warmups,
                                                                 replay_shares, seeds):
            out = Path(scratch) / "tuned.npz"
            config = resume_config(model, data_dir=str(folder), epochs=length, lr=lr,
                                   warmup=warmup, replay_share=share, seed=seed, out=str(out))
            start = time.perf_counter()
            record = train(config)
            result["runs"].append({
                "epochs": length, "lr": lr, "warmup": warmup, "replay_share": share, "seed": seed,
                "steps": record.steps, "seconds": round(time.perf_counter() - start, 1),
                "new_hand": accuracy(out, *new_hand), "handwritten": accuracy(out, *handwritten)})
            print(json.dumps(result["runs"][-1]), file=sys.stderr, flush=True)
    result["means"] = means(result["runs"])
    return result


def means(runs):
    """The mean accuracies of each setting's runs (over the seeds)."""
    setting = ("epochs", "lr", "warmup", "replay_share")
    groups = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in setting), []).append(run)
    return [{**dict(zip(setting, key)), "runs": len(group),
             **{k: round(float(np.mean([r[k] for r in group])), 4)
                for k in ("new_hand", "handwritten")}} for key, group in groups.items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the handwritten letters (EMNIST files) the model was trained on")
    parser.add_argument("--epochs", type=int, nargs="+", default=[3])
    parser.add_argument("--rates", type=float, nargs="+", default=[2e-4, 5e-4, 1e-3])
    parser.add_argument("--warmups", type=int, nargs="+", default=[50])
    parser.add_argument("--replay-shares", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--part", choices=pages.PARTS, default="tune")
    args = parser.parse_args(argv)
    try:
        result = measure(args.model, args.data_dir, args.rates, args.warmups,
                         args.replay_shares, args.seeds, args.part, args.epochs)
    except MicroconvError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
