"""Handwritten-letter data: the EMNIST IDX reader, where to find the files, and augmentation.

EMNIST ships each split as two IDX files: images (magic 2051, dimensions N x 28 x 28, uint8)
and labels (magic 2049, dimension N, uint8), usually gzip-compressed. Two quirks are fixed here
once, so nothing downstream has to know about them:

* EMNIST stores every image transposed. ``load_emnist`` returns upright images (row = y,
  col = x, as a person sees the letter), exactly what the seed's reader produces.
* EMNIST letters numbers its classes 1..26 (1 = A/a). Labels come out as 0..25.

Images stay uint8 in memory (10 MB for EMNIST letters' training split instead of the seed's
390 MB of floats) and become network input one batch at a time through the checkpoint's
``Preprocessing``.

Where the files are looked for, in order: an explicit ``--data-dir``, the ``MICROCONV_DATA``
environment variable, then the user cache ``~/.cache/microconv/emnist`` (``$XDG_CACHE_HOME``
is honoured), which is where ``microconv data download`` puts them.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import string
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from microconv.engine.tensor import real_array
from microconv.errors import DataError, MicroconvError
from microconv.resources import require_memory

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
ROWS = COLS = 28
CHUNK = 1 << 20                     # read files in 1 MiB pieces, never one giant allocation

# Per EMNIST split: the class names in label order, and what the files' first label is.
DATASETS = {
    "letters": {"classes": string.ascii_uppercase, "first_label": 1},
    "digits": {"classes": string.digits, "first_label": 0},
    "mnist": {"classes": string.digits, "first_label": 0},
    "balanced": {"classes": string.digits + string.ascii_uppercase + "abdefghnqrt",
                 "first_label": 0},
    "bymerge": {"classes": string.digits + string.ascii_uppercase + "abdefghnqrt",
                "first_label": 0},
    "byclass": {"classes": string.digits + string.ascii_uppercase + string.ascii_lowercase,
                "first_label": 0},
}
SPLITS = ("train", "test")

# Checksums of files we know. The official EMNIST IDX files are not listed because no
# trustworthy record of their sha256 was at hand; ``verify`` still checks their structure.
KNOWN_SHA256 = {
    "afaa47cbdbc1999e2d2f218e4abb8b2231f1d86d7da00694d3be4a2209d6ebd9":
        "handwritten-letters stand-in: emnist-letters-test-images-idx3-ubyte.gz",
    "ae346e059174d0678886cfa294780bb960914f0503c282ac16d4cb74fd44d3d6":
        "handwritten-letters stand-in: emnist-letters-test-labels-idx1-ubyte.gz",
    "d6d69de4761bb5f2959632958599766605dec3beb0cc8056eb7feca0f176ae86":
        "handwritten-letters stand-in: emnist-letters-train-images-idx3-ubyte.gz",
    "135ad102cc3e36aea838aa06646ce1eb3270b2244bc0ddd6e05b1c9dcc401d29":
        "handwritten-letters stand-in: emnist-letters-train-labels-idx1-ubyte.gz",
}


def class_names(dataset="letters"):
    """The printable name of every class of an EMNIST split, in label order."""
    return DATASETS[_check_dataset(dataset)]["classes"]


def _check_dataset(dataset):
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset '{dataset}'; known: {', '.join(DATASETS)}")
    return dataset


# --- the IDX reader ---------------------------------------------------------------------------

def _open(path):
    """The file opened for reading, decompressing gzip transparently (detected by content)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb"), gzipped


def _read_exactly(f, n, path, what):
    """n bytes into one uint8 array, read in chunks: memory is touched only as data arrives,
    so a lying header costs nothing, and a real file costs its size once (never twice)."""
    payload = np.empty(n, dtype=np.uint8)
    view, got = memoryview(payload), 0
    while got < n:
        count = f.readinto(view[got:got + CHUNK])
        if not count:
            raise DataError(f"{path}: truncated: the header promises {n} bytes of {what}, "
                            f"the file holds only {got}")
        got += count
    return payload


