"""Failed writes (disk full, permission denied, folder missing) keep the previous checkpoint.

Tests run as root, so a read-only folder would not stop them: the failures are simulated by
making the write, fsync, rename or SQLite raise exactly what the operating system would.
"""

import errno
import functools
import os
import sqlite3

import numpy as np
import pytest
from clitools import (  # noqa: F401 - no_emnist is a fixture
    assert_one_line_error,
    cli,
    no_emnist,
    small_train_config,
    untrained_checkpoint,
)

from microconv.errors import CheckpointError, MicroconvError
from microconv.letters import checkpoint, hello_dl, metrics
from microconv.letters.checkpoint import read_checkpoint, save_checkpoint
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing
from microconv.letters.records import Reporter
from microconv.letters.training import train

REAL_SAVEZ = np.savez


pytestmark = pytest.mark.usefixtures("no_emnist")


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture
def previous(tmp_path):
    """A checkpoint already on disk (model seed 0) and its bytes."""
    path = untrained_checkpoint(tmp_path)
    return path, path.read_bytes()


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def half_written_then_full(file, **arrays):
    """np.savez that gets some bytes out before the disk fills up."""
    file.write(b"PK\x03\x04" + bytes(1000))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- save_checkpoint ---------------------------------------------------------------------------

@pytest.mark.parametrize("where, replacement, message", [
    ("savez", half_written_then_full, "No space left on device"),
    ("fsync", no_space, "No space left on device"),
    ("replace", denied, "Permission denied"),
])
def test_a_failed_write_keeps_the_previous_checkpoint(previous, monkeypatch, where, replacement,
                                                      message):
    path, before = previous
    owner = np if where == "savez" else checkpoint.os
    monkeypatch.setattr(owner, where, replacement)
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(path, ConvoAlphabetModel("numpy", seed=1), Preprocessing())
    text = str(caught.value)
    assert message in text and str(path) in text and "unchanged" in text and "\n" not in text
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


def test_a_read_only_folder_keeps_the_previous_checkpoint(previous, monkeypatch):
    path, before = previous
    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", denied)
    with pytest.raises(CheckpointError, match="cannot write .*model.npz: Permission denied"):
        save_checkpoint(path, ConvoAlphabetModel("numpy", seed=1), Preprocessing())
    assert path.read_bytes() == before


def test_a_missing_folder_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="No such file or directory"):
        save_checkpoint(tmp_path / "gone" / "model.npz", ConvoAlphabetModel("numpy"),
                        Preprocessing())
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_writing_keeps_the_previous_checkpoint(previous, monkeypatch):
    path, before = previous

    def interrupted(file, **arrays):
        file.write(bytes(500))
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, ConvoAlphabetModel("numpy", seed=1), Preprocessing())
    assert path.read_bytes() == before and leftovers(path.parent) == []


# --- during training -----------------------------------------------------------------------------

small = functools.partial(small_train_config, eval_every=2, augment=False)


class Ending(Reporter):
    def on_end(self, record):
        self.final = record


