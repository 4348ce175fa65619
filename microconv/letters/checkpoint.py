"""Checkpoints: one ``.npz`` file of named arrays plus a JSON header, written atomically.

The header says what the arrays mean: the architecture and its options, the preprocessing
the network expects, and (for training runs) the optimiser, step, epoch, RNG state and
metrics. Parameters are stored as ``param/<name>``, optimiser state as ``optim/<name>/<key>``.
A write goes to a temporary file in the same folder that is renamed over the target only when
complete, so the previous checkpoint survives any failure while writing.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from microconv.engine.tensor import Tensor
from microconv.errors import CheckpointError, MicroconvError
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing

FORMAT = "microconv-checkpoint"
VERSION = 1
ARCHITECTURES = {"ConvoAlphabetModel": ConvoAlphabetModel}


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

    A failure raises ``error`` (a MicroconvError class) and leaves any earlier file intact.
    With ``replace=False`` an existing file at ``path`` is never replaced: the finished file
    is linked into place, and FileExistsError tells the caller to choose another name."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())       # mkstemp makes owner-only files; keep the usual
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)             # fails when path exists, unlike a rename
            _remove_quietly(tmp)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, FileExistsError) and not replace:
            raise
        raise error(f"cannot write {path}: {exc.strerror or exc}; "
                    "any earlier file there is unchanged") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def read_checkpoint(path):
    """(header, parameters, optimiser arrays) from a checkpoint file, or a CheckpointError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        # np.load would try to unpickle it and suggest allow_pickle, which is never wanted here.
        raise CheckpointError(f"{path} is not a microconv checkpoint (not an .npz archive)")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):     # a lone .npy array
            raise CheckpointError(f"{path} is a single NumPy array, not a microconv checkpoint")
        with data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, MemoryError,
            NotImplementedError) as exc:
        # MemoryError: a damaged array header can claim an enormous shape;
        # NotImplementedError: zip compression methods numpy cannot read.
        raise CheckpointError(f"{path} is not a readable microconv checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no valid microconv header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a microconv checkpoint")
    architecture = header.get("architecture")
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise CheckpointError(f"{path}: unknown architecture {header.get('architecture')!r}; "
                              f"known: {', '.join(ARCHITECTURES)}")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    unusable = [name for name, value in params.items()
                if value.dtype.kind not in "fiu" or not np.isfinite(value).all()]
    if unusable:
        raise CheckpointError(f"{path}: parameters {', '.join(unusable)} are not finite real "
                              "numbers; the weights are unusable")
    return header, params, optim


def build_model(header, params, backend="numpy", dtype="float32"):
    """The model a checkpoint describes, with its parameters loaded."""
    options = header.get("model_options") or {}
    try:
        model = ARCHITECTURES[header["architecture"]](backend=backend, dtype=dtype, **options)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint model options do not fit: {exc}") from None
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
            leaf = Tensor.leaf(np.zeros((n, 1, 28, 28), dtype=self.model.dtype), self.model.backend)
            self._graphs[n] = (leaf, self.model(leaf))
        leaf, out = self._graphs[n]
        leaf.assign(chunk)
        return out.numpy()

    def predict(self, images):
        """Upright uint8 images -> log-probabilities (N, 26)."""
        return self.log_probs(self.preprocess(images))


def load_checkpoint(path, backend="numpy", **backend_options):
    """Load a checkpoint as a Classifier on the given backend."""
    from microconv import backends
    header, params, _ = read_checkpoint(path)
    be = backends.get(backend, **backend_options) if isinstance(backend, str) else backend
    model = build_model(header, params, be)
    preprocessing = Preprocessing.from_json(header.get("preprocessing") or {})
    return Classifier(model, preprocessing, header)
