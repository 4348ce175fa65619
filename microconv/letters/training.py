"""The training loop: data in, records out, checkpoints on disk. It knows nothing about screens.

One run, step by step:

1. Find the data (an explicit directory, ``MICROCONV_DATA``, the user cache) or, when there
   is none, generate handwriting-like letters, and say which in ``RunInfo.dataset``.
2. Build the model and the training graph once: ``model(x_leaf, train=True)`` and the loss
   against a one-hot label leaf. Every step only assigns new values to the two leaves, so the
   graph, its topological order and its buffers are reused (a short last batch per epoch is
   dropped so the batch size never changes).
3. Per step: shuffle order comes from (seed, epoch), each image's augmentation from (seed,
   epoch, image index) and dropout masks from (seed, step). Nothing depends on earlier random
   draws, so resuming from a checkpoint gives exactly the steps an uninterrupted run would
   have taken (on the NumPy backend, bit for bit), and lets a background thread prepare
   the next batch while a step runs (``prepared_ahead``). Under ``mpirun -n N`` each process
   computes its rows of every batch and the gradients are averaged between backward and
   update (distributed.py).
4. Every ``eval_every`` steps: validate on a fixed subset of the test split, write a checkpoint.
5. At the end: evaluate on the whole test split (clean and perturbed) and write the final
   checkpoint with those metrics in its header.

Expected failures are MicroconvErrors: a non-finite loss or gradient stops training with a
TrainingError naming the step and layer (the last good checkpoint stays as it was); Ctrl-C
writes a checkpoint and raises TrainingInterrupted carrying its path.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from microconv import backends
from microconv.engine.optim import SGD, Adam
from microconv.errors import CheckpointError, MicroconvError, TrainingError
from microconv.letters import distributed, schema
from microconv.letters.augment import DEFAULT as FULL_AUGMENTATION
from microconv.letters.augment import augment
from microconv.letters.checkpoint import (
    Classifier,
    build_model,
    check_outputs,
    read_checkpoint,
    save_checkpoint,
)
from microconv.letters.data import (
    DATASETS,
    batch_order,
    class_names,
    default_cache_dir,
    describe_source,
    find_data_dir,
    find_emnist_file,
    is_picture_folder,
    kept_letters,
    load_split,
)
from microconv.letters.evaluate import confusion_matrix, evaluate, most_confused, scores
from microconv.letters.model import ConvoAlphabetModel, LetterGraph, require_graph_memory
from microconv.letters.preprocess import Preprocessing
from microconv.letters.records import (
    BatchRecord,
    CheckpointRecord,
    FinalRecord,
    Reporter,
    Reporters,
    RunInfo,
    ValidationRecord,
)

DEFAULT_LR = {"adam": 3e-3, "sgd": 0.05}
SCHEDULES = ("cosine", "constant")
# Resuming onto other data (a folder of someone's own letters) fine-tunes at a small rate, which
# learns the new hand and keeps most of what the first data taught. Half of every batch
# replays that data (replay_share), which slows the new hand: Adam's rate is set so it learns
# it at least as well as 0.0002 did on the folder alone, and forgets less (docs/training.md).
FINE_TUNE_LR = {"adam": 3e-4, "sgd": 0.005}
GENERATED_TRAIN = 13_000     # generated letters when no EMNIST files are found (~0.5 ms each)
GENERATED_TEST = 2_600
GENERATED_SHARE_SEED = 2_000_003    # the mixed-in lower-case letters draw from seed + this
# A folder of someone's own letters is small (ten pictures a letter make 260): an epoch shows
# each picture often enough to hold this many letters, every copy augmented differently, so
# that "--epochs 3" means about ninety steps of 64 letters, not a handful.
PICTURE_EPOCH = 2_000
TARGET_ACCURACY = 0.85       # the seed's 24-hour result; the time to pass it is recorded


class TrainingInterrupted(MicroconvError):
    """Training was stopped (Ctrl-C, SIGTERM or SIGHUP: ``signal_number``); a checkpoint was
    written to ``path`` (None when that failed)."""

    def __init__(self, path, step, signal_number=signal.SIGINT):
        saved = (f"checkpoint saved to {path}" if path is not None else
                 "the checkpoint could not be saved; the one on disk is from the last validation")
        how = "" if signal_number == signal.SIGINT else f" by {signal.Signals(signal_number).name}"
        super().__init__(f"training interrupted{how} at step {step}; {saved}")
        self.path = path
        self.step = step
        self.signal_number = signal_number


def setting(default, help, **cli):
    """A TrainConfig field with its help text and command-line details: ``min`` (a lower
    bound), ``choices`` (a tuple, or a function returning one), ``short`` (a one-letter flag),
    ``envvar``. The dataclass, the ``train`` command and the docs all read it from here."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """Every setting of a training run: its name, default and help text, written once."""

    backend: str = setting(
        "numpy", "Where the arithmetic runs: python (reference loops, very slow), numpy (CPU), "
        "opencl (a GPU or CPU through OpenCL), or any other backend installed.",
        choices=backends.names, short="-b", envvar="MICROCONV_BACKEND")
    device: str | None = setting(
        None, "OpenCL device: 'P:D' (platform:device index) or a piece of its name. "
        "See 'microconv backends'.")
    data_dir: str | None = setting(
        None, "Folder with the EMNIST files (emnist-letters-*-ubyte.gz), or a folder of "
        "pictures with one sub-folder per letter (a/, b/ ... or A/, B/ ...). Default: "
        "$MICROCONV_DATA, then ~/.cache/microconv/emnist, else generated letters.")
    dataset: str = setting(
        "letters", "EMNIST split: letters (26 classes; the model has 26 outputs).")
    epochs: int | None = setting(
        12, "Passes over the training set (with --max-minutes, whichever ends first).", min=1)
    max_minutes: float | None = setting(
        None, "Stop after this many minutes, then evaluate and save.")
    batch_size: int = setting(64, "Images per training step.", min=1)
    lr: float | None = setting(
        None, "Peak learning rate (default: 0.003 for adam, 0.05 for sgd; 0.0003 and 0.005 "
        "when --resume fine-tunes on other data), reached after --warmup steps and decayed to 0 "
        "on a cosine over the rest of the run.")
    warmup: int = setting(
        50, "Steps over which the learning rate climbs from 0 to its peak.", min=0)
    optimizer: str = setting("adam", "adam, or sgd with heavy-ball momentum.",
                             choices=tuple(DEFAULT_LR))
    momentum: float = setting(0.9, "SGD momentum.")
    weight_decay: float = setting(0.0, "L2 weight decay.")
    augment: bool = setting(
        True, "Vary every training letter as hands, pens and cameras do: rotation, slant, "
        "size, elastic bends, stroke width, position, speckle.")
    augment_ramp: float = setting(
        1.0, "Epochs over which the augmentation grows from no change to full strength "
        "(0: full from the first step).", min=0.0)
    # The handwritten data holds mostly capitals: generated lower-case letters fill the gap.
    generated_share: float = setting(
        0.25, "Share of every training batch made of generated lower-case letters "
        "(synth.LOWERCASE; 0: the data alone). An epoch stays as long as the data.",
        min=0.0, max=0.99)
    # A fine-tune on someone's own letters alone forgets the data the network first learnt;
    # showing that data again keeps more of it (measured in docs/training.md).
    replay_share: float = setting(
        0.5, "When --resume fine-tunes on other data: share of every batch made of the data "
        "the checkpoint was trained on, where that is found (0: the new data alone).",
        min=0.0, max=0.99)
    seed: int = setting(0, "Seed for weights, shuffling and augmentation.", min=0)
    limit: int | None = setting(
        None, "Use only the first N training (and test) images (quick trials).", min=1)
    out: str = setting("microconv-letters.npz",
                       "Checkpoint file, rewritten at every validation and at the end.")
    resume: str | None = setting(
        None, "Continue from a checkpoint; its settings are kept unless given here.")
    metrics: str | None = setting(
        None, "SQLite metrics database (see 'microconv report').")
    eval_every: int = setting(100, "Validate and save a checkpoint every N batches.", min=1)
    dropout: float = setting(0.0, "Dropout rate after the first fully connected layer.")
    validation_size: int = setting(
        1000, "Test images (a fixed random subset) used for each validation.", min=1)
    schedule: str = setting(
        "cosine", "cosine: decay the learning rate to 0 over the run; constant: keep it.",
        choices=SCHEDULES)

    def checked(self):
        """Self, after checking every field; a TrainingError names every bad one."""
        problems = self.type_problems()
        if problems:
            raise TrainingError("bad training settings: " + "; ".join(problems))
        if self.optimizer not in DEFAULT_LR:
            problems.append(f"optimizer must be one of {', '.join(DEFAULT_LR)}, "
                            f"not '{self.optimizer}'")
        if self.dataset not in DATASETS:
            problems.append(f"dataset must be one of {', '.join(DATASETS)}, not '{self.dataset}'")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be {' or '.join(SCHEDULES)}, not '{self.schedule}'")
        for f in fields(self):              # the lower bounds the command line enforces too
            low, value = f.metadata.get("min"), getattr(self, f.name)
            if low is not None and value is not None and value < low:
                problems.append(f"{f.name} must be at least {low:g}")
        if self.epochs is None and self.max_minutes is None:
            problems.append("give epochs or max_minutes (or both), otherwise training never ends")
        if self.max_minutes is not None and self.max_minutes <= 0:
            problems.append("max_minutes must be positive")
        if self.lr is not None and not self.lr > 0:
            problems.append("lr must be positive")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must lie in [0, 1)")
        for name in ("generated_share", "replay_share"):   # the command line's max is inclusive
            if getattr(self, name) >= 1.0:
                problems.append(f"{name} must lie in [0, 1)")
        if problems:
            raise TrainingError("bad training settings: " + "; ".join(problems))
        return self

    def type_problems(self):
        """One sentence per field whose value is not of the field's type (booleans are not
        numbers, numbers are finite, whole numbers are ints)."""
        hints = typing.get_type_hints(type(self))
        problems = []
        for f in fields(self):
            value, kinds = getattr(self, f.name), typing.get_args(hints[f.name]) or (hints[f.name],)
            if value is None and type(None) in kinds:
                continue
            fits = ((int in kinds and type(value) is int) or (bool in kinds and type(value) is bool)
                    or (str in kinds and type(value) is str)
                    or (float in kinds and type(value) in (int, float) and schema.finite(value)))
            if not fits:
                names = " or ".join("None" if k is type(None) else "a finite number"
                                    if k is float else k.__name__ for k in kinds)
                problems.append(f"{f.name} must be {names}, not {value!r:.40}")
        return problems


# --- data -------------------------------------------------------------------------------------

@dataclass
class Dataset:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    origin: str          # what the images are and where they come from, in words
    class_names: str
    source: str          # the data folder's absolute path, or "generated"
    generated: int = 0   # after the run's own images: this many of the generated share
    replayed: int = 0    # last: this many of the data a fine-tuned checkpoint first learnt
    replay: dict | None = None     # where those come from (``replay_plan``)

    @property
    def description(self):
        """The origin and the sizes, as runs, checkpoints and the dashboard show them."""
        return (f"{self.origin}: {len(self.train_images)} training, "
                f"{len(self.test_images)} test images")

    @property
    def own(self):
        """How many training images are the run's own data (they come first)."""
        return len(self.train_images) - self.generated - self.replayed


