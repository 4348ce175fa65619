"""Peak memory (resident set size) of a training run at batch 64.

Holds an EMNIST-letters-sized uint8 training set (124,800 images) in memory, as training does,
and runs training steps on it; the peak RSS of the whole process (Python, NumPy, BLAS
buffers, the data set, the graph) comes from resource.getrusage. Run it in its own process:
the peak never goes down.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/memory.py --threads 2
"""

from __future__ import annotations

import resource
import sys

import numpy as np

from microconv.cli.bench import (
    TrainingStep,
    blas_threads,
    print_result,
    random_letters,
    script_parser,
)
from microconv.letters.preprocess import Preprocessing


def peak_rss_mib():
    """The process's peak resident set size so far, in MiB (ru_maxrss is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def training_memory(backend="numpy", batch_size=64, steps=300, images=124_800, seed=0):
    before = peak_rss_mib()
    rng = np.random.default_rng(seed)
    pixels, labels = random_letters(images, rng)
    with_data = peak_rss_mib()
    prep = Preprocessing()
    train = TrainingStep(backend, batch_size, seed=seed)
    for _ in range(steps):
        index = rng.integers(0, images, size=batch_size)
        train(prep.apply(pixels[index]), labels[index])
    train.sync()
    return {"backend": backend, "batch_size": batch_size, "steps": steps,
            "peak_rss_mib_at_start": before, "peak_rss_mib_with_data": with_data,
            "peak_rss_mib": peak_rss_mib()}


def main():
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    with blas_threads(args.threads):
        result = training_memory(args.backend, args.batch_size, args.steps)
    print_result(result, args.json,
                 f"{args.backend}, batch {args.batch_size}, {args.steps} steps: peak RSS "
                 f"{result['peak_rss_mib']:.0f} MiB (at start "
                 f"{result['peak_rss_mib_at_start']:.0f} MiB, with the data set "
                 f"{result['peak_rss_mib_with_data']:.0f} MiB)")


if __name__ == "__main__":
    main()