def read_idx(path, expect_magic=None):
    """An IDX file (gzip or raw) as a uint8 NumPy array shaped by its header.

    Checks the magic number, the dimensions and that the file length matches the header
    exactly; every problem is a DataError naming the file and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    try:
        f, gzipped = _open(path)
        with f:
            head = _read_exactly(f, 4, path, "header").tobytes()
            magic = struct.unpack(">I", head)[0]
            dtype_code, ndim = head[2], head[3]
            if head[:2] != b"\0\0" or dtype_code != 0x08 or not 1 <= ndim <= 3:
                raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {magic})")
            if expect_magic is not None and magic != expect_magic:
                kind = "images" if expect_magic == IMAGE_MAGIC else "labels"
                raise DataError(f"{path}: magic number {magic}, expected {expect_magic} "
                                f"for an IDX {kind} file")
            raw_dims = _read_exactly(f, 4 * ndim, path, "dimensions").tobytes()
            dims = struct.unpack(f">{ndim}I", raw_dims)
            size = math.prod(dims)      # Python ints: a lying header cannot overflow this
            if not gzipped:
                # Raw files: compare with the length on disk before reading anything.
                actual = os.path.getsize(path) - 4 - 4 * ndim
                if actual != size:
                    raise DataError(f"{path}: the header promises {size} bytes of data "
                                    f"{tuple(dims)}, the file holds {actual}")
            require_memory(size, f"{path}: the data its header promises {tuple(dims)}",
                           error=DataError)
            payload = _read_exactly(f, size, path, f"data {tuple(dims)}")
            if f.read(1):
                raise DataError(f"{path}: more data than the header {tuple(dims)} promises")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    return payload.reshape(dims)


def write_idx(path, array, gzipped=None):
    """Write a uint8 array as an IDX file (gzip when the name ends in .gz); used by tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x800 + array.ndim          # unsigned bytes; 2051 for images, 2049 for labels
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    gzipped = str(path).endswith(".gz") if gzipped is None else gzipped
    Path(path).write_bytes(gzip.compress(data, mtime=0) if gzipped else data)


# --- EMNIST files -----------------------------------------------------------------------------

def emnist_filename(dataset, split, kind):
    """e.g. emnist-letters-train-images-idx3-ubyte (without .gz)."""
    return f"emnist-{dataset}-{split}-{'images-idx3' if kind == 'images' else 'labels-idx1'}-ubyte"


def find_emnist_file(data_dir, dataset, split, kind):
    """The path of one EMNIST file in data_dir (or its gzip/ subfolder, as the official archive
    unpacks), gzipped or raw; None when absent."""
    base = emnist_filename(dataset, split, kind)
    for folder in (Path(data_dir), Path(data_dir) / "gzip"):
        for name in (base + ".gz", base):
            if (folder / name).is_file():
                return folder / name
    return None


def load_emnist(data_dir, split="train", dataset="letters"):
    """(images, labels) of one EMNIST split: upright uint8 (N, 28, 28) and int64 class indices
    from 0 (letters' 1..26 become 0..25)."""
    _check_dataset(dataset)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if data_dir is None or not Path(data_dir).is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    paths = {kind: find_emnist_file(data_dir, dataset, split, kind)
             for kind in ("images", "labels")}
    missing = [emnist_filename(dataset, split, k) + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"{data_dir} lacks {' and '.join(missing)}")
    stored = read_idx(paths["images"], IMAGE_MAGIC)
    raw_labels = read_idx(paths["labels"], LABEL_MAGIC)
    if stored.ndim != 3 or stored.shape[1:] != (ROWS, COLS):
        raise DataError(f"{paths['images']}: images must be 28x28, the header says "
                        f"{stored.shape[1:]}")
    if raw_labels.ndim != 1:
        raise DataError(f"{paths['labels']}: labels must be one-dimensional, "
                        f"got {raw_labels.shape}")
    if len(stored) != len(raw_labels):
        raise DataError(f"{paths['images'].name} holds {len(stored)} images but "
                        f"{paths['labels'].name} holds {len(raw_labels)} labels")
    if len(stored) == 0:
        raise DataError(f"{paths['images']}: the dataset is empty")
    info = DATASETS[dataset]
    labels = raw_labels.astype(np.int64) - info["first_label"]
    bad = (labels < 0) | (labels >= len(info["classes"]))
    if bad.any():
        lo, hi = info["first_label"], info["first_label"] + len(info["classes"]) - 1
        raise DataError(f"{paths['labels']}: label {int(raw_labels[bad][0])} is outside "
                        f"{lo}..{hi} for EMNIST {dataset}")
    # EMNIST stores images transposed; fix it once, here (seed-spec 3.4).
    images = np.ascontiguousarray(stored.transpose(0, 2, 1))
    return images, labels


