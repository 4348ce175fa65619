"""Damaged EMNIST files: whatever the bytes, the reader answers with data or one DataError line.

test_data.py has one example of each damage; here Hypothesis and exhaustive truncation look
for inputs that slip past the checks (a crash, a second line, a giant allocation).
"""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microconv.errors import DataError
from microconv.letters import data

IMAGES = data.emnist_filename("letters", "train", "images")
LABELS = data.emnist_filename("letters", "train", "labels")


def idx_bytes(magic, dims, payload):
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


def small_images(n=3):
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def read_or_data_error(path, magic=None):
    """read_idx's answer: the array, or the DataError, which must be a single line."""
    try:
        return data.read_idx(path, magic)
    except DataError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        assert str(path) in message, message            # the user learns which file
        return exc


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# --- arbitrary bytes --------------------------------------------------------------------------

@given(content=st.binary(max_size=300), gz=st.booleans())
def test_random_bytes_give_an_array_or_one_data_error(tmp_path_factory, content, gz):
    path = tmp_path_factory.mktemp("fuzz") / IMAGES
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    answer = read_or_data_error(path, data.IMAGE_MAGIC)
    if isinstance(answer, np.ndarray):
        # Only a header that promises exactly these bytes is accepted.
        assert answer.dtype == np.uint8 and content.startswith(b"\0\0\x08\x03")
        assert 16 + answer.size == len(content)


@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
       payload=st.binary(max_size=64), magic_low=st.sampled_from([1, 2, 3, 4, 0]))
def test_random_headers_with_a_valid_prefix(tmp_path_factory, dims, payload, magic_low):
    """Headers that look like IDX (so the reader goes deeper) with any dimensions: a size
    that overflows 64 bits or disagrees with the file is a DataError, never a crash."""
    path = tmp_path_factory.mktemp("fuzz") / "x.idx"
    path.write_bytes(struct.pack(">I", 0x800 + magic_low)
                     + struct.pack(f">{len(dims)}I", *dims) + payload)
    answer = read_or_data_error(path)
    if isinstance(answer, np.ndarray):
        assert answer.shape == tuple(dims) and len(dims) == magic_low


# --- truncation at every length ------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncation_at_every_length_is_reported(tmp_path, gz):
    # A small file (three 5x4 images) so every cut, header and payload, is a few bytes apart.
    whole = idx_bytes(data.IMAGE_MAGIC, (3, 5, 4), small_images(3)[:, :5, :4].tobytes())
    stored = gzip.compress(whole, mtime=0) if gz else whole
    path = tmp_path / (IMAGES + (".gz" if gz else ""))
    path.write_bytes(stored)
    assert data.read_idx(path, data.IMAGE_MAGIC).shape == (3, 5, 4)
    for length in range(len(stored)):
        path.write_bytes(stored[:length])
        answer = read_or_data_error(path, data.IMAGE_MAGIC)
        assert isinstance(answer, DataError), f"{length} of {len(stored)} bytes were accepted"


def test_truncated_label_file_inside_a_dataset(tmp_path):
    data.write_idx(tmp_path / (IMAGES + ".gz"), small_images(3).transpose(0, 2, 1))
    whole = gzip.compress(idx_bytes(data.LABEL_MAGIC, (3,), bytes([1, 2, 3])), mtime=0)
    for length in range(len(whole)):
        (tmp_path / (LABELS + ".gz")).write_bytes(whole[:length])
        with pytest.raises(DataError) as caught:
            data.load_emnist(tmp_path, "train")
        assert "\n" not in str(caught.value) and LABELS in str(caught.value)


# --- wrong magic numbers ------------------------------------------------------------------------

