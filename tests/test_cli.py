"""The ``microconv`` command, run in-process with Typer's CliRunner on small generated data.

One tiny training run (module fixture) gives the checkpoint and metrics database the other
commands use. Output goes to a pipe here, so the dashboard is off and progress is plain lines.
"""

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import typer
from clitools import assert_one_line_error, cli, no_emnist_env
from optional import SEED_STATE, shared_or_skip
from PIL import Image

import microconv
from microconv.cli import app
from microconv.letters import synth
from microconv.letters.data import generated_letters



@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A folder with generated EMNIST-format files, and an environment that finds no other data."""
    root = tmp_path_factory.mktemp("cli")
    synth.write_emnist_files(root / "letters", train_size=260, test_size=130, seed=3)
    env = {**no_emnist_env(root), "COLUMNS": "100"}
    return root, env


def run(home, *args):
    return cli(*args, env=home[1])


@pytest.fixture(scope="module")
def trained(home):
    """One short real training run on the generated files: (result, checkpoint, database)."""
    root, _ = home
    checkpoint, database = root / "letters.npz", root / "metrics.db"
    result = run(home, "train", "--data-dir", root / "letters", "--limit", 128, "--epochs", 1,
                 "--batch-size", 32, "--eval-every", 2, "--generated-share", 0, "--out", checkpoint,
                 "--metrics", database, "--seed", 1)
    assert result.exit_code == 0, result.output
    return result, checkpoint, database


LETTERS = generated_letters(30, 5)       # the first three: a "t", a "j" and a "c"


def letter_png(path, index=0):
    """A generated letter drawn 4x larger in dark ink on white paper."""
    page = np.full((200, 200), 255, np.uint8)
    page[44:156, 44:156] = 255 - np.kron(LETTERS[0][index], np.ones((4, 4), np.uint8))
    Image.fromarray(page).save(path)
    return path


# --- the basics ---------------------------------------------------------------------------------

def test_version(home):
    result = run(home, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"microconv {microconv.__version__}"


def test_no_arguments_shows_every_command(home):
    result = run(home)
    for command in ("train", "evaluate", "predict", "backends", "bench", "data", "report",
                    "graph", "import-seed"):
        assert command in result.output


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["predict"], ["backends"],
                                     ["bench"], ["data", "info"], ["data", "verify"],
                                     ["data", "download"], ["report"], ["graph"],
                                     ["import-seed"]])
def test_every_command_has_help(home, command):
    result = run(home, *command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_train_help_lists_the_documented_options(home):
    text = run(home, "train", "--help").output
    for option in ("--backend", "-b", "--device", "--data-dir", "--dataset", "--epochs",
                   "--max-minutes", "--batch-size", "--lr", "--optimizer", "--momentum",
                   "--weight-decay", "--augment", "--no-augment", "--seed", "--limit", "--out",
                   "--resume", "--metrics", "--eval-every", "--dashboard", "--no-dashboard"):
        assert option in text, option


# --- train -----------------------------------------------------------------------------------

def test_train_without_a_terminal_prints_plain_progress(trained):
    result, checkpoint, database = trained
    out = result.stdout
    assert "no dashboard: stdout is not a terminal" in out
    assert "training on numpy" in out
    assert "epoch 1/1 | batch 1/4 | step 1/4" in out
    assert "validation at step 2:" in out and "validation at step 4:" in out
    assert f"checkpoint {checkpoint} (step 4)" in out
    assert "test accuracy" in out.splitlines()[-1]
    assert "\x1b[" not in out                       # no colour codes in a pipe
    assert checkpoint.is_file() and database.is_file()


def test_train_resume_continues_from_the_checkpoint(home, trained, tmp_path):
    _, checkpoint, _ = trained
    out = tmp_path / "more.npz"
    result = run(home, "train", "--resume", checkpoint, "--epochs", 2, "--out", out,
                 "--no-dashboard")
    assert result.exit_code == 0, result.output
    # The saved settings (data, limit, batch size) are kept: epoch 2 is steps 5..8.
    assert "step 5/8" in result.stdout and "step 8/8" in result.stdout
    assert "step 1/8" not in result.stdout
    assert out.is_file()


def test_train_on_generated_letters_when_no_data_is_found(home, tmp_path):
    result = run(home, "train", "--limit", 64, "--epochs", 1, "--batch-size", 32,
                 "--out", tmp_path / "g.npz", "--no-dashboard", "--no-augment")
    assert result.exit_code == 0, result.output
    assert "generated letters" in result.stdout


def test_ctrl_c_saves_a_checkpoint_and_exits_130(home, tmp_path, monkeypatch):
    from microconv.cli.dashboard import LineReporter

    def interrupt_at_step_two(self, record):
        if record.step == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(LineReporter, "on_batch", interrupt_at_step_two)
    out = tmp_path / "stopped.npz"
    result = run(home, "train", "--data-dir", home[0] / "letters", "--limit", 128,
                 "--epochs", 1, "--batch-size", 32, "--out", out, "--no-dashboard")
    assert_one_line_error(result, "interrupted", str(out), code=130)
    assert out.is_file()
    assert "interrupted after 2 steps" in result.stdout


def test_forced_dashboard_in_a_pipe_draws_the_final_frame(home, tmp_path):
    result = run(home, "train", "--data-dir", home[0] / "letters", "--limit", 64,
                 "--epochs", 1, "--batch-size", 32, "--out", tmp_path / "d.npz", "--dashboard")
    assert result.exit_code == 0, result.output
    assert "microconv train" in result.stdout and "finished: test accuracy" in result.stdout


# --- evaluate and predict -----------------------------------------------------------------------

def test_evaluate_json(home, trained):
    _, checkpoint, _ = trained
    result = run(home, "evaluate", checkpoint, "--data-dir", home[0] / "letters", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("accuracy", "top2_accuracy", "perturbed_accuracy", "per_class", "confusion",
                "most_confused", "count"):
        assert key in report
    assert report["count"] == 130
    assert np.array(report["confusion"]).shape == (26, 26)
    assert np.array(report["confusion"]).sum() == 130
    assert set(report["per_class"]) == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert 0.0 <= report["accuracy"] <= report["top2_accuracy"] <= 1.0


def test_evaluate_tables(home, trained):
    _, checkpoint, _ = trained
    result = run(home, "evaluate", checkpoint, "--data-dir", home[0] / "letters")
    assert result.exit_code == 0, result.output
    for expected in ("accuracy", "top-2 accuracy", "perturbed accuracy", "confusion matrix",
                     "accuracy per letter", "130"):
        assert expected in result.stdout


@pytest.fixture(scope="module")
def seed_checkpoint(home):
    """The seed's trained weights as a checkpoint: it reads generated letters well."""
    out = home[0] / "seed.npz"
    result = run(home, "import-seed", shared_or_skip(SEED_STATE), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["parameters"] == 137_178 and summary["layout"] == "legacy"
    return out


def test_predict_reads_a_single_letter(home, seed_checkpoint, tmp_path):
    assert LETTERS[1][0] == 19
    image = letter_png(tmp_path / "t.png")
    result = run(home, "predict", seed_checkpoint, image, "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["images"][0]
    assert found["text"] == "t"
    assert len(found["letters"]) == 1 and len(found["letters"][0]["top3"]) == 3
    assert found["letters"][0]["top3"][0][0] == "t"


def test_predict_table_draws_the_letter_and_annotates(home, seed_checkpoint, tmp_path):
    image = letter_png(tmp_path / "t.png")
    annotated = tmp_path / "boxes.png"
    result = run(home, "predict", seed_checkpoint, image, "--annotate", annotated)
    assert result.exit_code == 0, result.output
    assert "read t" in result.stdout
    assert "as the network sees it" in result.stdout and "█" in result.stdout
    assert Image.open(annotated).size == (200, 200)


def test_predict_with_a_trained_checkpoint_and_several_images(home, trained, tmp_path):
    _, checkpoint, _ = trained
    images = [letter_png(tmp_path / f"{i}.png", index=i) for i in range(2)]
    result = run(home, "predict", checkpoint, *images, "--json")
    assert result.exit_code == 0, result.output
    assert [len(entry["letters"]) for entry in json.loads(result.stdout)["images"]] == [1, 1]


# --- backends, bench, graph --------------------------------------------------------------------

def test_backends_json(home):
    result = run(home, "backends", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_name = {entry["name"]: entry for entry in report["backends"]}
    assert {"python", "numpy", "opencl"} <= set(by_name)
    assert by_name["numpy"]["available"] and "NumPy" in by_name["numpy"]["description"]
    opencl = report["opencl"]
    if by_name["opencl"]["available"]:
        assert opencl["devices"] and sum(d["chosen"] for d in opencl["devices"]) == 1
        for device in opencl["devices"]:
            assert {"platform", "device", "type", "driver", "chosen"} <= set(device)
    else:
        assert by_name["opencl"]["reason"] and opencl["error"]


def test_backends_table(home):
    result = run(home, "backends")
    assert result.exit_code == 0, result.output
    assert "numpy" in result.stdout and "python" in result.stdout and "opencl" in result.stdout


def test_bench_json(home):
    result = run(home, "bench", "--backend", "NumPy", "--batch-size", 8, "--runs", 1, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["batch_size"] == 8
    assert report["backends"]["numpy"]["train_images_per_s"] > 0


def test_graph_is_dot_text_with_ops_and_shapes(home):
    result = run(home, "graph")
    assert result.exit_code == 0, result.output
    dot = result.stdout
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert 'label="conv2d\\n1x32x26x26"' in dot
    assert 'label="c1.weight\\n32x1x3x3"' in dot
    assert "log_softmax\\n1x26" in dot


def test_graph_of_training_includes_the_loss(home):
    dot = run(home, "graph", "--train", "--batch-size", 4).stdout
    assert "one-hot labels\\n4x26" in dot and "scalar" in dot


# --- data ---------------------------------------------------------------------------------------

def test_data_info_json_and_letters(home):
    folder = home[0] / "letters"
    result = run(home, "data", "info", folder, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)["datasets"]["letters"]["splits"]
    assert info["train"]["count"] == 260 and info["test"]["count"] == 130
    assert info["test"]["per_class"]["A"] == 5
    assert info["train"]["orientation"] == "upright"
    shown = run(home, "data", "info", folder, "--samples", 2).stdout
    assert "upright" in shown and "█" in shown


def test_data_verify(home):
    result = run(home, "data", "verify", home[0] / "letters", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and len(report["files"]) == 4


def test_data_download_from_a_local_archive(home, tmp_path):
    source = home[0] / "letters"
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in source.iterdir():
            z.write(file, f"gzip/{file.name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = tmp_path / "downloaded"
    result = run(home, "data", "download", dest, "--url", archive.as_uri(), "--sha256", digest)
    assert result.exit_code == 0, result.output
    assert "unpacked 4 files" in result.stdout
    assert len(list(dest.glob("emnist-letters-*.gz"))) == 4


# --- report -------------------------------------------------------------------------------------

def test_report_writes_charts(home, trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, database = trained
    result = run(home, "report", database, "--out", tmp_path / "charts")
    assert result.exit_code == 0, result.output
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert Image.open(tmp_path / "charts" / name).size[0] > 100


def test_report_without_matplotlib_says_how_to_get_it(home, trained, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib fails
    result = run(home, "report", trained[2], "--out", tmp_path / "charts")
    assert_one_line_error(result, "matplotlib", "microconv[report]")


# --- what users get wrong -----------------------------------------------------------------------

def test_missing_data_directory(home, tmp_path):
    result = run(home, "train", "--data-dir", tmp_path / "nowhere", "--no-dashboard")
    assert_one_line_error(result, "nowhere", "does not exist")


def test_corrupt_data_files(home, tmp_path):
    folder = synth.write_emnist_files(tmp_path / "broken", 52, 26, seed=1)
    images = folder / "emnist-letters-train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:1000]))
    result = run(home, "train", "--data-dir", folder, "--no-dashboard")
    assert_one_line_error(result, "truncated")
    verify = run(home, "data", "verify", folder)
    assert_one_line_error(verify, "failed the check")
    assert "truncated" in verify.stdout


def test_unknown_backend(home):
    result = run(home, "train", "--backend", "cuda", "--no-dashboard")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "cuda" in result.output and "numpy" in result.output


def test_backend_names_ignore_case(home):
    result = run(home, "graph", "--help")
    assert result.exit_code == 0
    assert run(home, "bench", "-b", "NUMPY", "--help").exit_code == 0


def test_bad_training_settings(home):
    result = run(home, "train", "--lr", "-1", "--no-dashboard")
    assert_one_line_error(result, "lr must be positive")


def test_unreadable_image(home, trained, tmp_path):
    bad = tmp_path / "letter.png"
    bad.write_text("this is not a picture")
    result = run(home, "predict", trained[1], bad)
    assert_one_line_error(result, "cannot read image")


def test_missing_image(home, trained, tmp_path):
    result = run(home, "predict", trained[1], tmp_path / "gone.png")
    assert_one_line_error(result, "gone.png")


def test_missing_checkpoint(home, tmp_path):
    result = run(home, "evaluate", tmp_path / "none.npz", "--data-dir", home[0] / "letters")
    assert_one_line_error(result, "none.npz", "does not exist")


def test_incompatible_checkpoint(home, trained, tmp_path):
    with np.load(trained[1]) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["param/fc3.weight"] = np.zeros((10, 128), np.float32)      # a 10-class head
    wrong = tmp_path / "digits.npz"
    np.savez(wrong, **arrays)
    result = run(home, "evaluate", wrong, "--data-dir", home[0] / "letters")
    assert_one_line_error(result, "fc3.weight", "(10, 128)")


def test_not_a_checkpoint(home, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 nothing useful")
    result = run(home, "predict", junk, tmp_path / "x.png")
    assert_one_line_error(result, "junk.npz")


def test_not_a_seed_state(home, tmp_path):
    junk = tmp_path / "weights.state"
    junk.write_bytes(b"\x00" * 100)
    result = run(home, "import-seed", junk, "--out", tmp_path / "x.npz")
    assert_one_line_error(result, "weights.state")


def test_missing_metrics_database(home, tmp_path):
    result = run(home, "report", tmp_path / "none.db", "--out", tmp_path / "charts")
    assert_one_line_error(result, "none.db")


def test_data_info_without_data_says_how_to_get_it(home):
    result = run(home, "data", "info")
    assert_one_line_error(result, "microconv data download")


def test_annotate_needs_exactly_one_image(home, trained, tmp_path):
    result = run(home, "predict", trained[1], "a.png", "b.png", "--annotate", tmp_path / "o.png")
    assert_one_line_error(result, "--annotate")


def test_docs_describe_every_command():
    page = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
    text = page.read_text(encoding="utf-8")
    commands = sorted(typer.main.get_command(app).commands)
    assert len(commands) == 10
    for name in commands:
        assert f"\n## {name}\n" in text, name
        assert f"$ microconv {name}" in text, name


def test_device_without_opencl_is_refused(home, trained):
    result = run(home, "evaluate", trained[1], "--device", "0:0")
    assert_one_line_error(result, "--device", "opencl")


def test_train_and_evaluate_on_opencl(home, tmp_path):
    from conftest import backend_or_skip
    backend_or_skip("opencl")
    out = tmp_path / "cl.npz"
    result = run(home, "train", "-b", "OpenCL", "--data-dir", home[0] / "letters", "--limit", 64,
                 "--epochs", 1, "--batch-size", 32, "--out", out, "--no-dashboard")
    assert result.exit_code == 0, result.output
    assert "training on opencl (OpenCL:" in result.stdout
    scores = run(home, "evaluate", out, "-b", "opencl", "--data-dir", home[0] / "letters",
                 "--limit", 26, "--json")
    assert scores.exit_code == 0, scores.output
    assert json.loads(scores.stdout)["count"] == 26
    bad = run(home, "evaluate", out, "-b", "opencl", "--device", "99:0", "--limit", 26)
    assert_one_line_error(bad, "99:0")
