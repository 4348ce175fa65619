"""Training and inference throughput, side by side with PyTorch when it is installed.

Run it as a user's machine would, without this machine's forced OpenBLAS kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_throughput.py \
        --backend numpy --backend opencl --backend python --threads 2 --compare-torch

``--profile`` adds the per-op time of one training step for each backend measured;
``--json FILE`` writes the whole result (with the profiles) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from microconv.cli.bench import profile_step, render_bench, render_profile, run_bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", action="append", dest="backends",
                        help="backend to measure (repeatable; default numpy)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python-images", type=int, default=1)
    parser.add_argument("--compare-torch", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one training step per backend")
    parser.add_argument("--json", metavar="FILE", help="write the result as JSON to FILE")
    args = parser.parse_args()

    console = Console()
    result = run_bench(args.backends or ["numpy"], batch_size=args.batch_size,
                       threads=args.threads, runs=args.runs, compare_torch=args.compare_torch,
                       python_images=args.python_images)
    console.print(render_bench(result))
    if args.profile:
        result["profiles"] = {}
        for name, entry in result["backends"].items():
            batch = entry["train"]["batch_size"]
            steps = 1 if name == "python" else 5
            rows = profile_step(name, batch, steps=steps, threads=args.threads)
            result["profiles"][name] = {"batch_size": batch, "rows": rows}
            console.print(render_profile(f"{name} (batch {batch})", rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