def generated_split(split, seed, limit=None):
    """The generated letters a run without data files trains ("train") or tests ("test") on:
    up to GENERATED_TRAIN / GENERATED_TEST of them, the test ones from a seed of their own."""
    count, split_seed = ((GENERATED_TRAIN, seed) if split == "train"
                         else (GENERATED_TEST, seed + 1_000_003))
    return kept_letters(min(limit or count, count), split_seed)


def load_data(config):
    """The training and test split the config asks for, plus a sentence saying what they are."""
    names = class_names(config.dataset)
    folder = find_data_dir(config.data_dir, config.dataset)
    if folder is not None:
        train = load_split(folder, "train", config.dataset)
        test = load_split(folder, "test", config.dataset)
        description = f"{describe_source(folder, config.dataset)} from {folder}"
        source = str(Path(folder).resolve())
        if is_picture_folder(folder, config.dataset):
            repeats = math.ceil(PICTURE_EPOCH / len(train[0]))
            train = (np.tile(train[0], (repeats, 1, 1)), np.tile(train[1], repeats))
            description += f" ({len(train[0]) // repeats} pictures, {repeats} times each)"
    else:
        if config.dataset != "letters":
            raise TrainingError(f"no EMNIST {config.dataset} files found (looked in "
                                f"MICROCONV_DATA and {default_cache_dir()}); generated data "
                                "exists only for letters")
        train = generated_split("train", config.seed, config.limit)
        test = generated_split("test", config.seed, config.limit)
        description = ("generated letters (no EMNIST files found in MICROCONV_DATA or "
                       f"{default_cache_dir()}; run 'microconv data download' or pass --data-dir)")
        source = "generated"
    if config.limit is not None:
        train = (train[0][:config.limit], train[1][:config.limit])
        test = (test[0][:config.limit], test[1][:config.limit])
    if len(train[0]) < config.batch_size:
        raise TrainingError(f"the training set has {len(train[0])} images, fewer than one batch "
                            f"of {config.batch_size}")
    added = 0
    if config.generated_share > 0 and config.dataset == "letters":
        train, added = with_generated_share(train, config.generated_share, config.seed)
        description += f" + {added} generated lower-case letters"
    return Dataset(train[0], train[1], test[0], test[1], description, names, source, added)