def has_emnist_files(path, dataset="letters"):
    """True when path holds at least one file of an EMNIST split (complete or not)."""
    return any(find_emnist_file(path, dataset, split, kind) is not None
               for split in SPLITS for kind in ("images", "labels"))


def is_picture_folder(data_dir, dataset="letters"):
    """True when a data folder holds pictures in one sub-folder per letter (folders.py)
    rather than EMNIST files."""
    from microconv.letters import folders
    return not has_emnist_files(data_dir, dataset) and folders.is_image_folder(data_dir)


def load_split(data_dir, split="train", dataset="letters"):
    """(images, labels) of one split of a data folder, whichever way it is laid out: EMNIST
    files (``load_emnist``), or pictures in one sub-folder per letter (folders.py)."""
    from microconv.letters import folders
    if is_picture_folder(data_dir, dataset):
        if dataset != "letters":
            raise DataError(f"{data_dir} is a folder of letter pictures; it can only be used "
                            f"with --dataset letters, not {dataset}")
        return folders.load_image_folder(data_dir, split)
    if Path(data_dir).is_dir() and not has_emnist_files(data_dir, dataset):
        raise DataError(f"{data_dir} lacks EMNIST {dataset} files "
                        f"({emnist_filename(dataset, split, 'images')}[.gz] ...) and holds no "
                        "folder of pictures per letter")
    return load_emnist(data_dir, split, dataset)


def describe_source(data_dir, dataset="letters"):
    """What kind of data a folder holds, in a few words, for run descriptions."""
    if is_picture_folder(data_dir, dataset):
        return "letter pictures (one folder per letter)"
    test_images = find_emnist_file(data_dir, dataset, "test", "images")
    known = KNOWN_SHA256.get(file_digest(test_images), "") if test_images else ""
    return ("handwritten-letters stand-in (EMNIST format)" if "stand-in" in known
            else f"EMNIST {dataset}")


def default_cache_dir():
    """The user cache where downloads go: $XDG_CACHE_HOME/microconv/emnist or ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "microconv" / "emnist"


def has_dataset(path, dataset="letters"):
    """True when path holds all four files of an EMNIST split."""
    return path is not None and Path(path).is_dir() and all(
        find_emnist_file(path, dataset, split, kind) is not None
        for split in SPLITS for kind in ("images", "labels"))


def find_data_dir(explicit=None, dataset="letters"):
    """Where the EMNIST files are: the explicit directory (returned even when incomplete, so
    the user gets an error about it), else MICROCONV_DATA, else the user cache; None if none
    of these holds the dataset."""
    if explicit is not None:
        return Path(explicit)
    for candidate in (os.environ.get("MICROCONV_DATA"), default_cache_dir()):
        if candidate and has_dataset(candidate, dataset):
            return Path(candidate)
    return None


def _datasets_in(path, dataset=None):
    """The datasets to look at in a data directory: the one asked for, else every one with at
    least one file there; a DataError when the directory is missing or holds none."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist")
    datasets = [_check_dataset(dataset)] if dataset else [
        name for name in DATASETS if has_emnist_files(path, name)]
    if not datasets:
        raise DataError(f"{path} holds no EMNIST files (emnist-<dataset>-<split>-...-ubyte[.gz])")
    return datasets


