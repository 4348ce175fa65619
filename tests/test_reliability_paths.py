"""No command writes over a file it reads, and no file's contents choose where anything is written.

Every command runs end to end while a Python audit hook records each file it opens for reading,
opens for writing, renames into place or opens as SQLite. A file read and later written is an
input overwritten (reading back one's own output after writing it, to verify it, is fine).
The files around the commands are hostile: a
checkpoint whose header names other files as its output, metrics database and resume point; an
archive whose members climb out of the download folder. Outputs that name inputs (or each
other) are refused before anything is written, with one line naming both.
"""

import json
import os
import sys
import zipfile

import clitools
import numpy as np
import pytest

from microconv.letters import hello_dl, synth
from microconv.letters.checkpoint import TEMP_NAME, read_checkpoint
from microconv.letters.data import emnist_filename

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class FileEvents:
    """What the process did to files under ``root``: the files written, the files read before
    anything wrote them (inputs), and the SQLite files opened."""

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self.read, self.written, self.databases = set(), set(), set()

    def _wrote(self, path):
        self.written.add(path)

    def _reads(self, path):
        if path not in self.written:
            self.read.add(path)

    def _ours(self, path):
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.realpath(os.fsdecode(path))
            cache = os.path.join(self.root, "cache")        # matplotlib's font cache
            if path.startswith(self.root) and not path.startswith(cache) and \
                    not os.path.isdir(path):
                return path
        return None

    def __call__(self, event, args):
        if event == "open":
            path = self._ours(args[0])
            if path is not None:
                flags = args[2] or 0
                (self._wrote if flags & WRITE_FLAGS else self._reads)(path)
        elif event in ("os.rename", "os.replace"):
            path = self._ours(args[1])
            if path is not None:
                self._wrote(path)
        elif event == "sqlite3.connect":
            path = self._ours(args[0])
            if path is not None:
                self.databases.add(path)


RECORDER = []


def _hook(event, args):
    if RECORDER:
        RECORDER[-1](event, args)


sys.addaudithook(_hook)


def run(root, *argv):
    """Run the command, returning (result, events), temporaries left out of the written set."""
    events = FileEvents(root)
    RECORDER.append(events)
    try:
        result = clitools.cli(*argv, env=clitools.no_emnist_env(root))
    finally:
        RECORDER.pop()
    events.written = {p for p in events.written if not TEMP_NAME.fullmatch(os.path.basename(p))}
    return result, events


