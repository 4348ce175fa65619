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
   have taken (on the NumPy backend, bit for bit).
4. Every ``eval_every`` steps: validate on a fixed subset of the test split, write a checkpoint.
5. At the end: evaluate on the whole test split (clean and perturbed) and write the final
   checkpoint with those metrics in its header.

Expected failures are MicroconvErrors: a non-finite loss or gradient stops training with a
TrainingError naming the step and layer (the last good checkpoint stays as it was); Ctrl-C
writes a checkpoint and raises TrainingInterrupted carrying its path.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from microconv import backends
from microconv.engine import ops
from microconv.engine.optim import SGD, Adam
from microconv.engine.tensor import Tensor
from microconv.errors import CheckpointError, MicroconvError, TrainingError
from microconv.letters.augment import augment
from microconv.letters.checkpoint import Classifier, build_model, read_checkpoint, save_checkpoint
from microconv.letters.data import (
    DATASETS,
    batch_order,
    class_names,
    default_cache_dir,
    describe_source,
    find_data_dir,
    generated_letters,
    is_picture_folder,
    load_split,
)
from microconv.letters.evaluate import confusion_matrix, evaluate, most_confused, scores
from microconv.letters.model import ConvoAlphabetModel
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

DEFAULT_LR = {"adam": 2e-3, "sgd": 0.05}
# Resuming onto other data (a folder of someone's own letters) fine-tunes: a tenth of the
# usual rate learns the new hand and keeps most of what the first data taught (measured in
# docs/training.md: at 2.5 and 5 times this rate the first data's accuracy fell 3 and 7 points
# further).
FINE_TUNE_LR = {"adam": 2e-4, "sgd": 0.005}
GENERATED_TRAIN = 13_000     # generated letters when no EMNIST files are found (~1 ms each)
GENERATED_TEST = 2_600
GENERATED_SHARE_SEED = 2_000_003    # the mixed-in lower-case letters draw from seed + this
# A folder of someone's own letters is small (ten pictures a letter make 260): an epoch shows
# each picture often enough to hold this many letters, every copy augmented differently, so
# that "--epochs 3" means about ninety steps of 64 letters, not a handful.
PICTURE_EPOCH = 2_000
TARGET_ACCURACY = 0.85       # the seed's 24-hour result; the time to pass it is recorded


class TrainingInterrupted(MicroconvError):
    """Training was stopped by the user (Ctrl-C); a checkpoint was written to ``path``."""

    def __init__(self, path, step):
        saved = (f"checkpoint saved to {path}" if path is not None else
                 "the checkpoint could not be saved; the one on disk is from the last validation")
        super().__init__(f"training interrupted at step {step}; {saved}")
        self.path = path
        self.step = step


