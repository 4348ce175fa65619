"""Training and inference throughput of the ConvoAlphabetModel: NumPy vs OpenCL, side by side.

Run it the way the benchmarks are meant to be run (the machine presets OpenBLAS variables):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/opencl_vs_numpy.py

The measuring is ``microconv.cli.bench.run_bench``'s (see there): a training step is what training
does (assign a batch and its one-hot labels, forward, backward, read the loss, SGD with
momentum); inference is the forward pass with the log-probabilities read back, here at the
training batch size. Each number is the median of the timed runs after warm-up (the first
OpenCL run compiles kernels); the runs of the backends are interleaved. This script adds the
ratio of each backend to the first. Options: --batch N, --runs N, --backends a,b.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from microconv.cli.bench import render_bench, run_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="numpy,opencl")
    args = parser.parse_args()
    result = run_bench(args.backends.split(","), batch_size=args.batch, runs=args.runs,
                       infer_batch_size=args.batch)
    console = Console()
    console.print(render_bench(result))
    measured = list(result["backends"].items())
    if len(measured) > 1:
        (base, base_entry), *others = measured
        for name, entry in others:
            train = entry["train_images_per_s"] / base_entry["train_images_per_s"]
            infer = entry["infer_images_per_s"] / base_entry["infer_images_per_s"]
            console.print(f"{name} / {base}: train {train:.2f}x, inference {infer:.2f}x")
    for name, entry in measured:
        console.print(f"  {name}: {entry['device']}")


if __name__ == "__main__":
    main()