def with_generated_share(train, share, seed):
    """The training split with generated lower-case letters appended, as many as an epoch
    shows (``share`` of the data's size); returns (images, labels) and how many were added."""
    count = round(len(train[0]) * share)
    if count == 0:
        return train, 0
    images, labels = kept_letters(count, seed + GENERATED_SHARE_SEED, forms="lower")
    return (np.concatenate([train[0], images]), np.concatenate([train[1], labels])), count


def replay_plan(header, fine_tuning):
    """What a run resumed from a checkpoint replays, as {"source", "seed", "limit"}: when it
    fine-tunes, the data the checkpoint was trained on (its folder, or "generated" with the
    seed and limit that drew them); when it continues, what the checkpoint's run replayed.
    None when there is nothing to replay or the checkpoint does not say what it learnt."""
    trained_on = header.get("dataset") or {}
    if not fine_tuning:
        replayed = trained_on.get("replayed")
        return replayed if isinstance(replayed, dict) and "source" in replayed else None
    if "source" not in trained_on:
        return None
    saved = header.get("config") or {}
    return {"source": trained_on["source"], "seed": saved.get("seed", 0),
            "limit": saved.get("limit")}


def replayed_letters(plan, dataset):
    """(images, labels) of the training split a replay plan names; a MicroconvError when its
    folder is gone or cannot be read."""
    if plan["source"] == "generated":
        return generated_split("train", plan["seed"], plan["limit"])
    images, labels = load_split(plan["source"], "train", dataset)
    return images[:plan["limit"]], labels[:plan["limit"]]


def with_replay(data, config, header, fine_tuning):
    """The run's data with ``config.replay_share`` of every batch drawn from what the resumed
    checkpoint first learnt (``replay_plan``), and the warnings to show: when that data
    cannot be found the run goes on with its own data alone and says so."""
    plan = replay_plan(header, fine_tuning) if config.replay_share > 0 else None
    if plan is None:
        return data, []
    try:
        images, labels = replayed_letters(plan, config.dataset)
    except MicroconvError as exc:
        return data, [f"cannot replay the letters {config.resume} learnt first ({exc}): "
                      "training on the new letters alone, which forgets more of them"]
    return replace(data, train_images=np.concatenate([data.train_images, images]),
                   train_labels=np.concatenate([data.train_labels, labels]),
                   replayed=len(images), replay=plan,
                   origin=f"{data.origin} + {len(images)} letters it learnt first, replayed "
                          f"({plan['source']})"), []