def real(*paths):
    return {os.path.realpath(p) for p in paths}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data, a trained checkpoint with its metrics, a picture, a seed state file, an archive,
    and victims: files that hostile contents point at and that must never change."""
    root = tmp_path_factory.mktemp("paths")
    victims = {name: root / "victims" / name for name in ("out.npz", "metrics.db", "resume.npz",
                                                           "emnist-letters-test-labels-idx1-"
                                                           "ubyte.gz")}
    victims["out.npz"].parent.mkdir()
    for path in victims.values():
        path.write_bytes(b"precious " + path.name.encode())
    letters = root / "letters"
    synth.write_emnist_files(letters, train_size=48, test_size=26, seed=4)
    model, database = root / "model.npz", root / "metrics.db"
    result, _ = run(root, "train", "--data-dir", letters, "--limit", 32, "--batch-size", 16,
                    "--epochs", 1, "--validation-size", 16, "--out", model, "--metrics",
                    database, "--no-dashboard")
    assert result.exit_code == 0, result.output

    # A checkpoint whose saved settings name the victims as its files.
    hostile = root / "hostile.npz"
    with np.load(model) as stored:
        arrays = {key: stored[key] for key in stored.files}
    header = json.loads(arrays["header"].tobytes())
    header["config"].update(out=str(victims["out.npz"]), metrics=str(victims["metrics.db"]),
                            resume=str(victims["resume.npz"]), epochs=2)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(hostile, **arrays)

    picture = clitools.bar_picture(root / "letter.png")
    state = root / "w.state"
    hello_dl.write_seed_state(state, "legacy", [np.zeros(shape, np.float32)
                                                for shape in hello_dl.LAYOUTS["legacy"]])
    # An archive whose member names climb out of the folder it is unpacked into.
    archive = root / "climbing.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for split in ("train", "test"):
            for kind in ("images", "labels"):
                name = emnist_filename("letters", split, kind) + ".gz"
                z.write(letters / name, f"gzip/../../victims/{name}")
    return root, victims, {p: p.read_bytes() for p in victims.values()}, {
        "letters": letters, "model": model, "database": database, "hostile": hostile,
        "picture": picture, "state": state, "archive": archive}


def commands(root, f):
    """(argv, files it may write, whether the SQLite file it opens is one of its outputs)."""
    out = root / "out"
    data = [f["letters"] / (emnist_filename("letters", s, k) + ".gz")
            for s in ("train", "test") for k in ("images", "labels")]
    return [
        (("train", "--data-dir", f["letters"], "--limit", 32, "--batch-size", 16, "--epochs", 1,
          "--validation-size", 16, "--out", out / "run.npz", "--metrics", out / "m.db",
          "--no-dashboard"), [out / "run.npz", out / "m.db"], True),
        (("train", "--resume", f["hostile"], "--data-dir", f["letters"], "--no-dashboard"),
         [f["hostile"]], True),
        (("evaluate", f["model"], "--data-dir", f["letters"]), [], False),
        (("predict", f["model"], f["picture"], "--annotate", out / "read.png"),
         [out / "read.png"], False),
        (("graph", "--out", out / "g.dot"), [out / "g.dot"], False),
        (("import-seed", f["state"], "--out", out / "seed.npz"), [out / "seed.npz"], False),
        (("report", f["database"], "--out", out / "charts"),
         [out / "charts" / n for n in ("loss.png", "accuracy.png", "confusion.png")], False),
        (("data", "download", out / "dl", "--url", f"file://{f['archive']}"),
         [out / "dl" / "gzip.zip.part", out / "dl" / "gzip.zip"]
         + [out / "dl" / p.name for p in data], False),
        (("data", "verify", f["letters"]), [], False),
    ]


def test_no_command_writes_a_file_it_reads_nor_where_a_file_says(world):
    root, victims, before, f = world
    (root / "out").mkdir()
    for argv, may_write, database_is_output in commands(root, f):
        result, events = run(root, *argv)
        name = " ".join(map(str, argv[:2]))
        assert result.exit_code == 0, (name, result.output)
        written = events.written | (events.databases if database_is_output else set())
        read = events.read | (set() if database_is_output else events.databases)
        assert bool(read) == (argv[0] != "graph") and bool(written) == bool(may_write), name
        assert written <= real(*may_write), (name, written - real(*may_write))
        overlap = read & written
        if argv[:2] == ("train", "--resume"):
            overlap -= real(f["hostile"])      # --out defaults to the checkpoint resumed
        assert not overlap, (name, overlap)
    for path, content in before.items():
        assert path.read_bytes() == content, path
    header = read_checkpoint(f["hostile"])[0]
    assert header["progress"]["step"] == 4 and header["config"]["out"] == str(f["hostile"])
    assert header["config"]["metrics"] is None


def test_a_renamed_checkpoint_resumes_into_its_new_name(world, tmp_path):
    _, _, _, f = world
    moved = tmp_path / "renamed.npz"
    moved.write_bytes(f["model"].read_bytes())
    before = f["model"].read_bytes()
    result = clitools.cli("train", "--resume", moved, "--data-dir", f["letters"], "--epochs", 2,
                          "--no-dashboard")
    assert result.exit_code == 0, result.output
    assert f["model"].read_bytes() == before
    assert read_checkpoint(moved)[0]["progress"]["step"] == 4


@pytest.mark.parametrize("make_argv, fragment", [
    (lambda r, f: ("train", "--data-dir", f["letters"], "--limit", 32, "--batch-size", 16,
                   "--out", f["letters"] / "emnist-letters-train-images-idx3-ubyte.gz"),
     "--out {letters}/emnist-letters-train-images-idx3-ubyte.gz is the same file as data file"),
    (lambda r, f: ("train", "--limit", 32, "--batch-size", 16, "--out", r / "twice",
                   "--metrics", r / "twice"), "--metrics {root}/twice is the same file as --out"),
    (lambda r, f: ("train", "--limit", 32, "--batch-size", 16, "--out", r / "link.npz",
                   "--metrics", r / "model-link.db"), "--metrics {root}/model-link.db is the same"),
    (lambda r, f: ("predict", f["model"], f["picture"], "--annotate", f["picture"]),
     "--annotate {picture} is the same file as IMAGE {picture}"),
    (lambda r, f: ("import-seed", f["state"], "--out", f["state"]), "is the same file as STATE"),
    (lambda r, f: ("report", f["database"], "--out", f["database"].parent / "db-folder"),
     "is the same file as DATABASE"),
    (lambda r, f: ("data", "download", f["archive"].parent, "--url",
                   f"file://{f['archive'].parent}/gzip.zip"), "is the same file as --url"),
])
def test_an_output_that_names_an_input_is_refused_before_anything_is_written(
        world, tmp_path, make_argv, fragment):
    root, _, _, f = world
    (tmp_path / "link.npz").write_bytes(b"a checkpoint to be")
    os.link(tmp_path / "link.npz", tmp_path / "model-link.db")            # one file, two names
    charts = f["database"].parent / "db-folder"
    charts.mkdir(exist_ok=True)
    if not (charts / "loss.png").exists():
        os.link(f["database"], charts / "loss.png")
    watched = [p for p in (*f.values(), tmp_path / "link.npz") if p.is_file()]
    before = {p: p.read_bytes() for p in watched}
    argv = make_argv(tmp_path, f)
    result = clitools.cli(*argv, *(["--no-dashboard"] if argv[0] == "train" else []))
    clitools.assert_one_line_error(result, fragment.format(root=tmp_path, **f))
    assert {p: p.read_bytes() for p in watched} == before
    assert not (tmp_path / "twice").exists()


def test_gzip_member_names_never_leave_the_download_folder(world, tmp_path):
    _, victims, before, f = world
    from microconv.letters.download import download_emnist
    result = download_emnist(tmp_path / "dl", url=f"file://{f['archive']}")
    assert sorted(os.path.basename(p) for p in result["files"]) == sorted(
        emnist_filename("letters", s, k) + ".gz" for s in ("train", "test")
        for k in ("images", "labels"))
    assert all(os.path.dirname(p) == str(tmp_path / "dl") for p in result["files"])
    assert "not checked against a checksum" in result["unchecked"]
    for path, content in before.items():
        assert path.read_bytes() == content