def fail_on_write(monkeypatch, number, out):
    """np.savez fails (disk full) on its ``number``-th call; returns what the checkpoint held
    at that moment."""
    calls, seen = [], {}

    def savez(file, **arrays):
        calls.append(1)
        if len(calls) == number:
            seen["bytes"] = out.read_bytes()
            half_written_then_full(file)
        return REAL_SAVEZ(file, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    return seen


def test_disk_full_during_training_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run.npz"
    seen = fail_on_write(monkeypatch, 2, out)          # the save at step 4
    reporter = Ending()
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(small(tmp_path), reporter)
    assert out.read_bytes() == seen["bytes"]
    assert read_checkpoint(out)[0]["progress"]["step"] == 2
    assert leftovers(tmp_path) == []
    assert "No space left on device" in reporter.final.extra["error"]


def test_disk_full_during_training_through_the_cli(tmp_path, monkeypatch):
    out = tmp_path / "run.npz"
    seen = fail_on_write(monkeypatch, 2, out)
    result = cli("train", "--limit", 64, "--batch-size", 16, "--epochs", 1, "--eval-every", 2,
                 "--validation-size", 16, "--out", out, "--no-dashboard", "--no-augment")
    assert_one_line_error(result, str(out), "No space left on device", "unchanged")
    assert out.read_bytes() == seen["bytes"]
    assert leftovers(tmp_path) == []


def test_checkpoint_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    result = cli("train", "--limit", 32, "--batch-size", 16, "--epochs", 1,
                 "--out", blocker / "run.npz", "--no-dashboard")
    assert_one_line_error(result, "cannot create", "file")


def test_a_checkpoint_path_that_is_a_folder_is_refused_before_training(tmp_path):
    (tmp_path / "run.npz").mkdir()
    result = cli("train", "--limit", 32, "--batch-size", 16, "--epochs", 1,
                 "--out", tmp_path / "run.npz", "--no-dashboard")
    assert_one_line_error(result, "run.npz is a folder")
    assert "step 1" not in result.stdout


# --- the metrics database ------------------------------------------------------------------------

class FullDisk:
    """A SQLite connection whose ``number``-th batch row fails as a full disk does."""

    def __init__(self, real, number, out, seen):
        self.real, self.number, self.out, self.seen = real, number, out, seen
        self.batches = 0

    def execute(self, sql, *args):
        if sql.startswith("INSERT INTO batches"):
            self.batches += 1
            if self.batches == self.number:
                self.seen["bytes"] = self.out.read_bytes()
                raise sqlite3.OperationalError("database or disk is full")
        return self.real.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_metrics_database_filling_up_stops_training_cleanly(tmp_path, monkeypatch):
    out, database, seen = tmp_path / "run.npz", tmp_path / "metrics.db", {}
    connect = sqlite3.connect
    monkeypatch.setattr(metrics.sqlite3, "connect",
                        lambda *a, **k: FullDisk(connect(*a, **k), 3, out, seen))
    result = cli("train", "--limit", 64, "--batch-size", 16, "--epochs", 1, "--eval-every", 2,
                 "--validation-size", 16, "--out", out, "--metrics", database,
                 "--no-dashboard", "--no-augment")
    assert_one_line_error(result, "cannot write the metrics database", str(database),
                          "database or disk is full")
    assert out.read_bytes() == seen["bytes"]
    assert read_checkpoint(out)[0]["progress"]["step"] == 2
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("problem", ["missing folder", "a folder", "not sqlite", "read-only"])
def test_unusable_metrics_database(tmp_path, monkeypatch, problem):
    database = tmp_path / "metrics.db"
    if problem == "missing folder":
        database = tmp_path / "gone" / "metrics.db"
    elif problem == "a folder":
        database.mkdir()
    elif problem == "not sqlite":
        database.write_bytes(b"this is a text file, not SQLite" * 100)
    else:
        def read_only(*args, **kwargs):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        monkeypatch.setattr(metrics.sqlite3, "connect", read_only)
    out = tmp_path / "run.npz"
    result = cli("train", "--limit", 32, "--batch-size", 16, "--epochs", 1, "--out", out,
                 "--metrics", database, "--no-dashboard")
    assert_one_line_error(result, str(database))
    assert not out.exists()                      # refused before any training


def test_metrics_close_failure_is_reported_and_the_connection_closed(tmp_path):
    database = metrics.MetricsDB(tmp_path / "m.db")
    real = database.db

    class CommitFails:
        def commit(self):
            raise sqlite3.OperationalError("disk I/O error")

        def close(self):
            real.close()
            self.closed = True

    database.db = broken = CommitFails()
    with pytest.raises(MicroconvError, match="cannot write the metrics database .*disk I/O"):
        database.close()
    assert broken.closed and database.db is None


# --- other files the CLI writes -------------------------------------------------------------------

def test_import_seed_into_a_missing_folder(tmp_path):
    state = tmp_path / "w.state"
    tensors = [np.zeros(shape, np.float32) for shape in hello_dl.LAYOUTS["legacy"]]
    hello_dl.write_seed_state(state, "legacy", tensors)
    result = cli("import-seed", state, "--out", tmp_path / "gone" / "w.npz")
    assert_one_line_error(result, "w.npz", "No such file or directory")


def test_import_seed_over_a_checkpoint_that_cannot_be_replaced(tmp_path, previous, monkeypatch):
    path, before = previous
    state = tmp_path / "w.state"
    hello_dl.write_seed_state(state, "legacy",
                          [np.zeros(shape, np.float32) for shape in hello_dl.LAYOUTS["legacy"]])
    monkeypatch.setattr(checkpoint.os, "replace", denied)
    result = cli("import-seed", state, "--out", path)
    assert_one_line_error(result, "Permission denied", "unchanged")
    assert path.read_bytes() == before and leftovers(path.parent) == []


def test_graph_into_a_missing_folder(tmp_path):
    result = cli("graph", "--out", tmp_path / "gone" / "g.dot")
    assert_one_line_error(result, "g.dot", "No such file or directory")