def mixed_rows(batch_size, *shares):
    """How many rows of every batch each share takes, in order (at least one row stays the
    run's own data: a later share gives way to an earlier one)."""
    rows = []
    for share in shares:
        rows.append(min(round(batch_size * share), batch_size - 1 - sum(rows)))
    return rows


def batch_parts(data, config):
    """(images, rows of every batch) of each part of the training split, in their order: the
    run's own data, the generated share, the replayed data; empty parts left out."""
    made, replayed = mixed_rows(config.batch_size, config.generated_share * bool(data.generated),
                                config.replay_share * bool(data.replayed))
    parts = [(data.own, config.batch_size - made - replayed), (data.generated, made),
             (data.replayed, replayed)]
    return [(size, rows) for size, rows in parts if size]


def batches_per_epoch(data, config):
    """An epoch holds as many images as the run's own data, the generated and replayed
    letters not counted (a short last batch is dropped)."""
    return data.own // config.batch_size


def epoch_batches(data, config, epoch):
    """The index batches of one epoch, shuffled by (seed, epoch); with a generated or a
    replayed part, each batch takes its rows of every part (``batch_parts``), mixed among
    each other."""
    rng = epoch_rng(config.seed, epoch)
    parts = batch_parts(data, config)
    if len(parts) == 1:
        return batch_order(data.own, config.batch_size, rng)
    count = batches_per_epoch(data, config)
    columns, start = [], 0
    for k, (size, rows) in enumerate(parts):
        order = rng.permutation(size)
        # the own data: each image at most once; a mixed-in part: repeated when it is short
        order = order[:count * rows] if k == 0 else np.resize(order, count * rows)
        columns.append(start + order.reshape(count, rows))
        start += size
    return rng.permuted(np.concatenate(columns, axis=1), axis=1)


def augmentation_at(config, step, epoch_length):
    """The augmentation ranges for a step (from 1): growing linearly over the first
    ``augment_ramp`` epochs of ``epoch_length`` batches, full afterwards."""
    ramp_steps = config.augment_ramp * epoch_length
    if ramp_steps <= 0:
        return FULL_AUGMENTATION
    return FULL_AUGMENTATION.at_strength((step - 1) / ramp_steps)


def validation_indices(test_size, validation_size, seed):
    """A fixed random subset of the test split (the same for every validation of a run)."""
    rng = np.random.default_rng([seed, 0x5EED])
    count = min(validation_size, test_size)
    return np.sort(rng.choice(test_size, size=count, replace=False))


# --- the pieces of one run ------------------------------------------------------------------

def make_optimizer(config, model):
    lr = optimizer_base_lr(config)
    if config.optimizer == "sgd":
        return SGD(model.named_parameters(), lr=lr, momentum=config.momentum,
                   weight_decay=config.weight_decay)
    return Adam(model.named_parameters(), lr=lr, weight_decay=config.weight_decay)


def optimizer_settings(config, optimizer):
    settings = {"name": config.optimizer, "lr": optimizer_base_lr(config),
                "weight_decay": config.weight_decay, "schedule": config.schedule}
    if config.optimizer == "sgd":
        settings["momentum"] = config.momentum
    else:
        settings.update(betas=[optimizer.beta1, optimizer.beta2], eps=optimizer.eps)
    return settings


def optimizer_base_lr(config):
    return config.lr if config.lr is not None else DEFAULT_LR[config.optimizer]


def learning_rate(config, step, total_batches):
    """The rate for a step (from 1): a linear climb to the base rate over ``warmup`` steps,
    then cosine decay to 0 over the rest of the planned batches, or constant. Runs bounded
    only by time keep the base rate after the climb."""
    base = optimizer_base_lr(config)
    if step <= config.warmup:
        return base * step / (config.warmup + 1)
    if config.schedule == "constant" or not total_batches:
        return base
    progress = min(1.0, (step - 1 - config.warmup) / max(1, total_batches - config.warmup))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def step_rng(seed, step):
    """The random numbers of one step (dropout masks), independent of earlier steps."""
    return np.random.default_rng([seed, 1, step])


def epoch_rng(seed, epoch):
    return np.random.default_rng([seed, 2, epoch])


def first_bad_gradient(model):
    """The name of the first parameter whose gradient is not finite, or None."""
    for name, p in model.named_parameters():
        grad = p.grad
        if grad is not None and not np.isfinite(grad).all():
            return name
    return None


def first_bad_parameter(model):
    for name, value in model.state_dict().items():
        if not np.isfinite(value).all():
            return name
    return None


# --- the loop ------------------------------------------------------------------------------

@dataclass
class Batch:
    """One step's input, ready for the graph."""
    size: int                   # images in the whole batch (over all ranks)
    inputs: np.ndarray          # this rank's rows, preprocessed: (rows, 1, 28, 28) float32
    labels: np.ndarray          # their classes (rows,)


