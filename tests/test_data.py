"""The EMNIST reader: formats, orientation, labels, damaged files, discovery and augmentation."""

import gzip
import struct

import numpy as np
import pytest
from optional import LETTERS_DATA, needs

from microconv.errors import DataError
from microconv.letters import data



def upright_letters(n, seed=0):
    """Tiny distinct upright images: an asymmetric L-shape whose corner depends on the index."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 30, size=(n, 28, 28), dtype=np.uint8)
    images[:, 2:20, 5] = 255             # a vertical bar: only upright if not transposed
    for i in range(n):
        images[i, 0, i % 28] = 200       # a marker unique to each image
    return images


def write_split(folder, split, images, letter_labels, gz=True, dataset="letters"):
    """Store upright images the EMNIST way: transposed, labels as given (1..26 for letters)."""
    suffix = ".gz" if gz else ""
    data.write_idx(folder / (data.emnist_filename(dataset, split, "images") + suffix),
                   np.asarray(images).transpose(0, 2, 1))
    data.write_idx(folder / (data.emnist_filename(dataset, split, "labels") + suffix),
                   np.asarray(letter_labels, dtype=np.uint8))


@pytest.fixture
def letters_dir(tmp_path):
    for split, n in (("train", 52), ("test", 130)):
        write_split(tmp_path, split, upright_letters(n), np.arange(n) % 26 + 1)
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_images_come_out_upright_with_labels_from_zero(tmp_path, gz):
    images = upright_letters(30)
    write_split(tmp_path, "train", images, np.arange(30) % 26 + 1, gz=gz)
    got, labels = data.load_emnist(tmp_path, "train")
    assert got.dtype == np.uint8 and got.shape == (30, 28, 28)
    np.testing.assert_array_equal(got, images)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, np.arange(30) % 26)


def test_official_layout_with_gzip_subfolder_is_found(tmp_path):
    (tmp_path / "gzip").mkdir()
    write_split(tmp_path / "gzip", "test", upright_letters(4), [1, 2, 3, 26])
    _, labels = data.load_emnist(tmp_path, "test")
    assert labels.tolist() == [0, 1, 2, 25]


def test_digits_keep_their_labels(tmp_path):
    write_split(tmp_path, "test", upright_letters(10), np.arange(10), dataset="digits")
    _, labels = data.load_emnist(tmp_path, "test", dataset="digits")
    assert labels.tolist() == list(range(10))
    assert data.class_names("digits") == "0123456789"


def raw_idx(magic, dims, payload):
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


@pytest.mark.parametrize("content, message", [
    (raw_idx(2049, [2, 28, 28], bytes(2 * 784)), "magic number 2049, expected 2051"),
    (raw_idx(2051, [3, 28, 28], bytes(2 * 784)), "the file holds 1568"),
    (raw_idx(2051, [1, 28, 28], bytes(784 + 7)), "the file holds 791"),
    (b"\x00\x00", "truncated"),
    (b"hello, not an idx file", "not an IDX file"),
    # A lying header that promises 4 billion images: refused without allocating them.
    (raw_idx(2051, [0xFFFFFFFF, 28, 28], bytes(784)), "the header promises"),
])
def test_damaged_raw_files_give_one_clear_error(tmp_path, content, message):
    path = tmp_path / "emnist-letters-train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.read_idx(path, data.IMAGE_MAGIC)


def test_truncated_gzip_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    blob = gzip.compress(raw_idx(2051, [100, 28, 28], bytes(100 * 784)))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="x.gz"):
        data.read_idx(path, data.IMAGE_MAGIC)


def test_gzip_with_too_few_images_is_reported(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(raw_idx(2051, [10, 28, 28], bytes(3 * 784))))
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path, data.IMAGE_MAGIC)


def test_mismatched_counts_and_bad_labels(tmp_path):
    write_split(tmp_path, "train", upright_letters(5), [1, 2, 3, 4])
    with pytest.raises(DataError, match="5 images but .* 4 labels"):
        data.load_emnist(tmp_path, "train")
    write_split(tmp_path, "train", upright_letters(4), [1, 2, 0, 4])
    with pytest.raises(DataError, match="label 0 is outside 1..26"):
        data.load_emnist(tmp_path, "train")


def test_empty_and_missing_datasets(tmp_path):
    write_split(tmp_path, "train", np.zeros((0, 28, 28), np.uint8), [])
    with pytest.raises(DataError, match="empty"):
        data.load_emnist(tmp_path, "train")
    with pytest.raises(DataError, match="lacks emnist-letters-test-images"):
        data.load_emnist(tmp_path, "test")
    with pytest.raises(DataError, match="does not exist"):
        data.load_emnist(tmp_path / "nowhere", "test")
    with pytest.raises(DataError, match="unknown dataset"):
        data.load_emnist(tmp_path, "test", dataset="klingon")


def test_wrong_image_size_is_refused(tmp_path):
    data.write_idx(tmp_path / "emnist-letters-test-images-idx3-ubyte.gz",
                   np.zeros((2, 32, 32), np.uint8))
    data.write_idx(tmp_path / "emnist-letters-test-labels-idx1-ubyte.gz", np.ones(2, np.uint8))
    with pytest.raises(DataError, match="28x28"):
        data.load_emnist(tmp_path, "test")


def test_find_data_dir_order(tmp_path, monkeypatch, letters_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MICROCONV_DATA", raising=False)
    assert data.find_data_dir() is None
    assert data.find_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.setenv("MICROCONV_DATA", str(letters_dir))
    assert data.find_data_dir() == letters_dir
    monkeypatch.delenv("MICROCONV_DATA")
    cache = data.default_cache_dir()
    assert cache == tmp_path / "cache" / "microconv" / "emnist"
    cache.mkdir(parents=True)
    for f in letters_dir.glob("emnist-*"):
        (cache / f.name).write_bytes(f.read_bytes())
    assert data.find_data_dir() == cache


def test_describe_and_verify(letters_dir):
    info = data.describe_data_dir(letters_dir)
    test = info["datasets"]["letters"]["splits"]["test"]
    assert test["count"] == 130 and test["per_class"]["A"] == 5
    assert test["orientation"] == "upright"
    report = data.verify_data_dir(letters_dir)
    assert report["ok"] and len(report["files"]) == 4
    assert all(len(f["sha256"]) == 64 and f["known"] is None for f in report["files"])
    # Damage one file: verify says which one and why.
    target = letters_dir / "emnist-letters-test-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-5])
    report = data.verify_data_dir(letters_dir)
    assert not report["ok"]
    bad = [f for f in report["files"] if not f["ok"]]
    assert [f["name"] for f in bad] == [target.name]


def shifted(image, rows, cols):
    """new(r, c) = old(r + rows, c + cols), zero where that falls outside."""
    out = np.zeros_like(image)
    h, w = image.shape
    for r in range(h):
        for c in range(w):
            if 0 <= r + rows < h and 0 <= c + cols < w:
                out[r, c] = image[r + rows, c + cols]
    return out


def test_perturb_shifts_by_at_most_two_and_flips_at_most_five_pixels():
    images = upright_letters(12, seed=3)
    out = data.perturb(images, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == images.shape
    shifts_seen = set()
    for n in range(len(images)):
        best = min(((int((out[n] != shifted(images[n], r, c)).sum()), (r, c))
                    for r in range(-2, 3) for c in range(-2, 3)))
        assert best[0] <= 5, f"image {n} is not a shifted copy with <= 5 flipped pixels"
        shifts_seen.add(best[1])
    assert len(shifts_seen) > 1                    # the shift is random, not constant
    np.testing.assert_array_equal(out, data.perturb(images, np.random.default_rng(0)))
    assert not np.array_equal(out, data.perturb(images, np.random.default_rng(1)))
    with pytest.raises(DataError, match="uint8"):
        data.perturb(images.astype(np.float32), np.random.default_rng(0))


def test_batch_order_drops_the_short_last_batch():
    batches = data.batch_order(130, 64, np.random.default_rng(1))
    assert batches.shape == (2, 64)
    assert len(set(batches.ravel().tolist())) == 128
    with pytest.raises(DataError, match="fewer than one batch"):
        data.batch_order(10, 64, np.random.default_rng(1))


@needs(LETTERS_DATA)
def test_shared_handwritten_letters():
    images, labels = data.load_emnist(LETTERS_DATA, "test")
    assert images.shape == (3120, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [120] * 26
    assert data.orientation_check(images, labels)[0] == "upright"
    train_images, train_labels = data.load_emnist(LETTERS_DATA, "train")
    assert len(train_images) == 10123 and train_labels.max() == 25
    report = data.verify_data_dir(LETTERS_DATA)
    assert report["ok"] and all(f["known"] for f in report["files"])
