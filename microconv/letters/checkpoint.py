"""Checkpoints: one ``.npz`` file of named arrays plus a JSON header, written atomically.

The header says what the arrays mean: the architecture and its options, the preprocessing
the network expects, and (for training runs) the optimiser, step, epoch, RNG state and
metrics. Parameters are stored as ``param/<name>``, optimiser state as ``optim/<name>/<key>``.

Reading trusts nothing in the file: only the header, param/ and optim/ members are read, their
sizes bounded before reading, and every header field is checked by ``HEADER_SCHEMA``.

Writing is the project's one way to write a file (``write_atomically``, used for pictures,
dot text, charts and downloads too): a temporary file in the same folder is renamed over the
target only when complete, so the previous file survives any failure. ``check_outputs``
refuses a command whose outputs name its inputs or each other.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
import time
import zipfile

import numpy as np

from microconv.errors import CheckpointError, DataError, MicroconvError
from microconv.letters import preprocess, schema
from microconv.letters.data import class_names as dataset_classes
from microconv.letters.model import ConvoAlphabetModel, LetterGraph
from microconv.letters.preprocess import Preprocessing
from microconv.resources import require_memory, size_text

try:
    import fcntl
except ImportError:                 # not POSIX: temporaries are never judged abandoned
    fcntl = None

FORMAT = "microconv-checkpoint"
VERSION = 1
ARCHITECTURES = {"ConvoAlphabetModel": ConvoAlphabetModel}
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".part"
TEMP_NAME = re.compile(r"\.tmp-[A-Za-z0-9_]{8}\.part")     # what tempfile.mkstemp makes of them
ABANDONED_AFTER_S = 60          # a temporary this old whose lock is free lost its writer
MAX_HEADER_BYTES = 1 << 20      # a real header is about 3 KB
MAX_ARRAY_BYTES = 256 << 20     # a ConvoAlphabetModel with Adam state is about 1.7 MB
MAX_MEMBERS = 1000
MAX_SECONDS = 1e9               # 31 years of training time: more is a damaged number


def save_checkpoint(path, model, preprocessing, header=None, optimizer_state=None):
    """Write the model's parameters (and optionally optimiser state) with a JSON header."""
    full_header = {"format": FORMAT, "version": VERSION, "architecture": model.architecture,
                   "model_options": model.options, "preprocessing": preprocessing.to_json()}
    full_header.update(header or {})
    arrays = {f"param/{name}": value for name, value in model.state_dict().items()}
    if optimizer_state is not None:
        full_header["optimizer_steps"] = optimizer_state["steps"]
        arrays.update({f"optim/{key}": value for key, value in optimizer_state["arrays"].items()})
    arrays["header"] = np.frombuffer(json.dumps(full_header).encode("utf-8"), dtype=np.uint8)
    write_atomically(path, lambda f: np.savez(f, **arrays))