def prepared_ahead(prepare, plans, ahead=True):
    """prepare(plan) for each plan in turn; with ``ahead``, the next one is prepared on a
    background thread while the caller works on the current one.

    A step leaves a core idle between its parallel primitives; preparing a batch (augmentation
    above all) fills that time. Results come in order and are the same either way; an error
    in prepare is raised here, in the caller's thread. Close the generator when stopping
    early: the thread finishes the batch it is on, then ends."""
    if not ahead:
        yield from map(prepare, plans)
        return
    errors = np.geterr()        # NumPy's error handling is per thread: follow the caller's

    def in_caller_errstate(plan):
        with np.errstate(**errors):
            return prepare(plan)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="microconv-batches") as thread:
        pending = None
        for plan in plans:
            following = thread.submit(in_caller_errstate, plan)
            if pending is not None:
                yield pending.result()
            pending = following
        if pending is not None:
            yield pending.result()


class _Run:
    """The state of one training run; ``train`` below is the whole public interface."""

    def __init__(self, config, reporter, signals, world, prepare_ahead=True):
        self.config = config
        self.reporter = reporter or Reporter()
        self.signals = signals
        self.prepare_ahead = prepare_ahead   # the next batch on a background thread
        self.world = world               # the ranks of an MPI run; one process by default
        self.rows = world.rows(config.batch_size)    # this rank's share of every batch
        self.rows_per_step = self.rows.stop - self.rows.start
        self.started = time.perf_counter()
        self.elapsed_before = 0.0        # wall time of earlier sessions of a resumed run
        self.best_accuracy = 0.0
        self.time_to_target = None
        self.last_validation = None
        self.step = 0
        self.epoch = 1
        self.batch_in_epoch = 0          # batches of self.epoch already done
        self.warnings = []               # found during setup, reported after on_start
        self.fine_tuning = False         # resuming a checkpoint trained on other data
        self.out_of_time = False         # some rank's clock passed --max-minutes by the last step

    def elapsed(self):
        return self.elapsed_before + time.perf_counter() - self.started

    def setup(self):
        config = self.config
        options = {"device": config.device} if config.device is not None else {}
        self.backend = backends.get(config.backend, **options)
        self.data = load_data(config)
        if len(self.data.class_names) > ConvoAlphabetModel.classes:
            raise TrainingError(f"EMNIST {config.dataset} has {len(self.data.class_names)} "
                                f"classes, the ConvoAlphabetModel only "
                                f"{ConvoAlphabetModel.classes} outputs")
        self.preprocessing = Preprocessing()
        out_folder = Path(config.out).resolve().parent
        try:
            out_folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot create {out_folder} for the checkpoint: "
                                f"{exc.strerror or exc}") from None
        header = None
        if config.resume:
            header, params, optim_arrays = read_checkpoint(config.resume)
            self.model = build_model(header, params, self.backend)
            self.fine_tuning = self._other_data(header)
            self.data, missing = with_replay(self.data, config, header, self.fine_tuning)
            self.warnings += missing
            if self.fine_tuning and config.lr is None:
                self.config = config = replace(config, lr=FINE_TUNE_LR[config.optimizer])
        else:
            self.model = ConvoAlphabetModel(self.backend, seed=config.seed,
                                            dropout=config.dropout)
        require_graph_memory(self.model, self.rows_per_step, train=True)
        self.world.broadcast_parameters(self.model)
        self.optimizer = make_optimizer(config, self.model)
        if header is not None:
            self._restore(header, optim_arrays)
        self.classifier = Classifier(self.model, self.preprocessing,
                                     {"class_names": self.data.class_names})
        self.validation = validation_indices(len(self.data.test_images), config.validation_size,
                                             config.seed)
        self.batches_per_epoch = batches_per_epoch(self.data, config)
        self.total_batches = (config.epochs * self.batches_per_epoch
                              if config.epochs is not None else None)

    def _other_data(self, header):
        """Whether a checkpoint was trained on other data than this run's (then the run
        fine-tunes it): another folder, or, for checkpoints that do not record their folder,
        another description. Checkpoints that say nothing about their data count as the same."""
        trained_on = header.get("dataset") or {}
        if "source" in trained_on:
            return trained_on["source"] != self.data.source
        before = trained_on.get("description")
        return before is not None and before != self.data.description

    def _restore(self, header, optim_arrays):
        saved = header.get("optimizer") or {}
        self.preprocessing = Preprocessing.from_json(header.get("preprocessing") or {})
        if self.fine_tuning:
            before = (header.get("dataset") or {}).get("description")
            self.warnings.append(f"{self.config.resume} was trained on {before}; fine-tuning it "
                                 f"on {self.data.description} from step 0 with a fresh "
                                 f"optimiser at learning rate {optimizer_base_lr(self.config)}")
            return
        if not saved:
            # Weights from elsewhere (e.g. the seed's imported state file): fine-tune them
            # with a fresh optimiser from step 0.
            self.warnings.append(f"{self.config.resume} holds no training state; training "
                                 "its weights with a fresh optimiser from step 0")
            return
        if saved.get("name") != self.config.optimizer:
            raise CheckpointError(f"{self.config.resume} was trained with optimizer "
                                  f"'{saved.get('name')}', this run asks for "
                                  f"'{self.config.optimizer}'")
        self.optimizer.load_state_dict({"steps": header.get("optimizer_steps", 0),
                                        "arrays": optim_arrays})
        before = (header.get("dataset") or {}).get("description")
        if before and before != self.data.description:
            self.warnings.append(f"resuming a run trained on {before}; now training on "
                                 f"{self.data.description}")
        progress = header.get("progress") or {}
        self.step = int(progress.get("step", 0))
        self.epoch = int(progress.get("epoch", 1))
        self.batch_in_epoch = int(progress.get("batch_in_epoch", 0))
        self.elapsed_before = float(progress.get("elapsed_s", 0.0))
        self.best_accuracy = float(progress.get("best_accuracy", 0.0))
        self.time_to_target = progress.get("time_to_target_s")

    def build_graph(self):
        """The training graph, built once: every step assigns new inputs to its two leaves."""
        self.graph = LetterGraph(self.model, self.rows_per_step, train=True)

    def header(self, metrics=None):
        config = self.config
        return {
            "config": asdict(config),
            "dataset": {"name": config.dataset, "description": self.data.description,
                        "source": self.data.source, "replayed": self.data.replay},
            "class_names": self.data.class_names,
            "optimizer": optimizer_settings(config, self.optimizer),
            "progress": {"step": self.step, "epoch": self.epoch,
                         "batch_in_epoch": self.batch_in_epoch,
                         "elapsed_s": round(self.elapsed(), 3),
                         "best_accuracy": self.best_accuracy,
                         "time_to_target_s": self.time_to_target},
            # Every random draw is a function of (seed, epoch) or (seed, step), so the seed and
            # the step counter are the whole RNG state.
            "rng": {"scheme": "numpy default_rng([seed, stream, step or epoch])",
                    "seed": config.seed, "next_step": self.step + 1},
            "metrics": metrics or ({"validation": self.last_validation}
                                   if self.last_validation else {}),
        }

    def save(self, metrics=None):
        bad = first_bad_parameter(self.model)
        if bad is not None:
            raise TrainingError(f"parameter {bad} is not finite at step {self.step}; "
                                f"{self.config.out} keeps the last good checkpoint")
        save_checkpoint(self.config.out, self.model, self.preprocessing,
                        header=self.header(metrics),
                        optimizer_state=self.optimizer.state_dict())
        self.reporter.on_checkpoint(CheckpointRecord(str(self.config.out), self.step,
                                                     self.elapsed()))

    def validate(self):
        images = self.data.test_images[self.validation]
        labels = self.data.test_labels[self.validation]
        classes = len(self.data.class_names)
        log_probs = self.classifier.predict(images)[:, :classes]
        result = scores(log_probs, labels)
        self.best_accuracy = max(self.best_accuracy, result["accuracy"])
        if self.time_to_target is None and result["accuracy"] >= TARGET_ACCURACY:
            self.time_to_target = round(self.elapsed(), 3)
        matrix = confusion_matrix(log_probs.argmax(axis=1), labels, classes)
        # Show a different validation letter each time.
        which = (self.step // self.config.eval_every) % len(labels)
        probs = np.exp(log_probs[which])
        top3 = tuple((int(c), float(probs[c])) for c in np.argsort(-probs, kind="stable")[:3])
        self.last_validation = {"step": self.step, **result}
        self.reporter.on_validation(ValidationRecord(
            step=self.step, epoch=self.epoch_of_last_step(), loss=result["loss"],
            accuracy=result["accuracy"],
            top2_accuracy=result["top2_accuracy"], best_accuracy=self.best_accuracy,
            elapsed_s=self.elapsed(), sample_image=images[which].copy(),
            sample_label=int(labels[which]), sample_top3=top3,
            most_confused=tuple(most_confused(matrix, top=5))))

    def prepare(self, planned):
        """A planned step's batch as the graph takes it: this rank's rows of the images,
        augmented and preprocessed, and their labels. A pure function of the plan, so it may
        run ahead of the step on another thread."""
        step, epoch, indices = planned
        config = self.config
        mine = indices[self.rows]               # this rank's rows of the batch (all: one process)
        images, labels = self.data.train_images[mine], self.data.train_labels[mine]
        if config.augment:
            # each image's variation depends on (seed, epoch, step, its index) alone, not on
            # the rank
            images = augment(images, config.seed, epoch, mine,
                             augmentation_at(config, step, self.batches_per_epoch))
        return Batch(len(indices), self.preprocessing.apply(images), labels)

    def one_step(self, batch):
        config = self.config
        tick = time.perf_counter()
        rng = step_rng(config.seed, self.step + 1)
        self.graph.feed(batch.inputs, batch.labels)
        self.model.drop.resample(rng, self.rows, batch.size)
        lr = learning_rate(config, self.step + 1, self.total_batches)
        self.optimizer.lr = lr
        self.graph.loss.backward()
        loss = float(self.graph.loss.numpy())
        # Read the predictions before the update: afterwards they would be recomputed.
        accuracy = float((self.graph.log_probs.numpy().argmax(axis=1) == batch.labels).mean())
        # Every rank must stop after the same step, whichever clock runs out first: whether
        # this one has rides with the gradients and comes back as a share of the ranks.
        loss, accuracy, late = self.world.average_gradients(
            self.model.parameters(), loss, accuracy, float(self.past_time_limit()))
        self.out_of_time = late > 0
        bad = None if math.isfinite(loss) else first_bad_gradient(self.model) or "the loss"
        if bad is None and self.backend.host_memory:
            bad = first_bad_gradient(self.model)     # cheap on the host; devices check the loss
        if bad is not None:
            raise TrainingError(f"loss {loss} / gradients stopped being finite at step "
                                f"{self.step + 1} (first non-finite gradient: {bad}); "
                                f"{config.out} keeps the last good checkpoint")
        with self.signals.held_back():          # an interrupt lands before or after a step
            self.optimizer.step()
            self.step += 1
            self.batch_in_epoch += 1
        seconds = time.perf_counter() - tick
        self.reporter.on_batch(BatchRecord(
            step=self.step, epoch=self.epoch, batch=self.batch_in_epoch, loss=loss,
            accuracy=accuracy, images_per_s=batch.size / max(seconds, 1e-9), lr=lr,
            elapsed_s=self.elapsed()))

    def past_time_limit(self):
        """Whether this process's clock has passed --max-minutes (the ranks' clocks differ)."""
        limit = self.config.max_minutes
        return limit is not None and self.elapsed() >= limit * 60

    def epoch_of_last_step(self):
        """The epoch the latest step belonged to (self.epoch has already moved on when that
        step ended an epoch)."""
        return self.epoch - 1 if self.batch_in_epoch == 0 and self.step > 0 else self.epoch

    def finished(self):
        return self.total_batches is not None and self.step >= self.total_batches

    def planned_steps(self):
        """(step, epoch, index batch) of every step still to come, from where the run stands;
        endless for a run bounded only by time."""
        step, epoch, start = self.step, self.epoch, self.batch_in_epoch
        while True:
            for indices in epoch_batches(self.data, self.config, epoch)[start:]:
                if self.total_batches is not None and step >= self.total_batches:
                    return
                step += 1
                yield step, epoch, indices
            epoch, start = epoch + 1, 0

    def end_epoch_when_done(self):
        """Move on to the next epoch once every batch of this one is done (a checkpoint
        written after an epoch's last step, before this, resumes here)."""
        if self.batch_in_epoch >= self.batches_per_epoch:
            with self.signals.held_back():
                self.epoch += 1
                self.batch_in_epoch = 0

    def loop(self):
        config = self.config
        self.end_epoch_when_done()
        if self.finished() or self.world.any(self.past_time_limit()):
            return
        batches = prepared_ahead(self.prepare, self.planned_steps(), self.prepare_ahead)
        with contextlib.closing(batches):
            for batch in batches:
                self.one_step(batch)
                if self.step % config.eval_every == 0:
                    self.world.check_parameters_agree(self.model, self.step)
                    if self.world.is_root:
                        self.validate()
                        self.save()
                self.end_epoch_when_done()
                if self.finished() or self.out_of_time:
                    break

    def finish(self):
        result = evaluate(self.classifier, self.data.test_images, self.data.test_labels,
                          seed=self.config.seed, class_names=self.data.class_names)
        result["time_to_target_s"] = self.time_to_target
        result["target_accuracy"] = TARGET_ACCURACY
        result["dataset"] = self.data.description
        result["best_validation_accuracy"] = self.best_accuracy
        metrics = {"test": {k: result[k] for k in ("count", "loss", "accuracy", "top2_accuracy",
                                                   "perturbed_accuracy",
                                                   "perturbed_top2_accuracy", "per_class",
                                                   "most_confused")},
                   "validation": self.last_validation, "time_to_target_s": self.time_to_target}
        self.save(metrics)
        return result


class _Signals:
    """During a run, Ctrl-C, SIGTERM and SIGHUP (a closed terminal, ``timeout``, a container
    stop) all become KeyboardInterrupt, so each saves a checkpoint and ends the run's records.
    ``held_back()`` delays them while a step's update is half done: an interrupt always lands
    between two steps. Signal handlers exist only in the main thread; elsewhere nothing changes.
    """

    CAUGHT = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.held = 0
        self.pending = False
        self.received = signal.SIGINT      # what stopped the run (Ctrl-C unless told otherwise)
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.CAUGHT:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        self.received = number
        if self.held:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held_back(self, forget=False):
        """Delay interrupts until the block ends; ``forget``: drop them (the run is ending)."""
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
        if self.pending and not self.held:
            self.pending = False
            if not forget:
                raise KeyboardInterrupt


def data_files(config):
    """The EMNIST files a run would read (none for generated letters)."""
    folder = find_data_dir(config.data_dir, config.dataset)
    if folder is None:
        return []
    found = (find_emnist_file(folder, config.dataset, split, kind)
             for split in ("train", "test") for kind in ("images", "labels"))
    return [path for path in found if path is not None]


def check_run_paths(config):
    """Refuse a run whose outputs overlap: --out, --metrics (and SQLite's files beside it) and
    the data files must all differ. --out may name the --resume checkpoint, which is read whole
    before anything is written; --metrics may not."""
    outputs = [("--out", config.out)]
    if config.metrics:
        outputs += [("--metrics", config.metrics), ("--metrics log", config.metrics + "-wal"),
                    ("--metrics index", config.metrics + "-shm")]
    inputs = [("data file", path) for path in data_files(config)]
    check_outputs(outputs, inputs)
    if config.resume:
        check_outputs(outputs[1:], [("--resume", config.resume)])


def train(config: TrainConfig, reporter: Reporter | None = None,
          world: distributed.SingleProcess | None = None, *,
          prepare_ahead: bool = True) -> FinalRecord:
    """Train (or continue training) the ConvoAlphabetModel; returns the final record.

    With ``config.metrics`` set, a MetricsDB is attached next to ``reporter``. A TrainingError
    reaches reporters as a final record whose ``extra["error"]`` holds the message, then
    propagates; Ctrl-C, SIGTERM and SIGHUP become TrainingInterrupted after a checkpoint is
    written.

    Under ``mpirun -n N`` (``world``, found from the environment by default) the N ranks train
    together (see distributed.py); rank 0 alone reports, validates and writes files, and a
    failing rank stops all the others when it exits.

    ``prepare_ahead``: prepare each batch (augmentation, preprocessing) on a background thread
    while the step before it runs; the run's numbers are the same without it.
    """
    if not isinstance(config, TrainConfig):
        raise TrainingError(f"train needs a TrainConfig, not {type(config).__name__}")
    config.checked()
    check_run_paths(config)
    world = world or distributed.world()
    # Refused before any rank waits for another, so every rank stops alike and cleanly.
    world.rows(config.batch_size)
    database = None
    try:
        if not world.is_root:
            reporter = None
        elif config.metrics:
            from microconv.letters.metrics import MetricsDB
            database = MetricsDB(config.metrics)
            # The database first: it records the end of the run even when a screen cannot.
            reporter = Reporters(database, reporter)
        with _Signals() as signals:
            return _train(config, reporter, signals, world, prepare_ahead)
    except BaseException as exc:
        # the exit code a shell gives a process ended by the signal, as the command line does
        stopped_by = getattr(exc, "signal_number", signal.SIGINT)
        world.stop_all_at_exit(128 + stopped_by
                               if isinstance(exc, (KeyboardInterrupt, TrainingInterrupted)) else 1)
        raise
    finally:
        if database is not None:
            database.close()


def _train(config, reporter, signals, world, prepare_ahead):
    run = _Run(config, reporter, signals, world, prepare_ahead)
    run.setup()
    reporter = run.reporter
    reporter.on_start(RunInfo(
        backend=config.backend, device=run.backend.describe(),
        parameters=run.model.parameter_count(), train_size=len(run.data.train_images),
        validation_size=len(run.validation), test_size=len(run.data.test_images),
        dataset=run.data.description, config=asdict(config),
        batches_per_epoch=run.batches_per_epoch, total_batches=run.total_batches))
    for message in run.warnings:
        reporter.on_warning(message)

    def ending(**fields):
        return FinalRecord(steps=run.step, epochs_completed=run.epoch - 1,
                           elapsed_s=run.elapsed(), **fields)

    try:
        # Overflow is found and reported by the loop itself (non-finite loss or gradient, with
        # the step and the layer), so NumPy's own warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            run.build_graph()
            run.loop()
            world.check_parameters_agree(run.model, run.step)
            if not world.is_root:
                return ending(test_accuracy=None, test_top2_accuracy=None, checkpoint=None)
            if run.last_validation is None or run.last_validation["step"] != run.step:
                run.validate()
            result = run.finish()
    except KeyboardInterrupt:
        path = None
        with signals.held_back(forget=True):       # a second Ctrl-C must not lose the save
            try:
                if world.is_root:
                    run.save()
                    path = str(config.out)
            except MicroconvError as exc:
                reporter.on_warning(f"could not save a checkpoint after the interrupt: {exc}")
            reporter.on_end(ending(test_accuracy=None, test_top2_accuracy=None,
                                   checkpoint=path, interrupted=True))
        raise TrainingInterrupted(path, run.step, signals.received) from None
    except MicroconvError as exc:
        # A fault (non-finite values, a failed write, a device error): the checkpoint on disk
        # is the last good one; reporters (and the metrics database) record the error.
        try:
            reporter.on_end(ending(test_accuracy=None, test_top2_accuracy=None,
                                   checkpoint=None, extra={"error": str(exc)}))
        except MicroconvError:
            pass            # a broken metrics database: the first error is the one to tell
        raise
    record = ending(test_accuracy=result["accuracy"], test_top2_accuracy=result["top2_accuracy"],
                    checkpoint=str(config.out), extra=result)
    reporter.on_end(record)
    return record


# Settings that name files to write: they come from the command, never from a checkpoint.
WRITE_PATHS = ("out", "metrics", "resume")


def resume_config(path, **overrides):
    """The TrainConfig a checkpoint was trained with, set to resume from it (for the CLI).

    Its saved settings are kept unless overridden, except the files to write: the checkpoint
    goes to ``overrides["out"]`` or back to ``path``, metrics only where ``overrides`` say.
    Saved settings that are not usable are a CheckpointError naming the checkpoint."""
    header, _, _ = read_checkpoint(path)
    names = {f.name for f in fields(TrainConfig)}
    saved = {k: v for k, v in (header.get("config") or {}).items()
             if k in names and k not in WRITE_PATHS}
    problems = TrainConfig(**saved).type_problems()
    if problems:
        raise CheckpointError(f"{path}: unusable saved training settings: {'; '.join(problems)}")
    saved.update(resume=str(path), out=str(path))
    saved.update(overrides)
    return TrainConfig(**saved)


__all__ = ["TrainConfig", "TrainingInterrupted", "learning_rate", "resume_config", "train"]
