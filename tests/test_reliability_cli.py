"""Every error path of every command: exit code 1, one line on stderr, no traceback.

One table, one row per mistake a user can make with a command; test_cli.py already runs
the common ones (a missing data folder, a bad learning rate, an unreadable picture, ...) and
they are not repeated here. Paths in the table are names of the ``files`` fixture, filled in
when the test runs. Mistakes the option parser catches (a missing argument, a number out of
range, an unknown command) are Click usage errors: exit code 2 and a short usage panel.
"""

import gzip
import importlib.util
import re
import sqlite3
import sys
import zipfile

import clitools
import pytest
from optional import REQUIRE_BROWSER, skip_unless_required

from microconv.cli import app
from microconv.letters import synth
from microconv.letters.checkpoint import save_checkpoint
from microconv.letters.data import emnist_filename
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Everything the table refers to, made once: good and damaged inputs of every kind."""
    root = tmp_path_factory.mktemp("cli-errors")
    env = {**clitools.no_emnist_env(root), "COLUMNS": "100"}
    paths = {"root": root, "missing": root / "missing", "empty_dir": root / "empty-dir",
             "text": root / "notes.txt", "letters": root / "letters", "model": root / "model.npz",
             "db": root / "metrics.db", "empty_db": root / "empty.db",
             "picture": root / "letter.png", "archive": root / "other.zip",
             "broken": root / "broken", "digits_model": root / "digits.npz"}
    paths["empty_dir"].mkdir()
    paths["text"].write_text("these are my notes\n")
    synth.write_emnist_files(paths["letters"], train_size=64, test_size=26, seed=2)
    synth.write_emnist_files(paths["broken"], train_size=64, test_size=26, seed=2)
    (paths["broken"] / (emnist_filename("letters", "test", "labels") + ".gz")).write_bytes(
        gzip.compress(b"\0\0\x08\x01\0\0\0\x03\x01\x02\x03"))          # 3 labels for 26 images
    result = clitools.cli("train", "--data-dir", paths["letters"], "--limit", 32,
                          "--batch-size", 16, "--epochs", 1, "--validation-size", 16,
                          "--out", paths["model"], "--metrics", paths["db"], "--no-dashboard",
                          env=env)
    assert result.exit_code == 0, result.output
    sqlite3.connect(paths["empty_db"]).execute("CREATE TABLE other (x)")
    save_checkpoint(paths["digits_model"], ConvoAlphabetModel("numpy"), Preprocessing(),
                    header={"class_names": "0123456789"})
    clitools.bar_picture(paths["picture"])
    with zipfile.ZipFile(paths["archive"], "w") as archive:
        archive.writestr("readme.txt", "no EMNIST in here")
    return paths, env


def cli(files, argv):
    paths, env = files
    return clitools.cli(*(str(a).format(**paths) for a in argv), env=env)


TRAIN = ("train", "--no-dashboard")
SMALL = ("--limit", 32, "--batch-size", 16)

ERRORS = [
    # train
    (TRAIN + ("--data-dir", "{empty_dir}"), ["empty-dir lacks", "train-images"]),
    (TRAIN + ("--data-dir", "{broken}"), ["26 images but", "3 labels"]),
    (TRAIN + ("--data-dir", "{text}"), ["notes.txt"]),
    (TRAIN + ("--dropout", 1.5), ["dropout must lie in [0, 1)"]),
    (TRAIN + ("--max-minutes", -1), ["max_minutes must be positive"]),
    (TRAIN + ("--dataset", "klingon"), ["dataset must be one of", "klingon"]),
    (TRAIN + ("--dataset", "digits"), ["no EMNIST digits files", "only for letters"]),
    (TRAIN + ("--limit", 10, "--batch-size", 64), ["10 images", "fewer than one batch of 64"]),
    (TRAIN + ("--device", "0:0"), ["--device", "--backend opencl"]),
    (TRAIN + ("--resume", "{missing}/run.npz"), ["run.npz does not exist"]),
    (TRAIN + ("--resume", "{text}"), ["notes.txt is not a microconv checkpoint"]),
    (TRAIN + ("--resume", "{model}", "--optimizer", "sgd"), ["optimizer 'adam'", "'sgd'"]),
    (TRAIN + SMALL + ("--metrics", "{text}"), ["cannot use", "notes.txt", "not a database"]),
    (TRAIN + SMALL + ("--metrics", "{empty_dir}"), ["--metrics", "empty-dir: it is a folder"]),
    (TRAIN + SMALL + ("--out", "{root}/same", "--metrics", "{root}/same"),
     ["--metrics {root}/same is the same file as --out {root}/same"]),
    (TRAIN + SMALL + ("--data-dir", "{letters}", "--out",
                      "{letters}/emnist-letters-test-labels-idx1-ubyte.gz"),
     ["--out", "is the same file as data file", "test-labels"]),
    (TRAIN + ("--resume", "{model}", "--metrics", "{model}", "--out", "{root}/other.npz"),
     ["--metrics", "same file as --resume"]),
    (TRAIN + SMALL + ("--out", "/dev/null"), ["/dev/null", "not an ordinary file"]),
    (TRAIN + SMALL + ("--max-minutes", "nan"), ["max_minutes must be", "finite", "nan"]),
    (TRAIN + SMALL + ("--out", "{text}/run.npz"), ["cannot create", "notes.txt"]),
    # evaluate
    (("evaluate", "{text}"), ["notes.txt is not a microconv checkpoint"]),
    (("evaluate", "{empty_dir}"), ["empty-dir does not exist"]),
    (("evaluate", "{model}", "--data-dir", "{missing}"), ["missing does not exist"]),
    (("evaluate", "{model}", "--data-dir", "{broken}"), ["26 images but", "3 labels"]),
    (("evaluate", "{model}", "--dataset", "klingon"), ["unknown dataset 'klingon'"]),
    (("evaluate", "{digits_model}", "--data-dir", "{letters}"),
     ["trained on the classes 0123456789", "pass the --dataset it was trained on"]),
    # predict
    (("predict", "{text}", "{picture}"), ["notes.txt is not a microconv checkpoint"]),
    (("predict", "{model}", "{text}"), ["cannot read image", "notes.txt"]),
    (("predict", "{model}", "{picture}", "--annotate", "{missing}/out.png"),
     ["cannot write", "out.png"]),
    (("predict", "{model}", "{picture}", "--annotate", "{root}/out.unknown"),
     ["cannot write", "out.unknown"]),
    (("predict", "{model}", "{picture}", "--device", "1:0"), ["--device", "--backend opencl"]),
    (("predict", "{model}", "{picture}", "--annotate", "{picture}"),
     ["--annotate", "is the same file as IMAGE"]),
    (("predict", "{model}", "{picture}", "--annotate", "{model}"),
     ["--annotate", "is the same file as CHECKPOINT"]),
    (("predict", "{digits_model}", "{picture}"), ["trained on the classes 0123456789",
                                                  "this reads letters A-Z"]),
    # serve (each fails before the server starts)
    (("serve", "{text}"), ["notes.txt is not a microconv checkpoint"]),
    (("serve", "{missing}/model.npz"), ["model.npz does not exist"]),
    (("serve", "{model}", "--host", "no-such-host.invalid"),
     ["cannot listen on no-such-host.invalid"]),
    (("serve", "{model}", "--device", "0:0"), ["--device", "--backend opencl"]),
    (("serve", "{digits_model}"), ["trained on the classes 0123456789", "reads letters A-Z"]),
    # data info / verify / download
    (("data", "info", "{missing}"), ["missing does not exist"]),
    (("data", "info", "{empty_dir}"), ["holds no EMNIST files"]),
    (("data", "info", "{letters}", "--dataset", "klingon"), ["unknown dataset 'klingon'"]),
    (("data", "info", "{broken}"), ["26 images but", "3 labels"]),
    (("data", "verify"), ["no EMNIST letters files found", "microconv data download"]),
    (("data", "verify", "{missing}"), ["missing does not exist"]),
    (("data", "verify", "{empty_dir}"), ["holds no EMNIST files"]),
    (("data", "verify", "{letters}", "--dataset", "klingon"), ["unknown dataset 'klingon'"]),
    (("data", "download", "{root}/dl1", "--url", "file://{missing}/gzip.zip"),
     ["cannot download", "To install by hand"]),
    (("data", "download", "{root}/dl2", "--url", "file://{archive}"),
     ["lacks emnist-letters-test-images"]),
    (("data", "download", "{root}/dl3", "--url", "file://{archive}", "--sha256", "00"),
     ["damaged", "expected 00"]),
    (("data", "download", "{text}/dl", "--url", "file://{archive}"), ["cannot create"]),
    (("data", "download", "{root}/dl4", "--url", "not a url"), ["cannot download not a url"]),
    (("data", "download", "{root}/dl5", "--url", "file://{root}/dl5/gzip.zip"),
     ["the archive", "is the same file as --url"]),
    # report
    (("report", "{text}"), ["cannot use", "not a database"]),
    (("report", "{empty_db}"), ["cannot use", "no such table: runs"]),
    (("report", "{empty_dir}"), ["empty-dir does not exist"]),
    (("report", "{db}", "--run", 99, "--out", "{root}/charts"), ["has no run 99"]),
    # graph
    (("graph", "--out", "{missing}/graph.dot"), ["graph.dot", "No such file or directory"]),
    (("graph", "--out", "{empty_dir}"), ["empty-dir: it is a folder"]),
    (("graph", "--out", "/dev/null"), ["/dev/null", "not an ordinary file"]),
    (("graph", "--batch-size", 10**9), ["a batch of 1,000,000,000 images", "of memory"]),
    # import-seed
    (("import-seed", "{missing}/w.state"), ["w.state does not exist"]),
    (("import-seed", "{text}"), ["notes.txt", "not a hello-dl state file"]),
    (("import-seed", "{empty_dir}"), ["empty-dir does not exist or is not a file"]),
    (("import-seed", "{text}", "--out", "{text}"), ["--out", "is the same file as STATE"]),
    # bench
    (("bench", "--batch-size", 10**6), ["a batch of 1,000,000 images", "of memory"]),
]


@pytest.mark.parametrize("argv, fragments", ERRORS,
                         ids=[" ".join(map(str, argv)) for argv, _ in ERRORS])
def test_every_error_is_one_line(files, argv, fragments):
    if argv[0] == "serve" and importlib.util.find_spec("uvicorn") is None:
        skip_unless_required(REQUIRE_BROWSER,
                             'serve needs the web extra (pip install -e ".[web]")')
    result = cli(files, argv)
    root = str(files[0]["root"])
    message = clitools.assert_one_line_error(
        result, *(fragment.format(root=root) for fragment in fragments))
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message.startswith("error: "), message


def test_the_table_covers_every_command(files):
    import typer
    commands = typer.main.get_command(app).commands
    covered = {argv[0] for argv, _ in ERRORS} | {"backends"}     # see below
    assert covered == set(commands)
    data = {argv[1] for argv, _ in ERRORS if argv[0] == "data"}
    assert data == set(commands["data"].commands)


def test_backends_and_bench_report_problems_as_information(files):
    """backends lists what cannot run (exit 0); bench skips a backend that cannot run."""
    listing = cli(files, ("backends", "--device", "99:0", "--json"))
    assert listing.exit_code == 0, listing.output
    unknown = cli(files, ("bench", "--backend", "cuda"))
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output


@pytest.mark.parametrize("argv, fragment", [
    (("train", "--epochs", 0), "--epochs"),
    (("train", "--batch-size", "many"), "--batch-size"),
    (("train", "--backend", "cuda"), "cuda"),
    (("evaluate",), "Missing argument"),
    (("predict", "{model}"), "Missing argument 'images'"),
    (("bench", "--runs", 0), "--runs"),
    (("train", "--seed", -1), "--seed"),
    (("evaluate", "{model}", "--seed", -1), "--seed"),
    (("data", "info", "--samples", -1), "--samples"),
    (("no-such-command",), "No such command"),
])
def test_usage_mistakes_exit_2_with_a_short_panel(files, argv, fragment):
    result = cli(files, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.stderr and "Try 'microconv" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 8


def test_ctrl_c_outside_training_aborts_without_a_traceback(files, monkeypatch):
    evaluation = sys.modules["microconv.letters.evaluate"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "evaluate", interrupted)
    result = cli(files, ("evaluate", "{model}", "--data-dir", "{letters}"))
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert result.stderr.strip() == "interrupted"


def test_the_documented_train_options_and_defaults_are_the_codes():
    """docs/cli.md lists every train option with the default TrainConfig gives it."""
    import dataclasses
    from pathlib import Path

    from microconv.letters.training import TrainConfig

    text = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    section = text[text.index("## train"):text.index("## evaluate")]
    rows = [line for line in section.splitlines() if line.startswith("| `--")]
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        row = [r for r in rows if re.search(f"`{flag}[` /]", r.split("|")[1])]
        assert len(row) == 1, f"docs/cli.md has no row for {flag}"
        if field.default is None:
            continue
        shown = ("on" if field.default else "off") if isinstance(field.default, bool) else \
            f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
        assert f"({shown})" in row[0], f"{flag}: docs/cli.md does not say ({shown}): {row[0]}"