@dataclass
class TrainConfig:
    backend: str = "numpy"
    device: str | None = None          # backend option, e.g. an OpenCL device
    data_dir: str | None = None        # None: MICROCONV_DATA, the user cache, else generated
    dataset: str = "letters"
    epochs: int | None = 12
    max_minutes: float | None = None   # stop (and evaluate) after this much wall time
    batch_size: int = 64
    lr: float | None = None            # None: the optimiser's default (DEFAULT_LR)
    optimizer: str = "adam"            # "adam" or "sgd" (heavy-ball momentum)
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = True               # vary every training letter as hands, pens and cameras do
    seed: int = 0
    limit: int | None = None           # use only the first N training (and test) images
    out: str = "microconv-letters.npz"
    resume: str | None = None          # a checkpoint to continue from
    metrics: str | None = None         # SQLite file for the metrics database
    eval_every: int = 100              # validate and checkpoint every N batches
    dropout: float = 0.0
    validation_size: int = 1000        # fixed subset of the test split used for validation
    schedule: str = "cosine"           # "cosine": decay to 0 over the run; or "constant"
    # Share of the training set made of generated lower-case letters (synth.LOWERCASE), mixed
    # in because the handwritten data holds mostly capitals; 0 trains on the data alone.
    generated_share: float = 0.25

    def checked(self):
        """Self, after checking every field; a TrainingError names the first bad one."""
        problems = []
        if self.optimizer not in DEFAULT_LR:
            problems.append(f"optimizer must be one of {', '.join(DEFAULT_LR)}, "
                            f"not '{self.optimizer}'")
        if self.dataset not in DATASETS:
            problems.append(f"dataset must be one of {', '.join(DATASETS)}, not '{self.dataset}'")
        if self.schedule not in ("cosine", "constant"):
            problems.append(f"schedule must be cosine or constant, not '{self.schedule}'")
        for name in ("batch_size", "eval_every", "validation_size"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1")
        if self.epochs is not None and self.epochs < 1:
            problems.append("epochs must be at least 1")
        if self.epochs is None and self.max_minutes is None:
            problems.append("give epochs or max_minutes (or both), otherwise training never ends")
        if self.max_minutes is not None and self.max_minutes <= 0:
            problems.append("max_minutes must be positive")
        if self.lr is not None and not self.lr > 0:
            problems.append("lr must be positive")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must lie in [0, 1)")
        if not 0.0 <= self.generated_share < 1.0:
            problems.append("generated_share must lie in [0, 1)")
        if self.limit is not None and self.limit < 1:
            problems.append("limit must be at least 1")
        if problems:
            raise TrainingError("bad training settings: " + "; ".join(problems))
        return self


# --- data -------------------------------------------------------------------------------------

@dataclass
class Dataset:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    description: str
    class_names: str
    source: str          # the data folder's absolute path, or "generated"


def generated_split(split, seed, limit=None):
    """The generated letters a run without data files trains ("train") or tests ("test") on:
    up to GENERATED_TRAIN / GENERATED_TEST of them, the test ones from a seed of their own."""
    count, split_seed = ((GENERATED_TRAIN, seed) if split == "train"
                         else (GENERATED_TEST, seed + 1_000_003))
    return generated_letters(min(limit or count, count), split_seed)


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
    if config.generated_share > 0 and config.dataset == "letters":
        train, added = with_generated_share(train, config.generated_share, config.seed)
        description += f" + {added} generated lower-case letters"
    return Dataset(train[0], train[1], test[0], test[1],
                   f"{description}: {len(train[0])} training, {len(test[0])} test images", names,
                   source)


def with_generated_share(train, share, seed):
    """The training split with generated lower-case letters appended, so that they make up
    ``share`` of it; returns (images, labels) and how many were added."""
    count = round(len(train[0]) * share / (1.0 - share))
    if count == 0:
        return train, 0
    images, labels = generated_letters(count, seed + GENERATED_SHARE_SEED, forms="lower")
    return (np.concatenate([train[0], images]), np.concatenate([train[1], labels])), count


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
    """The rate for a step (from 1): cosine decay from the base rate to 0 over the planned
    batches, or constant. Runs bounded only by time keep the base rate."""
    base = optimizer_base_lr(config)
    if config.schedule == "constant" or not total_batches:
        return base
    progress = min(1.0, (step - 1) / total_batches)
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

class _Run:
    """The state of one training run; ``train`` below is the whole public interface."""

    def __init__(self, config, reporter):
        self.config = config
        self.reporter = reporter or Reporter()
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
        if Path(config.out).is_dir():      # found now, not after the first eval_every steps
            raise TrainingError(f"the checkpoint path {config.out} is a folder; give a file name "
                                "such as letters.npz")
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
            if self.fine_tuning and config.lr is None:
                self.config = config = replace(config, lr=FINE_TUNE_LR[config.optimizer])
        else:
            self.model = ConvoAlphabetModel(self.backend, seed=config.seed,
                                            dropout=config.dropout)
        self.optimizer = make_optimizer(config, self.model)
        if header is not None:
            self._restore(header, optim_arrays)
        self.classifier = Classifier(self.model, self.preprocessing,
                                     {"class_names": self.data.class_names})
        self.validation = validation_indices(len(self.data.test_images), config.validation_size,
                                             config.seed)
        self.batches_per_epoch = len(self.data.train_images) // config.batch_size
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
        """The training graph, built once: every step assigns new inputs to the two leaves."""
        b = self.config.batch_size
        dtype = self.model.dtype
        self.x_leaf = Tensor.leaf(np.zeros((b, 1, 28, 28), dtype=dtype), self.backend)
        self.y_leaf = Tensor.leaf(np.zeros((b, ConvoAlphabetModel.classes), dtype=dtype),
                                  self.backend)
        self.log_probs = self.model(self.x_leaf, train=True)
        self.loss = ops.nll_loss(self.log_probs, self.y_leaf)

    def header(self, metrics=None):
        config = self.config
        return {
            "config": asdict(config),
            "dataset": {"name": config.dataset, "description": self.data.description,
                        "source": self.data.source},
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

    def one_step(self, indices):
        config = self.config
        tick = time.perf_counter()
        rng = step_rng(config.seed, self.step + 1)
        images = self.data.train_images[indices]
        if config.augment:
            images = augment(images, config.seed, self.epoch, indices)
        labels = self.data.train_labels[indices]
        self.x_leaf.assign(self.preprocessing.apply(images))
        self.y_leaf.assign(ops.one_hot(labels, ConvoAlphabetModel.classes, self.model.dtype))
        self.model.drop.resample(rng)
        lr = learning_rate(config, self.step + 1, self.total_batches)
        self.optimizer.lr = lr
        self.loss.backward()
        loss = float(self.loss.numpy())
        bad = None if math.isfinite(loss) else first_bad_gradient(self.model) or "the loss"
        if bad is None and config.backend in ("numpy", "python"):
            bad = first_bad_gradient(self.model)     # cheap on the host; devices check the loss
        if bad is not None:
            raise TrainingError(f"loss {loss} / gradients stopped being finite at step "
                                f"{self.step + 1} (first non-finite gradient: {bad}); "
                                f"{config.out} keeps the last good checkpoint")
        # Read the predictions before the update: afterwards they would be recomputed.
        accuracy = float((self.log_probs.numpy().argmax(axis=1) == labels).mean())
        self.optimizer.step()
        self.step += 1
        self.batch_in_epoch += 1
        seconds = time.perf_counter() - tick
        self.reporter.on_batch(BatchRecord(
            step=self.step, epoch=self.epoch, batch=self.batch_in_epoch, loss=loss,
            accuracy=accuracy, images_per_s=len(indices) / max(seconds, 1e-9), lr=lr,
            elapsed_s=self.elapsed()))

    def out_of_time(self):
        limit = self.config.max_minutes
        return limit is not None and self.elapsed() >= limit * 60

    def epoch_of_last_step(self):
        """The epoch the latest step belonged to (self.epoch has already moved on when that
        step ended an epoch)."""
        return self.epoch - 1 if self.batch_in_epoch == 0 and self.step > 0 else self.epoch

    def finished(self):
        return self.total_batches is not None and self.step >= self.total_batches

    def loop(self):
        config = self.config
        while not self.finished() and not self.out_of_time():
            order = batch_order(len(self.data.train_images), config.batch_size,
                                epoch_rng(config.seed, self.epoch))
            for indices in order[self.batch_in_epoch:]:
                self.one_step(indices)
                if self.step % config.eval_every == 0:
                    self.validate()
                    self.save()
                if self.finished() or self.out_of_time():
                    break
            if self.batch_in_epoch >= len(order):
                self.epoch += 1
                self.batch_in_epoch = 0

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


def train(config: TrainConfig, reporter: Reporter | None = None) -> FinalRecord:
    """Train (or continue training) the ConvoAlphabetModel; returns the final record.

    With ``config.metrics`` set, a MetricsDB is attached next to ``reporter``. A TrainingError
    reaches reporters as a final record whose ``extra["error"]`` holds the message, then
    propagates; Ctrl-C becomes TrainingInterrupted after a checkpoint is written.
    """
    config.checked()
    database = None
    if config.metrics:
        from microconv.letters.metrics import MetricsDB
        database = MetricsDB(config.metrics)
        reporter = Reporters(reporter, database)
    try:
        return _train(config, reporter)
    finally:
        if database is not None:
            database.close()


def _train(config, reporter):
    run = _Run(config, reporter)
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
    run.build_graph()

    def ending(**fields):
        return FinalRecord(steps=run.step, epochs_completed=run.epoch - 1,
                           elapsed_s=run.elapsed(), **fields)

    try:
        # Overflow is found and reported by the loop itself (non-finite loss or gradient, with
        # the step and the layer), so NumPy's own warnings would only add noise.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            run.loop()
            if run.last_validation is None or run.last_validation["step"] != run.step:
                run.validate()
            result = run.finish()
    except KeyboardInterrupt:
        path = None
        try:
            run.save()
            path = str(config.out)
        except MicroconvError as exc:
            reporter.on_warning(f"could not save a checkpoint after the interrupt: {exc}")
        reporter.on_end(ending(test_accuracy=None, test_top2_accuracy=None, checkpoint=path,
                               interrupted=True))
        raise TrainingInterrupted(path, run.step) from None
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


def resume_config(path, **overrides):
    """The TrainConfig a checkpoint was trained with, set to resume from it (for the CLI)."""
    header, _, _ = read_checkpoint(path)
    saved = dict(header.get("config") or {})
    known = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__}
    known.update(resume=str(path), out=str(overrides.pop("out", known.get("out") or path)))
    known.update(overrides)
    return TrainConfig(**known)


__all__ = ["TrainConfig", "TrainingInterrupted", "learning_rate", "resume_config", "train"]
