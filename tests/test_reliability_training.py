"""Faults during training: non-finite values, Ctrl-C at any moment, resuming after it.

test_training.py covers a poisoned parameter and interrupt/resume through the Python API;
here the faults come the way users meet them (a learning rate that explodes, Ctrl-C during
validation or the final evaluation, a disk that is full when Ctrl-C wants to save) and the
command line is checked end to end.
"""

import errno
import functools
import os
import re
import signal
import warnings

import numpy as np
import pytest
from clitools import (  # noqa: F401 - no_emnist is a fixture
    assert_one_line_error,
    cli,
    no_emnist,
    small_train_config,
)

from microconv.cli.app import EXIT_INTERRUPTED
from microconv.cli.dashboard import LineReporter
from microconv.errors import TrainingError
from microconv.letters import training
from microconv.letters.checkpoint import read_checkpoint
from microconv.letters.records import Reporter
from microconv.letters.training import TrainingInterrupted, train

REAL_SAVEZ = np.savez
EXPLODED = r"at step (\d+) \(first non-finite gradient: (c[123]|fc[123])\.(weight|bias)\)"


pytestmark = pytest.mark.usefixtures("no_emnist")


SMALL = ("--limit", 64, "--batch-size", 16, "--validation-size", 16, "--generated-share", 0,
         "--no-dashboard")


small = functools.partial(small_train_config, eval_every=1)


class Snapshots(Reporter):
    """Keeps the bytes of every checkpoint as it is written, and the final record."""

    def __init__(self, out, on_batch=None, on_validation=None):
        self.out, self.saved, self.final = out, {}, None
        self.batch_hook, self.validation_hook = on_batch, on_validation

    def on_checkpoint(self, record):
        self.saved[record.step] = self.out.read_bytes()

    def on_batch(self, record):
        if self.batch_hook:
            self.batch_hook(record)

    def on_validation(self, record):
        if self.validation_hook:
            self.validation_hook(record)

    def on_end(self, record):
        self.final = record


# --- non-finite loss or gradients -----------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_exploding_learning_rate_stops_with_the_step_and_the_layer(tmp_path, optimizer):
    out = tmp_path / "run.npz"
    reporter = Snapshots(out)
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        with pytest.raises(TrainingError, match=EXPLODED) as caught:
            train(small(tmp_path, optimizer=optimizer, lr=1e30, schedule="constant"), reporter)
    assert not [w for w in caught_warnings if issubclass(w.category, RuntimeWarning)]
    message = str(caught.value)
    step = int(re.search(EXPLODED, message).group(1))
    assert "\n" not in message and str(out) in message and "last good checkpoint" in message
    # The checkpoint is the one from the last step whose parameters were still finite.
    last = max(reporter.saved)
    assert last == step - 1
    assert out.read_bytes() == reporter.saved[last]
    header, params, _ = read_checkpoint(out)
    assert header["progress"]["step"] == last
    assert all(np.isfinite(value).all() for value in params.values())
    assert reporter.final.extra["error"] == message


def test_an_exploding_run_through_the_cli(tmp_path):
    out = tmp_path / "run.npz"
    result = cli("train", *SMALL, "--epochs", 1, "--eval-every", 1, "--optimizer", "sgd",
                 "--lr", "1e30", "--out", out)
    message = assert_one_line_error(result, "stopped being finite", "first non-finite gradient",
                                    "keeps the last good checkpoint")
    assert "RuntimeWarning" not in result.output
    step = int(re.search(EXPLODED, message).group(1))
    assert read_checkpoint(out)[0]["progress"]["step"] == step - 1
    assert f"stopped after {step - 1} steps" in result.stdout


# --- Ctrl-C ---------------------------------------------------------------------------------------

def interrupt():
    raise KeyboardInterrupt


def test_ctrl_c_during_validation_saves(tmp_path):
    reporter = Snapshots(tmp_path / "run.npz",
                         on_validation=lambda r: r.step == 2 and interrupt())
    with pytest.raises(TrainingInterrupted) as caught:
        train(small(tmp_path), reporter)
    assert caught.value.step == 2 and reporter.final.interrupted
    assert read_checkpoint(tmp_path / "run.npz")[0]["progress"]["step"] == 2


def test_ctrl_c_during_the_final_evaluation_saves(tmp_path, monkeypatch):
    def evaluation_interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "evaluate", evaluation_interrupted)
    result = cli("train", *SMALL, "--epochs", 1, "--eval-every", 100,
                 "--out", tmp_path / "run.npz")
    assert_one_line_error(result, "interrupted at step 4", "checkpoint saved to",
                          code=EXIT_INTERRUPTED)
    assert read_checkpoint(tmp_path / "run.npz")[0]["progress"]["step"] == 4