def write_atomically(path, write, error=CheckpointError, replace=True):
    """Call write(file) on a temporary file beside ``path``, then rename it into place.

    Only an ordinary file (or nothing) is ever replaced: a folder, device, FIFO or socket at
    ``path`` is refused before anything is written. The temporary file is locked while it is
    written, so ``remove_abandoned_temporaries`` (run first, for that folder) removes only the
    ones whose writer is gone. A failure raises ``error`` (a MicroconvError class) naming the
    file and leaves any earlier file intact. With ``replace=False`` an existing file at
    ``path`` is never replaced: the finished file is linked into place, and FileExistsError
    tells the caller to choose another name."""
    path = os.fspath(path)
    refuse_special_file(path, "cannot write", error)
    folder = os.path.dirname(os.path.abspath(path))
    remove_abandoned_temporaries(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _lock(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes owner-only files; keep the usual
            write(f)
            f.flush()
            os.fsync(f.fileno())
            # while still locked: never seen as abandoned
            if replace:
                os.replace(tmp, path)
            else:
                os.link(tmp, path)             # fails when path exists, unlike a rename
                _remove_quietly(tmp)
        _sync_folder(folder)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, FileExistsError) and not replace:
            raise
        raise error(f"cannot write {path}: {exc.strerror or exc}; "
                    "any earlier file there is unchanged") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def refuse_special_file(path, action, error=MicroconvError, label=None):
    """Raise ``error`` when ``path`` exists and is not an ordinary file (a folder, a device such
    as /dev/null, a FIFO or a socket): writing there would replace it, or hang, or vanish."""
    name = f"{label} {path}" if label else path
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return                              # nothing there yet; creating it is checked later
    except OSError as exc:
        raise error(f"{action} {name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{action} {name}: it is a folder; give a file name")
    if not stat.S_ISREG(mode):
        raise error(f"{action} {name}: it is not an ordinary file (a device, FIFO or socket); "
                    "only ordinary files are replaced")


def same_file(a, b):
    """Whether two paths name one file: the same resolved path, or (hard links, bind mounts,
    another spelling) the same device and inode."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs, inputs=(), error=MicroconvError):
    """Refuse a command whose outputs overlap: ``outputs`` and ``inputs`` are (label, path)
    pairs (None paths are skipped). No output may be an input or another output, and every
    output must be an ordinary file or not exist yet; the error names both paths."""
    outputs = [(label, os.fspath(path)) for label, path in outputs if path is not None]
    inputs = [(label, os.fspath(path)) for label, path in inputs if path is not None]
    for index, (label, path) in enumerate(outputs):
        refuse_special_file(path, "cannot write", error, label)
        for other_label, other in outputs[:index] + inputs:
            if same_file(path, other):
                raise error(f"{label} {path} is the same file as {other_label} {other}; "
                            "give each its own file")


def remove_abandoned_temporaries(folder):
    """Remove our temporary files (``.tmp-XXXXXXXX.part``) in ``folder`` that a killed writer
    left behind: older than a minute and not locked by a living writer. Anything else, and any
    file that cannot be checked, is left alone."""
    try:
        names = [name for name in os.listdir(folder) if TEMP_NAME.fullmatch(name)]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if (stat.S_ISREG(info.st_mode) and time.time() - info.st_mtime > ABANDONED_AFTER_S
                    and _try_lock(fd) and os.lstat(path).st_ino == info.st_ino):
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _lock(fd):
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _try_lock(fd):
    """True when nobody holds the file's lock (a living writer does while it writes)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _sync_folder(folder):
    """Make the rename itself durable; some file systems cannot, which changes nothing."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


# --- reading -----------------------------------------------------------------------------------

def _header_schema():
    number, integer, text = schema.number, schema.integer, schema.text
    model_classes = max(a.classes for a in ARCHITECTURES.values())
    return schema.record({
        "format": text(choices=(FORMAT,)),
        "version": integer(1, VERSION),
        "architecture": text(choices=tuple(ARCHITECTURES)),
        "model_options": schema.record({"dropout": number(0, below=1),
                                        "output_gelu": schema.boolean,
                                        "pool_gelu": schema.boolean}, closed=True),
        "preprocessing": preprocess.SCHEMA,
        "class_names": text(max_length=model_classes, distinct=True),
        "config": schema.mapping(schema.scalar),
        "dataset": schema.record({"name": text(), "description": text()}),
        "optimizer": schema.record({
            "name": text(), "lr": number(above=0), "weight_decay": number(0),
            "schedule": text(), "momentum": number(), "eps": number(above=0),
            "betas": schema.listing(number(0, 1), 2, 2)}),
        "optimizer_steps": integer(0),
        "progress": schema.record({
            "step": integer(0), "epoch": integer(1), "batch_in_epoch": integer(0),
            "elapsed_s": number(0, MAX_SECONDS), "best_accuracy": number(0, 1),
            "time_to_target_s": schema.optional(number(0, MAX_SECONDS))}),
        "rng": schema.record({"scheme": text(), "seed": integer(0), "next_step": integer(1)}),
        "metrics": schema.mapping(schema.anything),
        "imported_from": text(),
        "seed_state": schema.mapping(schema.scalar),
    }, required=("format", "version", "architecture"))


# Every field a checkpoint header may hold, checked before any of it is used.
HEADER_SCHEMA = _header_schema()


def check_header(header, path):
    """The header, if every field fits the schema; otherwise one CheckpointError line."""
    if type(header) is not dict or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a microconv checkpoint")
    try:
        HEADER_SCHEMA(header, "header")
    except schema.Invalid as exc:
        raise CheckpointError(f"{path}: unusable checkpoint: {exc}") from None
    steps, progress = header.get("optimizer_steps"), header.get("progress") or {}
    if steps is not None and "step" in progress and steps != progress["step"]:
        raise CheckpointError(f"{path}: unusable checkpoint: the optimiser took {steps} steps "
                              f"but the run is at step {progress['step']}")
    return header


def _wanted(name):
    return name == "header.npy" or (name.startswith(("param/", "optim/")) and name.endswith(".npy"))


def _read_members(path):
    """The header, param/ and optim/ arrays of a checkpoint archive, by name (without .npy).

    Only those members are decompressed; their sizes come from the zip directory and are
    checked before reading, and every array header is checked against its member's size, so
    a damaged or hostile archive can neither inflate junk nor make us allocate more than the
    file really holds."""
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if _wanted(info.filename)]
        if len(members) > MAX_MEMBERS:
            raise CheckpointError(f"{path} holds {len(members)} arrays; a microconv checkpoint "
                                  f"holds at most {MAX_MEMBERS}")
        total = sum(info.file_size for info in members)
        if total > MAX_ARRAY_BYTES:
            raise CheckpointError(f"{path}: its arrays would take {size_text(total)}; a microconv "
                                  f"checkpoint holds at most {size_text(MAX_ARRAY_BYTES)}")
        require_memory(total, f"reading {path}")
        arrays = {}
        for info in members:
            if info.filename == "header.npy" and info.file_size > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: the header takes {size_text(info.file_size)}, "
                                      f"more than the {size_text(MAX_HEADER_BYTES)} allowed")
            with archive.open(info) as member:
                arrays[info.filename[:-len(".npy")]] = _read_array(member, info, path)
    return arrays


def _read_array(member, info, path):
    """One .npy member as a (writable) NumPy array of plain numbers."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject or dtype.kind not in "fiu":
        raise CheckpointError(f"{path}: arrays {info.filename[:-len('.npy')]} are not finite real "
                              f"numbers ({dtype} values); the weights are unusable")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != info.file_size - member.tell():
        raise CheckpointError(f"{path}: {info.filename} claims shape {shape} of {dtype}, which "
                              "does not match its size in the archive")
    buffer = bytearray(nbytes)
    if member.readinto(buffer) != nbytes:
        raise EOFError(f"{info.filename} is cut short")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def read_checkpoint(path):
    """(header, parameters, optimiser arrays) from a checkpoint file, or a CheckpointError.

    The header is checked field by field against one schema before any of it is used."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        # np.load would try to unpickle it and suggest allow_pickle, which is never wanted here.
        raise CheckpointError(f"{path} is not a microconv checkpoint (not an .npz archive)")
    try:
        arrays = _read_members(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, MemoryError,
            NotImplementedError, RuntimeError) as exc:
        # NotImplementedError: zip compression methods Python cannot read; RuntimeError: an
        # encrypted member.
        raise CheckpointError(f"{path} is not a readable microconv checkpoint "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    try:
        raw = arrays.pop("header")
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError("not bytes")
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (KeyError, ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{path} has no valid microconv header") from None
    check_header(header, path)
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    unusable = [name for name, value in {**params, **optim}.items()
                if not np.isfinite(value).all()]
    if unusable:
        raise CheckpointError(f"{path}: arrays {', '.join(unusable)} are not finite real "
                              "numbers; the weights are unusable")
    return header, params, optim


def build_model(header, params, backend="numpy", dtype="float32"):
    """The model a checkpoint describes (its header already checked), parameters loaded."""
    options = header.get("model_options") or {}
    model = ARCHITECTURES[header["architecture"]](backend=backend, dtype=dtype, **options)
    model.load_state_dict(params)
    return model


class Classifier:
    """A trained network ready for inference: preprocessing plus log-probabilities."""

    batch_size = 256

    def __init__(self, model, preprocessing, header=None):
        self.model = model
        self.preprocessing = preprocessing
        self.header = header or {}
        self._graphs = {}

    @property
    def class_names(self):
        """What each output means, in order: the classes it was trained on (the first
        ``len(class_names)`` outputs), letters A-Z when the checkpoint does not say."""
        return self.header.get("class_names") or dataset_classes("letters")

    def require_letters(self, name):
        """Refuse a network trained on other classes (digits) where letters are read, rather
        than answer with letters; ``name`` says which checkpoint in the message."""
        if self.class_names != dataset_classes("letters"):
            raise DataError(f"{name} was trained on the classes {self.class_names}, but this "
                            "reads letters A-Z; use a checkpoint trained on letters")

    def preprocess(self, images):
        """Upright uint8 images (N, 28, 28) -> network input (N, 1, 28, 28) float32."""
        return self.preprocessing.apply(images)

    def log_probs(self, x):
        """Network input (N, 1, 28, 28) -> log-probabilities (N, 26) as a NumPy array."""
        x = np.asarray(x, dtype=self.model.dtype)
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28):
            raise MicroconvError(f"log_probs: input must have shape (N, 1, 28, 28), got {x.shape}")
        chunks = [self._run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.model.classes), np.float32)

    def _run(self, chunk):
        n = len(chunk)
        if n not in self._graphs:
            if len(self._graphs) > 4:        # keep a few batch sizes, not one graph per size
                self._graphs.clear()
            self._graphs[n] = LetterGraph(self.model, n)
        graph = self._graphs[n]
        graph.feed(chunk)
        return graph.log_probs.numpy()

    def predict(self, images):
        """Upright uint8 images -> log-probabilities (N, 26)."""
        return self.log_probs(self.preprocess(images))


def load_checkpoint(path, backend="numpy", **backend_options):
    """Load a checkpoint as a Classifier on the given backend (a name or a backend object)."""
    from microconv import backends
    header, params, _ = read_checkpoint(path)
    model = build_model(header, params, backends.resolve(backend, **backend_options))
    preprocessing = Preprocessing.from_json(header.get("preprocessing") or {})
    return Classifier(model, preprocessing, header)
