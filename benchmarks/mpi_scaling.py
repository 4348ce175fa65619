"""Data-parallel training on this machine: images/s of 1 process x 2 BLAS threads against
2 ranks x 1 BLAS thread each (mpirun -n 2), and the time of the gradient Allreduce.

1 process x 1 thread runs too: against it, 2 ranks show how much of a second core data
parallelism turns into speed.

Each run is the real training loop (``training.train``) over ``--images`` letters in global
batches of 64, one epoch, no validation until the end. Its speed is the median of the
steps' images/s after the first five (as rank 0 reports them; a step ends when the slower
rank has sent its gradient). The configurations run in turn, ``--repeats`` times
each, so a change in the machine's load hits them alike; the table gives the median run and
the slowest and fastest. The Allreduce is timed twice: in the loop (per step, including any
wait for the slower rank) and alone (the median of 200 Allreduces of the 137,178 gradients).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/mpi_scaling.py

Open MPI refuses to run as root unless OMPI_ALLOW_RUN_AS_ROOT=1 and
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set; this script sets them for its own mpirun.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from microconv.cli.bench import blas_info, blas_threads, machine_info, script_parser
from microconv.letters import distributed
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.records import Reporter
from microconv.letters.training import TrainConfig, train

SHARED_LETTERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "handwritten-letters"
WARMUP_STEPS = 5


class StepRates(Reporter):
    def __init__(self):
        self.rates = []

    def on_batch(self, record):
        self.rates.append(record.images_per_s)


def allreduce_alone(world, size, calls=200):
    """Median seconds of one Allreduce of ``size`` float32 numbers, every rank ready."""
    flat = np.ones(size, dtype=np.float32)
    seconds = []
    for _ in range(calls):
        world.comm.Barrier()
        tick = time.perf_counter()
        world.comm.Allreduce(world.MPI.IN_PLACE, flat, op=world.MPI.SUM)
        seconds.append(time.perf_counter() - tick)
    return statistics.median(seconds)


def worker(args):
    """One run (one process, or one rank of an mpirun job); rank 0 prints one JSON line."""
    world = distributed.world()
    rates = StepRates()
    with tempfile.TemporaryDirectory() as scratch, blas_threads(args.threads):
        config = TrainConfig(backend=args.backend, data_dir=args.data_dir, limit=args.images,
                             epochs=1,
                             batch_size=args.batch_size, eval_every=10**9, validation_size=64,
                             out=os.path.join(scratch, "run.npz"))
        record = train(config, rates, world)
        blas = blas_info()
    result = {"ranks": world.size, "threads": args.threads, "steps": record.steps,
              "images_per_s": statistics.median(rates.rates[WARMUP_STEPS:]) if world.is_root
              else None,
              "allreduce_in_loop_ms": 1e3 * world.allreduce_seconds / record.steps}
    if world.size > 1:
        parameters = ConvoAlphabetModel("numpy").parameter_count()
        result["allreduce_alone_ms"] = 1e3 * allreduce_alone(world, parameters)
    if world.is_root:
        result["blas"] = blas
        print(json.dumps(result), flush=True)


def mpirun_command(ranks):
    mpirun = shutil.which("mpirun") or sys.exit("mpirun not found (Debian: apt-get install "
                                                "openmpi-bin libopenmpi-dev)")
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    return [mpirun, "-n", str(ranks)] + (["--oversubscribe"] if "Open MPI" in version else [])


def one_run(ranks, threads, args):
    command = [sys.executable, __file__, "--worker", "--threads", str(threads),
               "--backend", args.backend, "--images", str(args.images),
               "--batch-size", str(args.batch_size)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if ranks > 1:
        command = mpirun_command(ranks) + command
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"run of {ranks} x {threads} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main():
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=str(SHARED_LETTERS) if SHARED_LETTERS.is_dir()
                        else None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    configurations = {"1 process x 2 threads": (1, 2), "1 process x 1 thread": (1, 1),
                      "2 ranks x 1 thread": (2, 1)}
    load_before = os.getloadavg()[0]
    runs = {name: [] for name in configurations}
    for _ in range(args.repeats):
        for name, (ranks, threads) in configurations.items():
            runs[name].append(one_run(ranks, threads, args))
    result = {"machine": machine_info(), "load_average_1m_before": round(load_before, 2),
              "load_average_1m_after": round(os.getloadavg()[0], 2), "images": args.images,
              "batch_size": args.batch_size, "repeats": args.repeats,
              "blas": runs["1 process x 2 threads"][0]["blas"], "runs": runs,
              "images_per_s": {name: summary([r["images_per_s"] for r in rs])
                               for name, rs in runs.items()},
              "allreduce_in_loop_ms": summary([r["allreduce_in_loop_ms"]
                                               for r in runs["2 ranks x 1 thread"]]),
              "allreduce_alone_ms": summary([r["allreduce_alone_ms"]
                                             for r in runs["2 ranks x 1 thread"]])}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"load average (1 min) {result['load_average_1m_before']} before, "
          f"{result['load_average_1m_after']} after; {args.images:,} images, batch "
          f"{args.batch_size}, {args.repeats} runs each")
    for name, rate in result["images_per_s"].items():
        print(f"{name:>22}: {rate['median']:,.0f} images/s ({rate['min']:,.0f}-"
              f"{rate['max']:,.0f})")
    for what in ("allreduce_in_loop_ms", "allreduce_alone_ms"):
        time_ms = result[what]
        print(f"{what:>22}: {time_ms['median']:.2f} ms ({time_ms['min']:.2f}-"
              f"{time_ms['max']:.2f})")


if __name__ == "__main__":
    main()