def orientation_check(images, labels, dataset="letters"):
    """Whether upright images look upright: the mean 'I' (or '1') is a vertical bar, so its
    column profile varies much more than its row profile. Returns (verdict, ratio)."""
    names = class_names(dataset)
    target = names.index("I") if "I" in names else names.index("1")
    chosen = images[labels == target]
    if len(chosen) < 5:
        return "unknown (too few examples of " + names[target] + ")", None
    mean = chosen.astype(np.float64).mean(axis=0)
    ratio = float(mean.mean(axis=0).std() / max(mean.mean(axis=1).std(), 1e-9))
    verdict = "upright" if ratio > 1.2 else "transposed?" if ratio < 1 / 1.2 else "unclear"
    return verdict, round(ratio, 3)


def describe_data_dir(path, dataset=None):
    """What a data directory holds: files, image counts per class and an orientation check."""
    path = Path(path)
    result = {"path": str(path), "datasets": {}}
    for name in _datasets_in(path, dataset):
        names = class_names(name)
        entry = {"splits": {}}
        for split in SPLITS:
            files = [find_emnist_file(path, name, split, k) for k in ("images", "labels")]
            if None in files:
                entry["splits"][split] = {"missing": True}
                continue
            images, labels = load_emnist(path, split, name)
            counts = np.bincount(labels, minlength=len(names))
            verdict, ratio = orientation_check(images, labels, name)
            entry["splits"][split] = {
                "files": [str(f) for f in files],
                "count": int(len(labels)),
                "per_class": {names[i]: int(c) for i, c in enumerate(counts)},
                "orientation": verdict,
                "vertical_stroke_ratio": ratio,
                "mean_pixel": round(float(images.mean()) / 255.0, 4),
            }
        result["datasets"][name] = entry
    return result


