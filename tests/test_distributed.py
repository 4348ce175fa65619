"""Data-parallel training over MPI: 2 ranks train exactly what 1 process trains, a rank that dies
or is interrupted stops the whole job with the last checkpoint intact, and that checkpoint
resumes with a different number of ranks.

The runs under mpirun skip, with the reason, where mpirun or mpi4py is missing; with
MICROCONV_REQUIRE_MPI=1 (CI installs both) they fail instead.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from clitools import assert_one_line_error, cli, no_emnist  # noqa: F401 - no_emnist is a fixture
from optional import REQUIRE_MPI, skip_unless_required

from microconv.errors import TrainingError
from microconv.letters.checkpoint import read_checkpoint
from microconv.letters import distributed, training
from microconv.letters.distributed import SingleProcess, rank_rows
from microconv.letters.metrics import read_run
from microconv.letters.model import ConvoAlphabetModel, LetterGraph
from microconv.letters.training import TrainConfig, TrainingInterrupted, resume_config, train


# 640 generated letters in global batches of 64: 10 steps an epoch, a checkpoint every 10.
# SGD, because Adam scales every step to about lr whatever the gradient's size, so a weight
# whose gradient is only float32 rounding noise moves by the noise's sign (docs/distributed.md).
RUN = dict(limit=640, batch_size=64, eval_every=10, validation_size=200, seed=3,
           optimizer="sgd", generated_share=0.0)      # the data alone: steps as written


def mpirun_or_skip():
    """The mpirun command with the options this machine needs, or a skip saying what is missing."""
    mpirun = shutil.which("mpirun")
    missing = ("mpirun (Debian: apt-get install openmpi-bin libopenmpi-dev)" if mpirun is None
               else "mpi4py (pip install 'microconv[mpi]')"
               if importlib.util.find_spec("mpi4py") is None else None)
    if missing:
        skip_unless_required(REQUIRE_MPI, f"data-parallel runs need {missing}")
    command = [mpirun]
    if "Open MPI" in subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout:
        # More ranks than cores are fine for a test (a 2-core machine has 2 slots).
        command.append("--oversubscribe")
    return command


@pytest.fixture
def mpi_env(request, monkeypatch):
    """The environment for mpirun: generated letters; Open MPI refuses root unless told."""
    request.getfixturevalue("no_emnist")
    if os.geteuid() == 0:
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
        monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return dict(os.environ)


@pytest.fixture
def start_job(mpi_env):
    """Starts an mpirun job (output and errors together); a job still running when the test
    ends is stopped with SIGTERM, on which mpirun stops its ranks (after a SIGKILL they would
    go on running)."""
    jobs = []

    def start(command):
        jobs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=mpi_env))
        return jobs[-1]

    yield start
    for job in jobs:
        if job.poll() is None:
            job.terminate()
            job.communicate(timeout=60)


def ended(job, timeout):
    """The exit code and output of a job that ends by itself within ``timeout`` seconds."""
    try:
        output = job.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job was still running after {timeout} s")
    return job.returncode, output


def train_command(ranks, folder, name, **settings):
    """``mpirun -n ranks microconv train`` with RUN's settings; every rank writes its process id
    to folder/rank-R.pid first, so a test can stop one of them."""
    options = []
    for key, value in {**RUN, **settings}.items():
        options += [f"--{key.replace('_', '-')}", str(value)]
    program = ("import os; rank = os.environ.get('OMPI_COMM_WORLD_RANK') "
               "or os.environ['PMI_RANK']; "
               f"open(os.path.join({str(folder)!r}, 'rank-' + rank + '.pid'), 'w')"
               ".write(str(os.getpid())); from microconv.cli import main; main()")
    return [*mpirun_or_skip(), "-n", str(ranks), sys.executable, "-c", program, "train",
            "--no-dashboard", "--out", str(folder / f"{name}.npz"), *options]


def one_process(folder, name, **settings):
    """The same run in this process (one rank); returns its checkpoint path."""
    out = folder / f"{name}.npz"
    train(TrainConfig(out=str(out), **{**RUN, **settings}))
    return out


def assert_same_parameters(path_a, path_b):
    header_a, params_a, _ = read_checkpoint(path_a)
    header_b, params_b, _ = read_checkpoint(path_b)
    assert header_a["progress"]["step"] == header_b["progress"]["step"]
    for name in params_a:
        # float32: the slices' gradients are summed in another order than one batch's
        np.testing.assert_allclose(params_b[name], params_a[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_two_ranks_train_what_one_process_trains(tmp_path, start_job):
    """Global batch 64 over 2 ranks (32 images each) for 20 steps, with augmentation and
    dropout: the same parameters as one process with batch 64, the same validation curve,
    and only rank 0 reports."""
    settings = dict(epochs=2, dropout=0.25)
    command = train_command(2, tmp_path, "two", metrics=tmp_path / "two.sqlite3", **settings)
    code, output = ended(start_job(command), timeout=300)
    assert code == 0, output[-2000:]
    assert output.count("training on numpy") == 1, output       # rank 0 alone reports

    one_process(tmp_path, "one", metrics=str(tmp_path / "one.sqlite3"), **settings)
    assert_same_parameters(tmp_path / "one.npz", tmp_path / "two.npz")
    curve_one = read_run(tmp_path / "one.sqlite3")["validations"]
    curve_two = read_run(tmp_path / "two.sqlite3")["validations"]
    assert [v["step"] for v in curve_two] == [v["step"] for v in curve_one] == [10, 20]
    for mine, theirs in zip(curve_two, curve_one):
        assert mine["accuracy"] == theirs["accuracy"]
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-4)


def start_and_wait_for_checkpoint(tmp_path, start_job):
    """A long 2-rank run, once its first checkpoint is on disk; returns it and the pids."""
    job = start_job(train_command(2, tmp_path, "run", epochs=50, schedule="constant"))
    deadline = time.monotonic() + 240
    checkpoint = tmp_path / "run.npz"
    while not checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no checkpoint: " + (job.stdout.read()[-2000:]
                                                     if job.poll() is not None else "timed out")
    pids = {rank: int((tmp_path / f"rank-{rank}.pid").read_text()) for rank in (0, 1)}
    return job, pids


def assert_stops_with_last_checkpoint(job, tmp_path):
    """The job ends on its own (every rank), and its checkpoint is whole: a validation's, or
    one rank 0 wrote as it was stopped."""
    code, output = ended(job, timeout=60)
    header, params, _ = read_checkpoint(tmp_path / "run.npz")
    step = header["progress"]["step"]
    assert 10 <= step < 500, step
    assert all(np.isfinite(value).all() for value in params.values())
    return code, output, step


def test_a_killed_rank_stops_the_job_and_the_checkpoint_resumes_on_one_process(tmp_path,
                                                                            start_job):
    job, pids = start_and_wait_for_checkpoint(tmp_path, start_job)
    os.kill(pids[1], signal.SIGKILL)
    code, output, step = assert_stops_with_last_checkpoint(job, tmp_path)
    assert code != 0
    assert "rank 1" in output, output[-2000:]           # mpirun names the rank that died

    # --resume with another number of ranks: one process continues the 2-rank checkpoint
    # and lands where an uninterrupted one-process run does.
    epochs = step // 10 + 1
    train(resume_config(tmp_path / "run.npz", epochs=epochs, out=str(tmp_path / "resumed.npz")))
    reference = one_process(tmp_path, "reference", epochs=epochs, schedule="constant")
    assert_same_parameters(reference, tmp_path / "resumed.npz")


def test_ctrl_c_on_one_rank_stops_every_rank(tmp_path, start_job):
    """Rank 1 is interrupted: it says so in one line and aborts the job (exit 130); rank 0
    goes down with it, and the checkpoint on disk is whole."""
    job, pids = start_and_wait_for_checkpoint(tmp_path, start_job)
    os.kill(pids[1], signal.SIGINT)
    code, output, _ = assert_stops_with_last_checkpoint(job, tmp_path)
    assert code == 130, output[-2000:]
    assert "rank 1 interrupted at step" in output and "rank 0 keeps the checkpoint" in output
    assert "Traceback" not in output


def test_a_failure_on_rank_0_alone_stops_the_job(tmp_path, start_job):
    """Only rank 0 opens the metrics database; when that fails, rank 1 (already waiting for
    rank 0's parameters) must not wait forever."""
    notes = b"not a database, " * 256
    (tmp_path / "notes.db").write_bytes(notes)
    command = train_command(2, tmp_path, "run", epochs=1, metrics=tmp_path / "notes.db")
    code, output = ended(start_job(command), timeout=120)
    assert code == 1, output[-2000:]
    assert "error: cannot use" in output and "as a metrics database" in output
    assert not (tmp_path / "run.npz").exists()
    assert (tmp_path / "notes.db").read_bytes() == notes


def test_mpirun_without_mpi4py_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")           # as mpirun -n 2 sets it
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py fails
    result = cli("train", "--limit", "64", "--out", tmp_path / "run.npz")
    assert_one_line_error(result, "mpirun", "pip install 'microconv[mpi]'")
    assert not (tmp_path / "run.npz").exists()


def test_every_rank_takes_an_equal_slice_of_the_batch():
    rows = [rank_rows(64, rank, 4) for rank in range(4)]
    assert [(r.start, r.stop) for r in rows] == [(0, 16), (16, 32), (32, 48), (48, 64)]
    with pytest.raises(TrainingError, match="batch size 64 does not split evenly over 3 ranks"):
        rank_rows(64, 0, 3)


def test_a_ranks_dropout_masks_are_its_rows_of_the_whole_batchs():
    """Rank 1 of 2 computes rows 4-7 of a batch of 8 with the masks the whole batch would get,
    so its log-probabilities are those rows of one process's."""
    images = np.random.default_rng(0).random((8, 1, 28, 28)).astype(np.float32)
    outputs = []
    for rows in (slice(0, 8), slice(4, 8)):
        model = ConvoAlphabetModel("numpy", seed=1, dropout=0.5)
        graph = LetterGraph(model, rows.stop - rows.start, train=True)
        graph.feed(images[rows])
        model.drop.resample(np.random.default_rng(7), rows, 8)
        outputs.append(graph.log_probs.numpy())
    np.testing.assert_allclose(outputs[1], outputs[0][4:], rtol=1e-5, atol=1e-6)


class CountingWorld(SingleProcess):
    """One process that records the collective calls a run makes; ``late_at``: the step at
    which another rank's clock passes the time limit."""

    def __init__(self, late_at=None):
        self.calls = []
        self.late_at = late_at

    def average_gradients(self, params, *numbers):
        self.calls.append("allreduce")
        loss, accuracy, late = numbers
        if self.calls.count("allreduce") == self.late_at:
            late = (late + 1.0) / 2                 # the mean of this rank's flag and the other's
        return loss, accuracy, late

    def any(self, flag):
        self.calls.append("any")
        return flag


@pytest.mark.usefixtures("no_emnist")
def test_a_time_limit_adds_no_collective_call_to_a_step(tmp_path):
    """Under --max-minutes every rank must stop after the same step: whether a rank's clock
    has run out rides in the step's one Allreduce, with the gradients."""
    settings = dict(RUN, limit=320, batch_size=32, validation_size=32, epochs=1,
                    max_minutes=10.0)
    world = CountingWorld()
    final = train(TrainConfig(**settings, out=str(tmp_path / "run.npz")), world=world)
    assert final.steps == 10
    assert world.calls == ["any"] + ["allreduce"] * 10     # "any": once, before the first step

    # Another rank's clock runs out during step 6: this rank stops after it too.
    late = train(TrainConfig(**settings, out=str(tmp_path / "late.npz")),
                 world=CountingWorld(late_at=6))
    assert late.steps == 6
    assert read_checkpoint(tmp_path / "late.npz")[0]["progress"]["step"] == 6


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_rank_exits_with_the_code_rank_0_gives(tmp_path, monkeypatch, number,
                                                              code):
    """A stopped job's ranks all end with the shell's code for the signal that stopped them
    (rank 0's: tests/test_reliability_training.py)."""
    class RankOne(SingleProcess):
        rank, is_root = 1, False

    def interrupted(config, reporter=None, world=None):
        raise TrainingInterrupted(None, 7, number)

    monkeypatch.setattr(distributed, "world", RankOne)
    monkeypatch.setattr(training, "train", interrupted)
    result = cli("train", "--limit", "64", "--out", tmp_path / "run.npz")
    assert_one_line_error(result, "rank 1 interrupted at step 7", code=code)
