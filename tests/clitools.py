"""Running the command line the way a user does, and checking how it fails."""

import pytest
from typer.testing import CliRunner

from microconv.cli import app
from microconv.checkpoint import save_checkpoint
from microconv.nn import ConvoAlphabetModel
from microconv.preprocess import Preprocessing


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


def untrained_checkpoint(folder):
    """A checkpoint of a freshly initialised ConvoAlphabetModel (seed 0)."""
    path = folder / "model.npz"
    save_checkpoint(path, ConvoAlphabetModel("numpy", seed=0), Preprocessing())
    return path


@pytest.fixture
def no_emnist(tmp_path, monkeypatch):
    """An environment in which no EMNIST files are found, so training uses generated letters."""
    monkeypatch.setenv("MICROCONV_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MICROCONV_BACKEND", raising=False)
