"""Sizes that cannot fit are refused up front, and degenerate sizes are refused or cheap.

The limits come from the bytes a request needs against the memory the machine has
(``microconv.resources.available_memory``), checked before anything is allocated; tests that
need a small machine make ``available_memory`` say so.
"""

import sqlite3
import struct
import zlib

import numpy as np
import pytest
from clitools import (  # noqa: F401 - no_emnist is a fixture
    assert_one_line_error,
    cli,
    no_emnist,
    with_peak_memory,
)

import microconv as mc
from microconv import resources
from microconv.backends import ops_numpy
from microconv.cli.viz import model_graph_dot
from microconv.errors import DataError, ResourceError, ShapeError
from microconv.letters import data
from microconv.letters.model import ConvoAlphabetModel, LetterGraph, graph_bytes


def peak_bytes(call):
    return with_peak_memory(call)[1]


def test_a_graph_for_a_billion_images_is_refused_before_allocating():
    def build():
        with pytest.raises(ResourceError, match=r"a batch of 1,000,000,000 images needs .* TB "
                                                r"of memory, only .* available; use a smaller"):
            model_graph_dot(batch_size=10**9)
    assert peak_bytes(build) < 20_000_000


def test_the_estimate_covers_what_a_training_step_takes():
    """A training step on the numpy backend, measured at batch 64: the estimate is above it
    (the estimate refuses; it must not refuse what fits with room to spare). A backend of its
    own: the shared one may hold buffers of these shapes from earlier work, and reuse them."""
    model = ConvoAlphabetModel(ops_numpy.create())
    graph = LetterGraph(model, 64, train=True)
    images = np.random.default_rng(0).normal(size=(64, 1, 28, 28)).astype(np.float32)
    graph.feed(images, np.arange(64) % 26)
    peak = peak_bytes(graph.loss.backward)
    assert peak < graph_bytes(model, 64, train=True) < 4 * peak


@pytest.mark.usefixtures("no_emnist")
def test_a_training_batch_too_large_for_memory_is_refused_before_the_run_starts(
        tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 40_000_000)
    database, out = tmp_path / "metrics.db", tmp_path / "run.npz"
    result = cli("train", "--limit", 64, "--batch-size", 64, "--epochs", 1, "--out", out,
                 "--metrics", database, "--no-dashboard")
    assert_one_line_error(result, "a batch of 64 images for training needs 63.5 MB of memory",
                          "only 40.0 MB are available")
    assert sqlite3.connect(database).execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert not out.exists()


def test_a_gzip_that_inflates_to_a_gigabyte_is_refused_unread(tmp_path, monkeypatch):
    """An IDX file of 10^9 image bytes, a megabyte as gzip: on a machine with 200 MB to spare
    it is refused from its header; nothing is inflated. (The stream repeats one deflate block
    of a mebibyte of zeros; its CRC is left out, as nothing reads that far.)"""
    monkeypatch.setattr(resources, "available_memory", lambda: 200_000_000)
    count = 10**9 // 784
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(struct.pack(">IIII", data.IMAGE_MAGIC, count, 28, 28))
    head += packer.flush(zlib.Z_FULL_FLUSH)
    zeros = packer.compress(bytes(1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    stream = head + zeros * (count * 784 >> 20) + packer.flush()
    path = tmp_path / "emnist-letters-train-images-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + stream
                     + struct.pack("<II", 0, (16 + count * 784) & 0xFFFFFFFF))
    assert path.stat().st_size < 1_100_000

    def read():
        with pytest.raises(DataError, match=r"the data its header promises \(1275510, 28, 28\) "
                                            r"needs 1.0 GB of memory, only 200.0 MB"):
            data.read_idx(path, data.IMAGE_MAGIC)
    assert peak_bytes(read) < 5_000_000


def test_a_pooling_window_far_larger_than_the_image_is_the_whole_image():
    values = np.random.default_rng(1).normal(size=(2, 3, 28, 20)).astype(np.float32)
    x = mc.tensor(values, requires_grad=True)
    pooled = mc.max_pool2d(x, 10**9)
    assert pooled.arg == 28                          # the work is that of a 28-pixel window
    assert pooled.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(pooled.numpy()[..., 0, 0], values.max(axis=(2, 3)))
    pooled.sum().backward()
    assert x.grad.sum() == 6 and (x.grad.reshape(6, -1).argmax(axis=1)
                                  == values.reshape(6, -1).argmax(axis=1)).all()


def test_an_empty_kernel_and_an_empty_batch_are_refused():
    with pytest.raises(ShapeError, match=r"kernel \(2, 1, 0, 0\) is empty"):
        mc.conv2d(mc.tensor(np.ones((1, 1, 4, 4))), mc.tensor(np.ones((2, 1, 0, 0))),
                  mc.tensor(np.ones(2)))
    logp = mc.log_softmax(mc.tensor(np.zeros((0, 26))))
    with pytest.raises(ShapeError, match="nll_loss: the batch is empty"):
        mc.nll_loss(logp, np.zeros(0, np.int64))


def test_generated_letters_that_cannot_fit(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 10_000_000)
    with pytest.raises(DataError, match="10,000,000 generated letters needs 15.7 GB"):
        mc.generated_letters(10**7)
