"""Failed writes (disk full, permission denied, folder missing) keep the previous checkpoint.

Tests run as root, so a read-only folder would not stop them: the failures are simulated by
making the write, fsync, rename or SQLite raise exactly what the operating system would.
"""

import errno
import functools
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from clitools import (  # noqa: F401 - no_emnist is a fixture
    assert_one_line_error,
    bar_picture,
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
    assert_one_line_error(result, "run.npz: it is a folder")
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


# --- only ordinary files are replaced --------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_only_ordinary_files_are_replaced(tmp_path, kind):
    path = tmp_path / "target"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path = "/dev/null"
    with pytest.raises(CheckpointError, match="it is a folder|not an ordinary file") as caught:
        save_checkpoint(path, ConvoAlphabetModel("numpy"), Preprocessing())
    assert str(path) in str(caught.value)
    if kind == "device":
        assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    else:
        assert (path.is_fifo() if kind == "fifo" else path.is_dir())
    assert leftovers(tmp_path) == []


def test_a_symbolic_link_is_replaced_and_its_target_kept(tmp_path):
    target = untrained_checkpoint(tmp_path)
    before = target.read_bytes()
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    save_checkpoint(link, ConvoAlphabetModel("numpy", seed=1), Preprocessing())
    assert not link.is_symlink() and target.read_bytes() == before
    assert read_checkpoint(link)[1]["c1.weight"].shape == (32, 1, 3, 3)


@pytest.mark.parametrize("argv", [("graph", "--out", "{fifo}"),
                                  ("import-seed", "{state}", "--out", "{fifo}")])
def test_commands_refuse_to_write_into_a_fifo(tmp_path, argv):
    fifo, state = tmp_path / "pipe", tmp_path / "w.state"
    os.mkfifo(fifo)
    hello_dl.write_seed_state(state, "legacy", [np.zeros(shape, np.float32)
                                                for shape in hello_dl.LAYOUTS["legacy"]])
    result = cli(*(a.format(fifo=fifo, state=state) for a in argv))
    assert_one_line_error(result, str(fifo), "not an ordinary file")
    assert fifo.is_fifo()


# --- temporaries a killed writer left behind ---------------------------------------------------

def aged(path, content=None, seconds=3600):
    """The file (written first when content is given), its time stamps an hour back."""
    if content is not None:
        path.write_bytes(content)
    old = path.stat().st_mtime - seconds
    os.utime(path, (old, old))
    return path


def test_abandoned_temporaries_are_removed_by_the_next_write(tmp_path):
    import fcntl
    abandoned = aged(tmp_path / ".tmp-k1lled00.part", b"half a checkpoint")
    fresh = tmp_path / ".tmp-fresh000.part"              # a writer may have just made it
    fresh.write_bytes(b"")
    busy = aged(tmp_path / ".tmp-busy0000.part", b"")     # old, but its writer holds the lock
    others = [aged(tmp_path / name, b"not ours")
              for name in (".tmp-notes.part", "notes.part", ".tmp-k1lled00.txt")]
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        save_checkpoint(tmp_path / "model.npz", ConvoAlphabetModel("numpy"), Preprocessing())
    assert not abandoned.exists()
    assert fresh.exists() and busy.exists() and all(p.exists() for p in others)


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_write_removes(tmp_path):
    code = ("import sys, time\n"
            "from microconv.letters.checkpoint import write_atomically\n"
            "def slow(f):\n"
            "    f.write(b'half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
            "write_atomically(sys.argv[1], slow)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out.bin")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        left = leftovers(tmp_path)
        assert len(left) == 1
        # While the writer lives its temporary is never removed, however old.
        aged(tmp_path / left[0])
        checkpoint.remove_abandoned_temporaries(tmp_path)
        assert leftovers(tmp_path) == left
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    finally:
        writer.kill()
        writer.stdout.close()
    assert leftovers(tmp_path) == left
    checkpoint.write_atomically(tmp_path / "out.bin", lambda f: f.write(b"whole"))
    assert leftovers(tmp_path) == [] and (tmp_path / "out.bin").read_bytes() == b"whole"


# --- pictures and dot text are written atomically --------------------------------------------

@pytest.fixture
def picture(tmp_path):
    return bar_picture(tmp_path / "letter.png")


def test_a_full_disk_under_annotate_keeps_the_previous_picture(tmp_path, picture, monkeypatch):
    out = tmp_path / "read.png"
    out.write_bytes(b"the previous annotated picture")
    model = untrained_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    result = cli("predict", model, picture, "--annotate", out)
    assert_one_line_error(result, f"cannot write {out}", "No space left on device", "unchanged")
    assert out.read_bytes() == b"the previous annotated picture"
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert cli("predict", model, picture, "--annotate", out).exit_code == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_a_full_disk_under_graph_names_the_file(tmp_path, monkeypatch):
    out = tmp_path / "graph.dot"
    out.write_text("digraph previous {}\n")
    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    result = cli("graph", "--out", out)
    assert_one_line_error(result, f"cannot write {out}", "No space left on device")
    assert out.read_text() == "digraph previous {}\n" and leftovers(tmp_path) == []
