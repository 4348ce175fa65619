"""What the training loop tells the outside world, as plain immutable records.

The loop knows nothing about screens: it calls a Reporter's methods with these records, and
the Rich dashboard, the plain line printer and the metrics database are all Reporters.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunInfo:
    backend: str                 # backend name
    device: str                  # the backend's describe(): device and driver
    parameters: int              # number of trainable parameters
    train_size: int
    validation_size: int
    test_size: int
    dataset: str                 # e.g. "EMNIST letters from /path" or "generated letters"
    config: dict                 # the TrainConfig as a dict
    batches_per_epoch: int
    total_batches: int | None    # None when only --max-minutes bounds the run


@dataclass(frozen=True)
class BatchRecord:
    step: int                    # global batch counter, from 1
    epoch: int                   # from 1
    batch: int                   # batch within the epoch, from 1
    loss: float
    accuracy: float              # fraction of this batch classified right
    images_per_s: float
    lr: float
    elapsed_s: float


@dataclass(frozen=True)
class ValidationRecord:
    step: int
    epoch: int
    loss: float
    accuracy: float
    top2_accuracy: float
    best_accuracy: float
    elapsed_s: float
    sample_image: object = None          # (28, 28) uint8 upright image of one validation letter
    sample_label: int = -1               # its true class, 0..25
    sample_top3: tuple = ()              # ((class, probability), ...) best first
    most_confused: tuple = ()            # ((true class, predicted class, count), ...)


@dataclass(frozen=True)
class CheckpointRecord:
    path: str
    step: int
    elapsed_s: float


@dataclass(frozen=True)
class FinalRecord:
    steps: int
    epochs_completed: int
    elapsed_s: float
    test_accuracy: float | None
    test_top2_accuracy: float | None
    checkpoint: str | None
    interrupted: bool = False
    extra: dict = field(default_factory=dict)


class Reporter:
    """Receives the records; every method does nothing unless overridden."""

    def on_start(self, info: RunInfo): pass
    def on_batch(self, record: BatchRecord): pass
    def on_validation(self, record: ValidationRecord): pass
    def on_checkpoint(self, record: CheckpointRecord): pass
    def on_warning(self, message: str): pass
    def on_end(self, record: FinalRecord): pass


class Reporters(Reporter):
    """Several reporters as one: every record goes to each of them, in order."""

    def __init__(self, *reporters):
        self.reporters = [r for r in reporters if r is not None]

    def _each(self, method, argument):
        for reporter in self.reporters:
            getattr(reporter, method)(argument)

    def on_start(self, info):
        self._each("on_start", info)

    def on_batch(self, record):
        self._each("on_batch", record)

    def on_validation(self, record):
        self._each("on_validation", record)

    def on_checkpoint(self, record):
        self._each("on_checkpoint", record)

    def on_warning(self, message):
        self._each("on_warning", message)

    def on_end(self, record):
        self._each("on_end", record)
