"""Image-folder data sets: people's own letters, one sub-folder of pictures per letter.

The convention of image-folder data sets::

    my-letters/a/1.png  my-letters/a/photo-3.jpg  my-letters/B/x.webp  ...

A class folder is named by one letter, ``a``-``z`` or ``A``-``Z``; upper and lower case share
one class, as in EMNIST letters (``a/`` and ``A/`` may both exist). Pictures may have any size
and any format Pillow reads. Each one goes through the preparation ``microconv predict`` gives a
picture of one letter (photo.py): the ink is found, cropped, framed and thickened like EMNIST,
and becomes an upright 28x28 uint8 image. When the finder sees several pieces (a broken stroke,
a dot it did not attach), they are prepared together: the picture holds one letter.

Splits: a folder with ``train/`` and ``test/`` sub-folders, each laid out as above, gives those
two splits. Any other folder is one pool of pictures: every fifth picture of each letter (in
name order) is its test split and the rest its training split, so training on a folder and then
evaluating on it never scores a picture the network learned from.

Hidden files and folders (names starting with a dot) are skipped, as are files lying next to
the class folders. Anything else that cannot be read is a DataError naming the file.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from microconv.errors import DataError
from microconv.letters import photo, pictures

SPLIT_FOLDERS = ("train", "test")
TEST_EVERY = 5               # in a one-pool folder, pictures 5, 10, 15 ... of a letter are test
CLASSES = string.ascii_uppercase


def _visible(folder):
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))


def is_image_folder(path):
    """Whether ``path`` is laid out as an image folder: it holds sub-folders (and the caller has
    already found no EMNIST files there)."""
    path = Path(path)
    return path.is_dir() and any(p.is_dir() for p in _visible(path))


def _class_folders(root):
    """{class index: [picture paths]} of a folder laid out one sub-folder per letter."""
    folders = [p for p in _visible(root) if p.is_dir()]
    if not folders:
        raise DataError(f"{root} holds no letter folders (a/, b/ ... or A/, B/ ...)")
    pictures = {}
    for folder in folders:
        name = folder.name
        if len(name) != 1 or name.upper() not in CLASSES:
            raise DataError(f"{folder}: a class folder must be named by one letter, a-z or "
                            f"A-Z, not '{name}'")
        files = _visible(folder)
        for item in files:
            _check_picture(item)
        if not files:
            raise DataError(f"{folder} is empty: put pictures of the letter '{name}' in it, or "
                            "remove it")
        pictures.setdefault(CLASSES.index(name.upper()), []).extend(files)
    return pictures


def _check_picture(path):
    """A DataError unless ``path`` is a picture in a format ``pictures.open_picture`` reads
    (only its header is read, so every picture of a folder is checked even when one split is
    used)."""
    if not path.is_file():
        raise DataError(f"{path} is not a picture file; a letter's folder holds pictures only")
    try:
        with Image.open(path, formats=pictures.FORMATS):
            pass
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a picture in a format microconv reads "
                        f"({', '.join(pictures.FORMATS)}): {exc}") from None


def split_layout(path):
    """"splits" when ``path`` holds a train/ or test/ folder of letters, else "pool"."""
    path = Path(path)
    present = [name for name in SPLIT_FOLDERS if (path / name).is_dir()]
    return "splits" if present else "pool"


def picture_files(path, split):
    """(paths, labels) of the pictures of one split ("train" or "test") of an image folder."""
    path = Path(path)
    if split not in SPLIT_FOLDERS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLIT_FOLDERS)}")
    if split_layout(path) == "splits":
        if not (path / split).is_dir():
            raise DataError(f"{path} has a {'test' if split == 'train' else 'train'}/ folder "
                            f"but no {split}/ folder")
        chosen = _class_folders(path / split)
    else:
        chosen = {}
        for label, files in _class_folders(path).items():
            held_out = [(i + 1) % TEST_EVERY == 0 for i in range(len(files))]
            chosen[label] = [f for f, test in zip(sorted(files), held_out)
                             if test == (split == "test")]
    paths = [f for label in sorted(chosen) for f in chosen[label]]
    labels = [label for label in sorted(chosen) for _ in chosen[label]]
    if not paths:
        raise DataError(f"{path} has no {split} pictures: a folder without train/ and test/ "
                        f"keeps every {TEST_EVERY}th picture of a letter for testing, so give "
                        f"some letters at least {TEST_EVERY} pictures")
    return paths, np.array(labels, dtype=np.int64)


def prepare_picture(path):
    """One picture of one letter as an upright uint8 (28, 28) image, prepared like predict
    prepares a letter; a DataError when it cannot be read or holds no letter."""
    return photo.one_letter(photo.read_image(path), path)


def load_image_folder(path, split="train"):
    """(images, labels) of one split of an image folder: upright uint8 (N, 28, 28) and int64
    class indices 0..25 (A/a = 0)."""
    paths, labels = picture_files(path, split)
    images = np.stack([prepare_picture(p) for p in paths])
    return images, labels
