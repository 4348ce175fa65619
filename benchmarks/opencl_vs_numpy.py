"""Training and inference throughput of the ConvoAlphabetModel: NumPy vs OpenCL, side by side.

Run it the way the benchmarks are meant to be run (the machine presets OpenBLAS variables):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/opencl_vs_numpy.py

The measuring is ``microconv.cli.bench.run_bench``'s (see there): a training step is what training
does (assign a batch and its one-hot labels, forward, backward, read the loss, SGD with
momentum); inference is the forward pass with the log-probabilities read back, here at the
training batch size. Each number is the median of the timed runs after warm-up (the first
OpenCL run compiles kernels); the runs of the backends are interleaved. This script adds the
ratio of each backend to the first. Options: --batch N, --runs N, --backends a,b.

``--profile`` shows where an OpenCL training step spends its time instead: every kernel
launch of a few steps is timed by the device (OpenCL event profiling), and the table gives
each kernel's launches and milliseconds per step, next to the step's wall time.

``--cpu-time`` measures the CPU time (user + system, all threads of the process) of a
training step instead, with one thread for each backend: run it as
``POCL_MAX_PTHREAD_COUNT=1 python benchmarks/opencl_vs_numpy.py --cpu-time`` (PoCL reads its
thread count when it starts; BLAS is limited here, which needs threadpoolctl). On a machine
that other programs keep busy, wall times of either backend swing by a factor of several, CPU
time much less: it says how much work a step is, not how long it took to get the cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from microconv.cli.bench import (
    Contender,
    TrainingStep,
    cpu_ms_per_step,
    cycle,
    random_batches,
    render_bench,
    run_bench,
)


def profile_kernels(batch, steps):
    """Per kernel: (name, launches per step, device ms per step), slowest first; and the
    median wall ms of a step. Every step launches the same kernels in the same order, so each
    launch is timed ``steps`` times and its fastest time counts: other programs on the machine
    lengthen some runs, never shorten one. The backend's queue is swapped for one that
    records kernel times."""
    from microconv.backends import ops_opencl

    backend = ops_opencl.create()
    cl = backend.cl
    backend.queue = cl.CommandQueue(
        backend.context, properties=cl.command_queue_properties.PROFILING_ENABLE)
    launches = []
    enqueue = backend._enqueue

    def recording(kernel, name, global_size, local_size, args):
        event = enqueue(kernel, name, global_size, local_size, args)
        launches.append((name, event))
        return event

    backend._enqueue = recording
    step = TrainingStep(backend, batch)
    batches = random_batches(steps, batch)
    step(*batches[0])                     # warm-up: builds, compiles, allocates
    step.sync()
    per_step, walls = [], []
    for images, labels in batches:
        launches.clear()
        start = time.perf_counter()
        step(images, labels)
        step.sync()
        walls.append(time.perf_counter() - start)
        per_step.append([(name, (event.profile.end - event.profile.start) * 1e-6)
                         for name, event in launches])
    per_kernel = defaultdict(lambda: [0, 0.0])
    for position in zip(*per_step):
        name = position[0][0]
        per_kernel[name][0] += 1
        per_kernel[name][1] += min(ms for _, ms in position)
    rows = sorted(((name, count, ms) for name, (count, ms) in per_kernel.items()),
                  key=lambda row: -row[2])
    return rows, 1000 * statistics.median(walls)


def cpu_time_per_step(names, batch, runs, steps=10):
    """{backend: CPU ms of one training step, median of ``runs`` runs of ``steps`` steps},
    the backends' runs interleaved, BLAS held to one thread."""
    import threadpoolctl

    from microconv import backends

    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        contenders = []
        for name in names:
            step = TrainingStep(backends.get(name), batch)
            batches = cycle(random_batches(4, batch))
            contenders.append(Contender(lambda step=step, batches=batches: step(*batches()),
                                        batch, step.sync))
        return dict(zip(names, cpu_ms_per_step(contenders, runs, steps)))


def print_profile(console, batch, steps):
    rows, wall_ms = profile_kernels(batch, steps)
    busy = sum(ms for _, _, ms in rows)
    table = Table(title=f"OpenCL kernels in one training step (batch {batch}), device ms, "
                        f"each launch's fastest of {steps} steps")
    for column in ("kernel", "launches", "ms", "share"):
        table.add_column(column, justify="left" if column == "kernel" else "right")
    for name, count, ms in rows:
        table.add_row(name, f"{count:g}", f"{ms:.2f}", f"{100 * ms / busy:.0f}%")
    table.add_row("all kernels", f"{sum(c for _, c, _ in rows):g}", f"{busy:.2f}", "100%",
                  style="bold")
    console.print(table)
    console.print(f"wall time per step {wall_ms:.1f} ms (median); kernels at best {busy:.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="numpy,opencl")
    parser.add_argument("--profile", action="store_true",
                        help="time each OpenCL kernel of a training step instead")
    parser.add_argument("--cpu-time", action="store_true",
                        help="CPU time of a training step, one thread each, instead")
    args = parser.parse_args()
    console = Console()
    if args.profile:
        print_profile(console, args.batch, args.runs)
        return
    if args.cpu_time:
        names = args.backends.split(",")
        cpu = cpu_time_per_step(names, args.batch, args.runs)
        for name in names:
            console.print(f"{name}: {cpu[name]:.1f} CPU ms per training step "
                          f"({cpu[names[0]] / cpu[name]:.2f}x {names[0]}'s throughput per core)")
        return
    result = run_bench(args.backends.split(","), batch_size=args.batch, runs=args.runs,
                       infer_batch_size=args.batch)
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
