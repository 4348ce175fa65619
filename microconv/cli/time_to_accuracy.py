"""Wall time until validation passes 85% and 90%, for microconv's backends and PyTorch alike.

Every contender trains the ConvoAlphabetModel with the settings of ``microconv train`` (by
default Adam, lr 0.003 after a 50-step warm-up, decayed on a cosine over 12 epochs, the
augmentation growing over the first epoch, a quarter of every batch generated lower-case
letters, batch 64, validation on the same 1,000 test images every 100 steps), and the
clock runs from the start of the run, loading the data included.

- A microconv backend runs ``train`` itself, checkpoints and all: what a user waits for.
- PyTorch, when it is importable, trains the same layers from the same initial weights on the
  same batches, augmentation, learning rates and validation images (no checkpoints, no
  per-step checks: the plain loop a PyTorch user would write).

A run stops as soon as validation has passed every threshold (or at its end, or after
``max_minutes``). The runs are interleaved (numpy, opencl, torch, numpy, ...) ``repeats``
times, so a change in the machine's load hits every contender alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from microconv import backends as backend_registry
from microconv.cli.bench import (
    blas_info,
    blas_thread_count,
    blas_threads,
    machine_info,
    torch_model,
    torch_threads,
)
from microconv.errors import MicroconvError
from microconv.letters.augment import augment
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing
from microconv.letters.records import Reporter
from microconv.letters.training import (
    TrainConfig,
    augmentation_at,
    batches_per_epoch,
    epoch_batches,
    learning_rate,
    load_data,
    optimizer_base_lr,
    train,
    validation_indices,
)

THRESHOLDS = (0.85, 0.90)
VALIDATION_BATCH = 256          # as the Classifier microconv validates with


class _AllPassed(Exception):
    """Ends a run once every threshold is passed. Deliberately not a MicroconvError: ``train``
    handles those (and Ctrl-C) itself and lets anything else through."""


class _Stopwatch(Reporter):
    """Collects the validations of one run and when each threshold was first passed."""

    def __init__(self, thresholds):
        self.thresholds = thresholds
        self.passed = {}               # threshold -> {"seconds": ..., "step": ...}
        self.validations = []          # [step, seconds since the start, accuracy]

    def on_validation(self, record):
        self.record(record.step, record.elapsed_s, record.accuracy)

    def record(self, step, seconds, accuracy):
        self.validations.append([step, round(seconds, 3), accuracy])
        for threshold in self.thresholds:
            if threshold not in self.passed and accuracy >= threshold:
                self.passed[threshold] = {"seconds": seconds, "step": step}
        if len(self.passed) == len(self.thresholds):
            raise _AllPassed

    def summary(self):
        return {"passed": {f"{t:.2f}": self.passed.get(t) for t in self.thresholds},
                "best_accuracy": max((v[2] for v in self.validations), default=None),
                "validations": self.validations}


def _microconv_run(config, thresholds):
    watch = _Stopwatch(thresholds)
    with tempfile.TemporaryDirectory() as folder:
        run = dataclasses.replace(config, out=str(Path(folder) / "run.npz"), metrics=None)
        with contextlib.suppress(_AllPassed):
            train(run, watch)
    return watch.summary()


def torch_run(config, thresholds, model=None):
    """The training loop of ``microconv train`` in PyTorch, minus checkpoints and checks; the
    stopwatch's summary. ``model``: a PyTorch model to train (``bench.torch_model``), by
    default the ConvoAlphabetModel starting from microconv's initial weights."""
    import torch

    started = time.perf_counter()
    watch = _Stopwatch(thresholds)
    data = load_data(config)
    prep = Preprocessing()
    if model is None:
        model = torch_model(torch, ConvoAlphabetModel("numpy", seed=config.seed).state_dict())
    # microconv's Adam has PyTorch's defaults: betas (0.9, 0.999), eps 1e-8
    optimizer = torch.optim.Adam(model.parameters(), lr=optimizer_base_lr(config),
                                 weight_decay=config.weight_decay)
    chosen = validation_indices(len(data.test_images), config.validation_size, config.seed)
    validation_x = torch.from_numpy(prep.apply(data.test_images[chosen]))
    validation_y = data.test_labels[chosen]
    per_epoch = batches_per_epoch(data, config)
    total = config.epochs * per_epoch
    step = 0
    with contextlib.suppress(_AllPassed):
        for epoch in range(1, config.epochs + 1):
            for indices in epoch_batches(data, config, epoch):
                images = data.train_images[indices]
                step += 1
                if config.augment:
                    images = augment(images, config.seed, epoch, indices,
                                     augmentation_at(config, step, per_epoch))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(config, step, total)
                optimizer.zero_grad(set_to_none=True)
                log_probs = model(torch.from_numpy(prep.apply(images)))
                labels = torch.from_numpy(data.train_labels[indices].astype(np.int64))
                torch.nn.functional.nll_loss(log_probs, labels).backward()
                optimizer.step()
                if step % config.eval_every == 0 or step == total:
                    with torch.inference_mode():
                        predicted = torch.cat([
                            model(validation_x[i:i + VALIDATION_BATCH])
                            for i in range(0, len(validation_x), VALIDATION_BATCH)]).argmax(1)
                    accuracy = float((predicted.numpy() == validation_y).mean())
                    watch.record(step, time.perf_counter() - started, accuracy)
                    limit = config.max_minutes
                    if limit is not None and time.perf_counter() - started >= 60 * limit:
                        return watch.summary()
    return watch.summary()