def file_digest(path, algorithm="sha256"):
    """The hex digest of a file (any hashlib algorithm), read in CHUNK pieces."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(CHUNK), b""):
            digest.update(piece)
    return digest.hexdigest()


def verify_data_dir(path, dataset=None):
    """Check every EMNIST file in a directory: size, sha256 (against known ones), structure.

    Returns {"path", "ok", "files": [{"name", "size", "sha256", "known", "ok", "problem"}]}.
    """
    path = Path(path)
    files = []
    for name in _datasets_in(path, dataset):
        for split in SPLITS:
            found = {k: find_emnist_file(path, name, split, k) for k in ("images", "labels")}
            for kind, file in found.items():
                if file is None:
                    files.append({"name": emnist_filename(name, split, kind) + "[.gz]",
                                  "ok": False, "problem": "missing"})
                    continue
                digest = file_digest(file)
                entry = {"name": file.name, "size": file.stat().st_size, "sha256": digest,
                         "known": KNOWN_SHA256.get(digest), "ok": True, "problem": None}
                try:
                    read_idx(file, IMAGE_MAGIC if kind == "images" else LABEL_MAGIC)
                except DataError as exc:
                    entry.update(ok=False, problem=str(exc))
                files.append(entry)
            if None not in found.values() and all(f["ok"] for f in files[-2:]):
                try:
                    load_emnist(path, split, name)
                except DataError as exc:
                    files[-1].update(ok=False, problem=str(exc))
    return {"path": str(path), "ok": all(f["ok"] for f in files), "files": files}


# --- generated letters and augmentation ----------------------------------------------------

def generated_letters(n, seed=0, forms="mixed"):
    """n handwriting-like letters drawn by the letter generator (synth.py): (upright uint8
    images, labels); ``forms`` is "mixed" (mostly capitals), "upper" or "lower"."""
    from microconv.letters import synth
    if type(n) is not int or n < 0 or type(seed) is not int or seed < 0:
        raise DataError(f"generated_letters: the count and the seed must be integers >= 0, "
                        f"not {n!r} and {seed!r}")
    require_memory(2 * n * ROWS * COLS, f"{n:,} generated letters", error=DataError)
    return synth.generate(n, seed, forms)


def kept_letters(n, seed=0, forms="mixed"):
    """``generated_letters(n, seed, forms)``, kept in the user cache after the first time
    (drawing 2,500 letters takes over a second, before a run's first step). A kept set is
    named by everything the drawing depends on: the arguments, the generator's source and
    the versions of the libraries it draws with; an unreadable or unwritable cache only
    means drawing again."""
    import PIL
    import scipy

    from microconv.letters import synth
    from microconv.letters.checkpoint import write_atomically
    recipe = hashlib.sha256(Path(synth.__file__).read_bytes())
    recipe.update(f"{n} {seed} {forms} {np.__version__} {scipy.__version__} "
                  f"{PIL.__version__}".encode())
    name = f"{forms}-{n}-{seed}-{recipe.hexdigest()[:16]}.npz"
    path = default_cache_dir().parent / "generated" / name
    try:
        with np.load(path) as kept:
            images, labels = kept["images"], kept["labels"]
        if (images.shape, images.dtype, labels.shape, labels.dtype) == (
                (n, ROWS, COLS), np.uint8, (n,), np.int64):
            return images, labels
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
        pass
    images, labels = generated_letters(n, seed, forms)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda f: np.savez_compressed(f, images=images, labels=labels))
    except (OSError, MicroconvError):
        pass
    return images, labels


def perturb(images, rng):
    """The seed's robustness test on upright uint8 images: shift each image by up to 2 pixels
    in each direction (pixels shifted in are background, 0), then flip 5 random pixels
    (v -> 255 - v; a pixel drawn twice flips back, as in the seed).

    The seed does this after normalisation; doing it on the raw pixels keeps the background
    black and lets normalisation see the flipped pixels, as it would in a real photo.
    """
    images = real_array(images, "perturb", DataError)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"perturb: expected uint8 images (N, H, W), got {images.dtype} "
                        f"{images.shape}")
    if not isinstance(rng, np.random.Generator):
        raise DataError(f"perturb: rng must be a numpy.random.Generator, not "
                        f"{type(rng).__name__}")
    n, h, w = images.shape
    pad = 2
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad), dtype=np.uint8)
    padded[:, pad:pad + h, pad:pad + w] = images
    row_shift = rng.integers(-pad, pad + 1, size=n)
    col_shift = rng.integers(-pad, pad + 1, size=n)
    # new(r, c) = old(r + row_shift, c + col_shift)
    rows = np.arange(h)[None, :, None] + pad + row_shift[:, None, None]
    cols = np.arange(w)[None, None, :] + pad + col_shift[:, None, None]
    out = padded[np.arange(n)[:, None, None], rows, cols]
    return flip_pixels(out, rng.integers(0, h * w, size=(n, 5)))


def flip_pixels(images, positions):
    """Flip (v -> 255 - v) the pixels of uint8 images (N, H, W) at flat positions (N, K), one
    column after the other, so a pixel named twice flips back."""
    n, h, w = images.shape
    out = images.reshape(n, h * w).copy()
    every = np.arange(n)
    for k in range(positions.shape[1]):
        out[every, positions[:, k]] = 255 - out[every, positions[:, k]]
    return out.reshape(n, h, w)


def batch_order(n, batch_size, rng):
    """One epoch of shuffled index batches; a short last batch is dropped, so every batch
    has the same size and the training graph is built once."""
    if n < batch_size:
        raise DataError(f"the training set has {n} images, fewer than one batch of {batch_size}")
    order = rng.permutation(n)
    usable = n - n % batch_size
    return order[:usable].reshape(-1, batch_size)