@pytest.mark.parametrize("header, message", [
    (struct.pack(">I", data.LABEL_MAGIC), "magic number 2049, expected 2051"),
    (b"\0\0\x09\x03", "not an IDX file of unsigned bytes"),      # signed bytes
    (b"\0\0\x08\x00", "not an IDX file of unsigned bytes"),      # no dimensions
    (b"\0\0\x08\x04", "not an IDX file of unsigned bytes"),      # four dimensions
    (b"\x01\0\x08\x03", "not an IDX file of unsigned bytes"),
    (b"\x89PNG", "not an IDX file of unsigned bytes"),
])
def test_wrong_magic_numbers(tmp_path, header, message):
    body = struct.pack(">3I", 1, 28, 28) + bytes(784)
    for gz in (False, True):
        content = header + body
        path = write(tmp_path, IMAGES, gzip.compress(content) if gz else content)
        with pytest.raises(DataError, match=message):
            data.read_idx(path, data.IMAGE_MAGIC)


def test_an_image_file_where_labels_belong(tmp_path):
    images = small_images(2).transpose(0, 2, 1)
    data.write_idx(tmp_path / (IMAGES + ".gz"), images)
    data.write_idx(tmp_path / (LABELS + ".gz"), images)          # the same file twice
    with pytest.raises(DataError, match="magic number 2051, expected 2049"):
        data.load_emnist(tmp_path, "train")


# --- lying headers: no allocation before the length check ----------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dims", [(2**31, 28, 28), (2**32 - 1, 2**32 - 1, 2**32 - 1)])
def test_huge_claimed_counts_fail_without_allocating(tmp_path, gz, dims):
    content = idx_bytes(data.IMAGE_MAGIC, dims, bytes(2 * 784))
    path = write(tmp_path, IMAGES + (".gz" if gz else ""),
                 gzip.compress(content) if gz else content)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="promises") as caught:
            data.read_idx(path, data.IMAGE_MAGIC)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The header asks for terabytes; the reader never holds more than its 1 MiB read chunk
    # plus what the file really contains.
    assert peak < 8 * 2**20, f"peak {peak} bytes"
    assert "\n" not in str(caught.value)


def test_overflowing_dimensions_are_not_an_empty_array(tmp_path):
    """2**31 * 2**31 * 4 is 2**64, which wraps to 0 in 64-bit arithmetic: the reader once
    accepted the empty payload and then crashed reshaping it (found by this module)."""
    path = write(tmp_path, IMAGES, idx_bytes(data.IMAGE_MAGIC, (2**31, 2**31, 4), b""))
    with pytest.raises(DataError, match="18446744073709551616 bytes"):
        data.read_idx(path, data.IMAGE_MAGIC)


# --- datasets whose two files disagree -----------------------------------------------------------

@given(n_images=st.integers(1, 6), n_labels=st.integers(0, 6),
       labels=st.lists(st.integers(0, 255), min_size=6, max_size=6))
def test_counts_and_label_ranges(tmp_path_factory, n_images, n_labels, labels):
    folder = tmp_path_factory.mktemp("split")
    data.write_idx(folder / (IMAGES + ".gz"), small_images(n_images).transpose(0, 2, 1))
    data.write_idx(folder / (LABELS + ".gz"), np.array(labels[:n_labels], np.uint8))
    try:
        images, got = data.load_emnist(folder, "train")
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message
        if n_images != n_labels:
            assert f"{n_images} images but" in message and f"{n_labels} labels" in message
        else:
            bad = next(v for v in labels[:n_labels] if not 1 <= v <= 26)
            assert f"label {bad} is outside 1..26" in message
        return
    assert n_images == n_labels and all(1 <= v <= 26 for v in labels[:n_labels])
    assert images.shape == (n_images, 28, 28) and got.tolist() == [v - 1 for v in labels[:n_labels]]


def test_a_folder_or_a_missing_file_in_place_of_data(tmp_path):
    (tmp_path / "folder.idx").mkdir()
    for path in (tmp_path / "folder.idx", tmp_path / "missing.idx"):
        with pytest.raises(DataError, match="does not exist"):
            data.read_idx(path)
