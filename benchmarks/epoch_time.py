"""Wall time of one full training epoch at EMNIST letters' size: 124,800 images.

The images are random uint8 letters (the pixels' values do not change the work), kept as
uint8 like the real training set and turned into network input one batch at a time through
``Preprocessing``; each epoch is shuffled. Every batch does what a training step does:
preprocess, one-hot labels, forward, backward, read the loss, SGD update.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/epoch_time.py --threads 2
"""

from __future__ import annotations

import time

import numpy as np

from microconv.cli.bench import (
    TrainingStep,
    blas_info,
    blas_threads,
    machine_info,
    print_result,
    random_letters,
    script_parser,
)
from microconv.letters.preprocess import Preprocessing

EMNIST_LETTERS_TRAIN = 124_800


def epoch_time(backend="numpy", images=EMNIST_LETTERS_TRAIN, batch_size=64, seed=0):
    """Seconds for one shuffled epoch over ``images`` random letters (the last partial batch
    is dropped, as the training loop does with a fixed-size graph)."""
    rng = np.random.default_rng(seed)
    pixels, labels = random_letters(images, rng)
    prep = Preprocessing()
    train = TrainingStep(backend, batch_size, seed=seed)
    order = rng.permutation(images)
    batches = images // batch_size
    start = time.perf_counter()
    for b in range(batches):
        index = order[b * batch_size:(b + 1) * batch_size]
        train(prep.apply(pixels[index]), labels[index])
    train.sync()
    seconds = time.perf_counter() - start
    return {"backend": backend, "images": batches * batch_size, "batch_size": batch_size,
            "seconds": seconds, "images_per_s": batches * batch_size / seconds}


def main():
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=EMNIST_LETTERS_TRAIN)
    args = parser.parse_args()
    with blas_threads(args.threads):
        result = epoch_time(args.backend, args.images, args.batch_size)
        result["blas"] = blas_info()
        blas = result["blas"]
        result["threads"] = blas[0]["num_threads"] if isinstance(blas, list) else args.threads
    result["machine"] = machine_info()
    print_result(result, args.json,
                 f"{args.backend}: {result['images']:,} images in {result['seconds']:.1f} s "
                 f"({result['images_per_s']:,.0f} images/s, batch {args.batch_size}), "
                 f"load average {result['machine']['load_average_1m']}")


if __name__ == "__main__":
    main()