def _median_seconds(runs, threshold):
    """Median, min and max seconds to pass a threshold; None when a run never passed it."""
    seconds = [run["passed"][threshold]["seconds"] if run["passed"][threshold] else None
               for run in runs]
    if not seconds or None in seconds:
        return None
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "steps": [run["passed"][threshold]["step"] for run in runs]}


def time_to_accuracy(data_dir, backends=("numpy",), compare_torch=False, threads=None,
                     repeats=1, thresholds=THRESHOLDS, max_minutes=10.0, **settings):
    """Seconds until validation passes each threshold, per contender; a JSON-able dict.

    ``settings`` are TrainConfig fields (epochs, batch_size, ...) for every contender; the
    defaults are those of ``microconv train``. Slow backends (python) are skipped.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise MicroconvError(f"time to accuracy: repeats must be a positive integer, "
                             f"got {repeats!r}")
    config = TrainConfig(data_dir=str(data_dir), max_minutes=max_minutes, **settings).checked()
    result = {"thresholds": [f"{t:.2f}" for t in thresholds], "repeats": repeats,
              "config": dataclasses.asdict(config), "machine": machine_info(),
              "contenders": {}, "skipped": {}}
    runners = {}
    for name in backends:
        reason = backend_registry.unavailable_reason(name)
        if reason is None and backend_registry.get(name).slow:
            reason = "seconds per image: a run would take days"
        if reason is not None:
            result["skipped"][name] = reason
            continue
        runners[name] = lambda name=name: _microconv_run(
            dataclasses.replace(config, backend=name), thresholds)
    if compare_torch:
        try:
            import torch
        except ImportError as exc:
            result["skipped"]["torch"] = f"PyTorch is not importable ({exc})"
        else:
            if config.dropout:
                result["skipped"]["torch"] = "the PyTorch model has no dropout"
            else:
                runners[f"torch {torch.__version__}"] = lambda: torch_run(config, thresholds)
    runs = {name: [] for name in runners}
    with blas_threads(threads):
        result["blas"] = blas_info()
        used = result["threads"] = threads or blas_thread_count(result["blas"])
        with torch_threads(used) if compare_torch else contextlib.nullcontext():
            for _ in range(repeats):
                for name, runner in runners.items():
                    runs[name].append(runner())
    for name, done in runs.items():
        result["contenders"][name] = {
            "runs": done,
            **{key: _median_seconds(done, key) for key in result["thresholds"]}}
    result["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def render_time_to_accuracy(result):
    """A Rich renderable: one row per contender, seconds (and step) to pass each threshold."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Wall time until validation passes "
                        f"{' and '.join(f'{float(t):.0%}' for t in result['thresholds'])}: "
                        f"median (min-max) of {result['repeats']} run(s)")
    table.add_column("contender")
    for threshold in result["thresholds"]:
        table.add_column(f"{float(threshold):.0%}: seconds", justify="right")
        table.add_column("at step", justify="right")
    table.add_column("best validation", justify="right")
    for name, entry in result["contenders"].items():
        row = [name]
        for threshold in result["thresholds"]:
            passed = entry[threshold]
            if passed is None:
                row += ["not passed", "-"]
            else:
                row += [f"{passed['median']:.1f} ({passed['min']:.1f}-{passed['max']:.1f})",
                        ", ".join(str(step) for step in passed["steps"])]
        best = max(run["best_accuracy"] or 0.0 for run in entry["runs"])
        table.add_row(*row, f"{best:.1%}")
    machine = result["machine"]
    notes = [f"{name}: skipped, {reason}" for name, reason in result["skipped"].items()]
    notes.append(f"{result['threads']} threads; load average {machine['load_average_1m']} at the "
                 f"start, {machine['load_average_1m_after']} at the end")
    return Group(table, *(Text(note, style="dim") for note in notes))