def test_ctrl_c_when_the_disk_is_full_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run.npz"
    assert cli("train", *SMALL, "--epochs", 1, "--eval-every", 2, "--out", out).exit_code == 0
    calls = []

    def full_after_first_save(file, **arrays):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_SAVEZ(file, **arrays)

    def interrupt_at_step_three(self, record):
        if record.step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", full_after_first_save)
    monkeypatch.setattr(LineReporter, "on_batch", interrupt_at_step_three)
    result = cli("train", *SMALL, "--epochs", 1, "--eval-every", 2, "--out", out)
    assert_one_line_error(result, "interrupted at step 3", "could not be saved",
                          code=EXIT_INTERRUPTED)
    assert "No space left on device" in result.stdout      # the reporter's warning
    assert read_checkpoint(out)[0]["progress"]["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    options = (*SMALL, "--epochs", 2, "--eval-every", 3, "--dropout", 0.25, "--seed", 5)
    whole = tmp_path / "whole.npz"
    assert cli("train", *options, "--out", whole).exit_code == 0

    def interrupt_at_step_five(self, record):     # in the middle of the second epoch
        if record.step == 5:
            raise KeyboardInterrupt

    part = tmp_path / "part.npz"
    with monkeypatch.context() as patch:
        patch.setattr(LineReporter, "on_batch", interrupt_at_step_five)
        stopped = cli("train", *options, "--out", part)
    assert_one_line_error(stopped, "interrupted at step 5", str(part), code=EXIT_INTERRUPTED)
    resumed = cli("train", "--resume", part, "--no-dashboard")
    assert resumed.exit_code == 0, resumed.output
    assert "step 6/8" in resumed.stdout and "step 5/8" not in resumed.stdout

    expected_header, expected, expected_optim = read_checkpoint(whole)
    got_header, got, got_optim = read_checkpoint(part)
    assert got_header["progress"]["step"] == expected_header["progress"]["step"] == 8
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in expected_optim:
        np.testing.assert_array_equal(got_optim[name], expected_optim[name], err_msg=name)
    for key in ("loss", "accuracy", "perturbed_accuracy"):
        assert got_header["metrics"]["test"][key] == expected_header["metrics"]["test"][key]


# --- an interrupt lands between two steps; SIGTERM and SIGHUP are Ctrl-C -----------------------

def signal_inside_the_update(monkeypatch, at_step, number=signal.SIGINT):
    """A real signal arrives while the optimiser is half way through updating the parameters
    of step ``at_step`` (after the first parameter, before the rest)."""
    from microconv.engine.optim import Adam
    real_update = Adam._update

    def update(self, p, state):
        real_update(self, p, state)
        if self.steps == at_step and p is self.params[0][1]:
            os.kill(os.getpid(), number)

    monkeypatch.setattr(Adam, "_update", update)


def test_ctrl_c_inside_the_optimiser_update_saves_a_whole_step(tmp_path, monkeypatch):
    options = ("--limit", 32, "--batch-size", 16, "--validation-size", 16, "--no-dashboard",
               "--epochs", 2, "--eval-every", 3, "--seed", 7)
    whole = tmp_path / "whole.npz"
    assert cli("train", *options, "--out", whole).exit_code == 0
    part = tmp_path / "part.npz"
    with monkeypatch.context() as patch:
        signal_inside_the_update(patch, at_step=3)
        stopped = cli("train", *options, "--out", part)
    assert_one_line_error(stopped, "interrupted at step 3", code=EXIT_INTERRUPTED)
    header, _, optim = read_checkpoint(part)
    assert header["progress"]["step"] == header["optimizer_steps"] == 3
    assert cli("train", "--resume", part, "--no-dashboard").exit_code == 0
    expected, got = read_checkpoint(whole), read_checkpoint(part)
    assert got[0]["optimizer_steps"] == expected[0]["optimizer_steps"] == 4
    for name in expected[1]:
        np.testing.assert_array_equal(got[1][name], expected[1][name], err_msg=name)


@pytest.mark.parametrize("number, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_save_and_end_the_run_like_ctrl_c(tmp_path, monkeypatch, number, code):
    import sqlite3
    out, database = tmp_path / "run.npz", tmp_path / "metrics.db"

    def signal_at_step_three(self, record):
        if record.step == 3:
            os.kill(os.getpid(), number)

    monkeypatch.setattr(LineReporter, "on_batch", signal_at_step_three)
    handler = signal.getsignal(number)
    result = cli("train", *SMALL, "--epochs", 1, "--eval-every", 100, "--out", out,
                 "--metrics", database)
    name = signal.Signals(number).name
    assert_one_line_error(result, f"training interrupted by {name} at step 3",
                          f"checkpoint saved to {out}", code=code)
    assert read_checkpoint(out)[0]["progress"]["step"] == 3
    status, steps = sqlite3.connect(database).execute(
        "SELECT status, steps FROM runs").fetchone()
    assert (status, steps) == ("interrupted", 3)
    assert signal.getsignal(number) == handler           # the run put back what it found


def test_a_second_ctrl_c_does_not_stop_the_save(tmp_path, monkeypatch):
    out = tmp_path / "run.npz"
    real_save = training._Run.save

    def save_interrupted_again(self, *args):
        os.kill(os.getpid(), signal.SIGINT)        # Ctrl-C pressed again while saving
        return real_save(self, *args)

    def interrupt_at_step_two(record):
        if record.step == 2:
            monkeypatch.setattr(training._Run, "save", save_interrupted_again)
            raise KeyboardInterrupt

    reporter = Snapshots(out, on_batch=interrupt_at_step_two)
    with pytest.raises(TrainingInterrupted) as caught:
        train(small(tmp_path, eval_every=100), reporter)
    assert caught.value.path == str(out) and reporter.final.interrupted
    assert read_checkpoint(out)[0]["progress"]["step"] == 2
