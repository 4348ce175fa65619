"""Running the command line the way a user does, checking how it fails, and tiny training runs."""

import tracemalloc

import pytest
from PIL import Image
from typer.testing import CliRunner

from microconv.cli import app
from microconv.letters.checkpoint import save_checkpoint
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing
from microconv.letters.training import TrainConfig


def cli(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_one_line_error(result, *fragments, code=1):
    """The command failed with ``code``, said so in exactly one line on stderr that holds every
    fragment, and printed no traceback. Returns the line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip()
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_one_line_exception(exc, *fragments):
    """The exception's message is there, is one line, and holds every fragment: what a user
    reads of an error raised through the Python API. Returns the message."""
    message = str(exc)
    assert message and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def with_peak_memory(call):
    """(call's result, the most bytes Python and NumPy held at once while it ran)."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def small_train_config(folder, **settings):
    """A TrainConfig for a run of a few seconds: one epoch over 64 letters in batches of 16
    (no generated letters mixed in), validation on 16 images, seed 3, the checkpoint at
    folder/run.npz; settings override any of these. Test modules fix their own further
    defaults with functools.partial."""
    config = dict(epochs=1, limit=64, batch_size=16, validation_size=16, seed=3,
                  generated_share=0.0, out=str(folder / "run.npz"))
    config.update(settings)
    return TrainConfig(**config)


def bar_picture(path):
    """Save at path a 100x100 white picture holding one black upright bar (a single letter-like
    mark), and return path."""
    page = Image.new("L", (100, 100), 255)
    page.paste(0, (40, 10, 60, 90))
    page.save(path)
    return path


def untrained_checkpoint(folder):
    """A checkpoint of a freshly initialised ConvoAlphabetModel (seed 0)."""
    path = folder / "model.npz"
    save_checkpoint(path, ConvoAlphabetModel("numpy", seed=0), Preprocessing())
    return path


def no_emnist_env(root):
    """The environment changes under which no EMNIST files are found (data and cache folders
    under root that do not hold any) and no backend is chosen by the environment, so training
    uses generated letters on the default backend. None marks a variable to unset, as
    CliRunner reads it; set_env applies the changes to a monkeypatch."""
    return {"MICROCONV_DATA": str(root / "no-data"), "XDG_CACHE_HOME": str(root / "cache"),
            "MICROCONV_BACKEND": None}


def set_env(monkeypatch, env):
    """Apply env to monkeypatch: set each variable, unset those whose value is None."""
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture
def no_emnist(tmp_path, monkeypatch):
    """An environment in which no EMNIST files are found, so training uses generated letters."""
    set_env(monkeypatch, no_emnist_env(tmp_path))
