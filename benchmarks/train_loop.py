"""Images per second of ``microconv train`` itself against the benchmark's step, in one run.

1. The benchmark's training step (``microconv bench``: SGD) and the same step with the Adam
   optimiser ``train`` uses by default, on the same backend, batch and threads.
2. ``train`` on a data folder with a metrics database: augmentation, validation every
   ``--eval-every`` steps, checkpoints and metrics, everything a user's run does. A reporter
   splits the loop's wall time into the steps themselves, validations, checkpoints and the
   loop's own bookkeeping (metrics, reporting, batch order). Runs with each batch prepared
   ahead on a background thread (as train does) and prepared in turn alternate, ``--pairs``
   of each: the same numbers, so only the time differs.
3. The benchmark's steps again, since the machine's load may have changed meanwhile.

Wall times follow the machine's load; CPU time per step (all threads of the process) much
less, so both are reported: on a busy machine compare the CPU times.

Then a step with its batch prepared ahead against in turn, in alternating blocks of 10 steps
(``--blocks`` of each), and the per-step extras alone: augmentation, preprocessing, the
gradient check.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_loop.py \
        --data-dir ../shared/data/handwritten-letters --threads 2
"""

from __future__ import annotations

import contextlib
import functools
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
    augmentation_at,
    epoch_batches,
    first_bad_gradient,
    load_data,
    prepared_ahead,
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


def ahead_against_in_turn(config, blocks, block=10):
    """Adam steps on real batches (augmented and preprocessed as train does), in blocks of
    ``block`` steps that alternate between preparing each batch ahead on a background thread
    and in its turn: wall and CPU ms per step (medians over the blocks) and the median ratio
    of the paired blocks' wall times. Alternating every few steps, a change in the machine's
    load hits both alike."""
    data = load_data(config)
    order = epoch_batches(data, config, 1)
    strength = augmentation_at(config, 10 * len(order), len(order))
    prep = Preprocessing()

    def prepare(i):
        rows = order[i % len(order)]
        images = augment(data.train_images[rows], config.seed, 1, rows, strength)
        return prep.apply(images), data.train_labels[rows]

    step = TrainingStep(config.backend, config.batch_size)
    step.optimizer = Adam(step.model.named_parameters(), lr=1e-4)
    for i in range(3):
        step(*prepare(i))
    times = {True: [], False: []}
    for b in range(blocks):
        for ahead in (True, False) if b % 2 == 0 else (False, True):
            wall, cpu = time.perf_counter(), time.process_time()
            plans = range(b * block, (b + 1) * block)
            with contextlib.closing(prepared_ahead(prepare, plans, ahead)) as batches:
                for images, labels in batches:
                    step(images, labels)
            step.sync()
            times[ahead].append((1000 * (time.perf_counter() - wall) / block,
                                 1000 * (time.process_time() - cpu) / block))
    result = {}
    for ahead, name in ((True, "ahead"), (False, "in turn")):
        result[name] = {"wall_ms_per_step": statistics.median(w for w, _ in times[ahead]),
                        "cpu_ms_per_step": statistics.median(c for _, c in times[ahead])}
    result["paired_wall_ratio"] = statistics.median(
        a[0] / b[0] for a, b in zip(times[True], times[False]))
    return result


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


def timed_train(config, prepare_ahead):
    """One run of train: the loop's split (LoopClock), the whole run's wall and CPU seconds."""
    clock = LoopClock(config.batch_size)
    started, cpu = time.perf_counter(), time.process_time()
    final = train(config, clock, prepare_ahead=prepare_ahead)
    return {**clock.summary(), "whole_run_seconds": time.perf_counter() - started,
            "whole_run_cpu_seconds": time.process_time() - cpu,
            "test_accuracy": final.test_accuracy}


def main():
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=20,
                        help="blocks of 10 steps with batches prepared ahead and in turn")
    parser.add_argument("--pairs", type=int, default=1,
                        help="runs of train with batches prepared ahead and in turn, alternating")
    args = parser.parse_args()
    load_before = machine_info()["load_average_1m"]
    modes = {"prepared ahead": True, "prepared in turn": False}
    with blas_threads(args.threads), tempfile.TemporaryDirectory() as folder:
        before = step_contenders(args.backend, args.batch_size, args.runs)
        config = TrainConfig(backend=args.backend, data_dir=args.data_dir, epochs=args.epochs,
                             batch_size=args.batch_size, eval_every=args.eval_every,
                             out=str(Path(folder) / "run.npz"),
                             metrics=str(Path(folder) / "run.sqlite3"))
        runs = {mode: [] for mode in modes}
        for pair in range(args.pairs):
            for mode in (list(modes) if pair % 2 == 0 else list(modes)[::-1]):
                Path(config.metrics).unlink(missing_ok=True)
                runs[mode].append(timed_train(config, modes[mode]))
        after = step_contenders(args.backend, args.batch_size, args.runs)
        blocks = ahead_against_in_turn(config, args.blocks)
        extras = per_step_extras(config)
        blas = blas_info()
    result = {"backend": args.backend, "batch_size": args.batch_size, "epochs": args.epochs,
              "bench_before": before, "bench_after": after, "train": runs,
              "prepared_ahead_against_in_turn": blocks, "per_step_extras_ms": extras,
              "blas": blas,
              "machine": {**machine_info(), "load_average_1m_before": load_before}}
    lines = [f"{name}: {summary['median']:,.0f} images/s before the runs, "
             f"{after[name]['median']:,.0f} after; CPU {summary['cpu_ms_per_step']:.1f} / "
             f"{after[name]['cpu_ms_per_step']:.1f} ms per step"
             for name, summary in before.items()]
    for mode, measured in runs.items():
        median = functools.partial(median_of, measured)
        loop = measured[-1]
        split = ", ".join(f"{k} {v:.1f} s" for k, v in loop["split_seconds"].items())
        lines += [f"microconv train, batches {mode} (median of {len(measured)}): "
                  f"{median('whole_run_seconds'):.1f} s, CPU {median('whole_run_cpu_seconds'):.1f}"
                  f" s; {median('loop_images_per_s'):,.0f} images/s over the loop, "
                  f"{median('steps_images_per_s'):,.0f} in the steps alone, CPU "
                  f"{median('cpu_ms_per_step'):.1f} ms per step with its bookkeeping",
                  f"  last run: {loop['images']:,} images in {loop['loop_seconds']:.1f} s "
                  f"({split}); the end of the run (final validation, evaluation, checkpoint) "
                  f"{loop['end_of_run_seconds']:.1f} s"]
    lines += [f"a step with its batch prepared ahead / in turn ({args.blocks} blocks of 10 "
              f"steps each, alternating): {blocks['ahead']['wall_ms_per_step']:.1f} / "
              f"{blocks['in turn']['wall_ms_per_step']:.1f} ms wall, "
              f"{blocks['ahead']['cpu_ms_per_step']:.1f} / "
              f"{blocks['in turn']['cpu_ms_per_step']:.1f} ms CPU; paired blocks' wall ratio "
              f"{blocks['paired_wall_ratio']:.3f}"]
    lines += ["per step, alone: " + ", ".join(f"{k} {v:.2f} ms" for k, v in extras.items()),
              f"load average {load_before} at the start, {result['machine']['load_average_1m']} "
              f"at the end"]
    print_result(result, args.json, "\n".join(lines))


if __name__ == "__main__":
    main()
