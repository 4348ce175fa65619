"""Images per second of ``microconv train`` itself against the benchmark's step, in one run.

1. The benchmark's training step (``microconv bench``: SGD) and the same step with the Adam
   optimiser ``train`` uses by default, on the same backend, batch and threads.
2. ``train`` on a data folder with a metrics database: augmentation, validation every
   ``--eval-every`` steps, checkpoints and metrics, everything a user's run does. A reporter
   splits the loop's wall time into the steps themselves, validations, checkpoints and the
   loop's own bookkeeping (metrics, reporting, batch order).
3. The benchmark's steps again, since the machine's load may have changed meanwhile.

Wall times follow the machine's load; CPU time per step (all threads of the process) much
less, so both are reported: on a busy machine compare the CPU times.

Then the per-step extras alone: augmentation, preprocessing, the gradient check.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_loop.py \
        --data-dir ../shared/data/handwritten-letters --threads 2
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from microconv.cli.bench import (
    Contender,
    TrainingStep,
    blas_info,
    blas_threads,
    cpu_ms_per_step,
    cycle,
    machine_info,
    print_result,
    random_batches,
    script_parser,
    time_interleaved,
)
from microconv.engine.optim import Adam
from microconv.letters.augment import augment
from microconv.letters.preprocess import Preprocessing
from microconv.letters.records import Reporter
from microconv.letters.training import (
    DEFAULT_LR,
    TrainConfig,
    first_bad_gradient,
    load_data,
    train,
)


class LoopClock(Reporter):
    """Splits a run's wall time by the events the training loop reports."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.events = []        # (kind, seconds since the previous event, the step's own seconds)
        self.step_cpu = []      # CPU seconds (all threads) from one step's end to the next's

    def _event(self, kind, step_seconds=0.0):
        now, cpu = time.perf_counter(), time.process_time()
        previous = self.events[-1][0] if self.events else "start"
        if kind == "batch" and previous in ("start", "batch"):    # nothing else in between
            self.step_cpu.append(cpu - self.last_cpu)
        self.events.append((kind, now - self.last, step_seconds))
        self.last, self.last_cpu = now, cpu

    def on_start(self, info):
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def on_batch(self, record):
        # the record's rate times one_step alone, without the reporters
        self._event("batch", self.batch_size / record.images_per_s)

    def on_validation(self, record):
        self._event("validation")

    def on_checkpoint(self, record):
        self._event("checkpoint")

    def on_end(self, record):
        self._event("end")

    def summary(self):
        """The loop ends with its last step; what follows (the last validation, the final
        evaluation on the whole test split and its checkpoint) is the end of the run."""
        last_step = max(i for i, (kind, _, _) in enumerate(self.events) if kind == "batch")
        loop = self.events[:last_step + 1]
        steps = [step for kind, _, step in loop if kind == "batch"]
        images = self.batch_size * len(steps)
        loop_seconds = sum(gap for _, gap, _ in loop)
        return {
            "images": images,
            "loop_seconds": loop_seconds,
            "loop_images_per_s": images / loop_seconds,
            "steps_images_per_s": images / sum(steps),
            "cpu_ms_per_step": 1000 * statistics.median(self.step_cpu),
            "split_seconds": {
                "steps": sum(steps),
                "validations": sum(gap for kind, gap, _ in loop if kind == "validation"),
                "checkpoints": sum(gap for kind, gap, _ in loop if kind == "checkpoint"),
                "bookkeeping": sum(gap - step for kind, gap, step in loop if kind == "batch"),
            },
            "end_of_run_seconds": sum(gap for _, gap, _ in self.events[last_step + 1:]),
        }


def step_contenders(backend, batch_size, runs):
    """The benchmark's step (SGD) and the same step with train's Adam: wall-clock images/s of
    interleaved runs, and the median CPU milliseconds (all threads) per step."""
    sgd = TrainingStep(backend, batch_size)
    adam = TrainingStep(backend, batch_size)
    adam.optimizer = Adam(adam.model.named_parameters(), lr=DEFAULT_LR["adam"])
    data = cycle(random_batches(4, batch_size))
    contenders = [Contender(lambda step=step: step(*data()), batch_size) for step in (sgd, adam)]
    summaries = time_interleaved(contenders, runs)
    for summary, cpu_ms in zip(summaries, cpu_ms_per_step(contenders, runs)):
        summary["cpu_ms_per_step"] = cpu_ms
    return dict(zip(("bench step (SGD)", "bench step (Adam)"), summaries))


def median_ms(fn, repeats=50):
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def per_step_extras(config):
    """Milliseconds per step of the work train adds around the graph, each measured alone."""
    data = load_data(config)
    n = config.batch_size
    batches = [data.train_images[i * n:(i + 1) * n] for i in range(8)]
    prep = Preprocessing()
    trained = TrainingStep(config.backend, n)
    trained(*random_batches(1, n)[0])
    return {
        "augmentation": median_ms(lambda i: augment(batches[i % 8], 0, 1,
                                                    np.arange(i * n, (i + 1) * n))),
        "preprocessing": median_ms(lambda i: prep.apply(batches[i % 8])),
        "gradient check": median_ms(lambda i: first_bad_gradient(trained.model)),
    }


def main():
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    load_before = machine_info()["load_average_1m"]
    with blas_threads(args.threads), tempfile.TemporaryDirectory() as folder:
        before = step_contenders(args.backend, args.batch_size, args.runs)
        config = TrainConfig(backend=args.backend, data_dir=args.data_dir, epochs=args.epochs,
                             batch_size=args.batch_size, eval_every=args.eval_every,
                             out=str(Path(folder) / "run.npz"),
                             metrics=str(Path(folder) / "run.sqlite3"))
        clock = LoopClock(args.batch_size)
        started = time.perf_counter()
        final = train(config, clock)
        whole_run = time.perf_counter() - started
        after = step_contenders(args.backend, args.batch_size, args.runs)
        extras = per_step_extras(config)
        blas = blas_info()
    loop = clock.summary()
    result = {"backend": args.backend, "batch_size": args.batch_size, "epochs": args.epochs,
              "bench_before": before, "bench_after": after, "train": loop,
              "train_whole_run_seconds": whole_run, "test_accuracy": final.test_accuracy,
              "per_step_extras_ms": extras, "blas": blas,
              "machine": {**machine_info(), "load_average_1m_before": load_before}}
    lines = [f"{name}: {summary['median']:,.0f} images/s before the run, "
             f"{after[name]['median']:,.0f} after; CPU {summary['cpu_ms_per_step']:.1f} / "
             f"{after[name]['cpu_ms_per_step']:.1f} ms per step"
             for name, summary in before.items()]
    split = ", ".join(f"{k} {v:.1f} s" for k, v in loop["split_seconds"].items())
    lines += [f"microconv train: {loop['loop_images_per_s']:,.0f} images/s over the loop "
              f"({loop['images']:,} images in {loop['loop_seconds']:.1f} s: {split}); "
              f"{loop['steps_images_per_s']:,.0f} images/s in the steps alone, CPU "
              f"{loop['cpu_ms_per_step']:.1f} ms per step with its bookkeeping; the end of the "
              f"run (final validation, evaluation, checkpoint) {loop['end_of_run_seconds']:.1f} s",
              "per step, alone: " + ", ".join(f"{k} {v:.2f} ms" for k, v in extras.items()),
              f"load average {load_before} at the start, {result['machine']['load_average_1m']} "
              f"at the end"]
    print_result(result, args.json, "\n".join(lines))


if __name__ == "__main__":
    main()
