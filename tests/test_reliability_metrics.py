"""A metrics database is a file anyone can edit: every value ``report`` reads is checked first.

SQLite stores any value in any column, so a loss can be text, a config can be a number and a
confusion index can be 100,000 (a matrix of 10^10 cells). Hypothesis puts values of every
wrong type into every column of a real database; reading it back gives the run or one line.
"""

import shutil
import sqlite3

import numpy as np
import pytest
from clitools import assert_one_line_error, assert_one_line_exception, cli, with_peak_memory
from hypothesis import given, reject
from hypothesis import strategies as st

from microconv.errors import MicroconvError
from microconv.letters.metrics import MetricsDB, read_run
from microconv.letters.records import (
    BatchRecord,
    CheckpointRecord,
    FinalRecord,
    RunInfo,
    ValidationRecord,
)

COLUMNS = {
    "runs": ["config", "steps", "elapsed_s", "test_accuracy", "status", "parameters"],
    "batches": ["step", "epoch", "loss", "accuracy", "lr", "elapsed_s"],
    "validations": ["step", "loss", "accuracy", "most_confused"],
    "checkpoints": ["step", "path", "elapsed_s"],
    "warnings": ["message"],
    "evaluations": ["count", "loss", "accuracy", "per_class", "most_confused"],
    "confusion": ["true_index", "predicted_index", "count"],
}

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.binary(max_size=20),
    st.sampled_from(["{", "[1, 2", "null", "[]", "{}", "1e999", "NaN", '{"a": [1, {"b": 2}]}',
                     '[["A", "B", 3]]', '[[100000, 2, 3]]', '{"A": 7}', "[" * 5000 + "]" * 5000,
                     "100000", "-1", "9" * 400]))


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A database of one finished run: batches, validations, a checkpoint, a warning, the
    evaluation and its confusion matrix, as training writes them."""
    path = tmp_path_factory.mktemp("metrics") / "metrics.db"
    with MetricsDB(path) as db:
        db.on_start(RunInfo(backend="numpy", device="cpu", parameters=137178, train_size=64,
                            validation_size=16, test_size=26, dataset="generated letters",
                            config={"lr": 0.002, "seed": 3, "out": "run.npz"},
                            batches_per_epoch=4, total_batches=4))
        for step in range(1, 5):
            db.on_batch(BatchRecord(step, 1, step, 3.2 - step / 10, 0.1, 500.0, 0.002, step))
        db.on_validation(ValidationRecord(4, 1, 3.0, 0.2, 0.3, 0.2, 4.5,
                                          most_confused=((0, 1, 2),)))
        db.on_checkpoint(CheckpointRecord("run.npz", 4, 4.6))
        db.on_warning("a warning")
        confusion = np.eye(26, dtype=int) * 2
        confusion[0, 1] = 1
        db.on_end(FinalRecord(4, 1, 5.0, 0.9, 0.95, "run.npz", extra={
            "count": 53, "loss": 0.5, "accuracy": 0.9, "top2_accuracy": 0.95,
            "perturbed_accuracy": 0.8, "perturbed_top2_accuracy": 0.9, "time_to_target_s": None,
            "per_class": {chr(65 + i): 1.0 for i in range(26)}, "most_confused": [["A", "B", 1]],
            "confusion": confusion.tolist()}))
    return path


def edited(database, folder, table, column, value):
    path = folder / "edited.db"
    shutil.copyfile(database, path)
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = "
                   f"(SELECT min(rowid) FROM {table})", (value,))
    return path


def run_or_one_line(path):
    try:
        return read_run(path)
    except MicroconvError as exc:
        assert_one_line_exception(exc, str(path))
        return exc


def test_the_untouched_database_reads_back(database):
    run = read_run(database)
    assert run["run"]["config"]["seed"] == 3 and len(run["batches"]) == 4
    assert run["confusion"][0][1] == 1 and run["evaluation"]["per_class"]["Z"] == 1.0


@given(data=st.data())
def test_a_value_of_any_type_in_any_column(tmp_path_factory, database, data):
    table = data.draw(st.sampled_from(sorted(COLUMNS)))
    column = data.draw(st.sampled_from(COLUMNS[table]))
    value = data.draw(HOSTILE)
    try:
        path = edited(database, tmp_path_factory.mktemp("edit"), table, column, value)
    except sqlite3.IntegrityError:          # a NOT NULL column: SQLite itself refuses
        reject()
    answer, peak = with_peak_memory(lambda: run_or_one_line(path))
    assert peak < 50_000_000, (table, column, value, peak)
    if not isinstance(answer, MicroconvError):
        # Read back: every number is a number and the matrix is the size of the classes.
        assert len(answer["confusion"]) <= 62
        for row in answer["batches"]:
            assert all(v is None or type(v) in (int, float) for v in row.values())


@pytest.mark.parametrize("table, column, value, fragment", [
    ("runs", "config", "{not json", "runs row 1.config must be JSON text"),
    ("runs", "config", "[1, 2]", "runs row 1.config must be a record"),
    ("batches", "loss", "three", "batches row 1.loss must be a finite number"),
    ("batches", "step", 2.5, "batches row 2.step must be an integer >= 0, not 2.5"),
    ("confusion", "true_index", 100_000, "confusion row 1.true_index must be an integer in 0..61"),
    ("evaluations", "per_class", '{"A": "most"}', "per_class.A must be a finite number"),
    ("validations", "most_confused", '[["A"]]', "most_confused[0] must be a list of 3"),
])
def test_damaged_values_through_report(tmp_path, database, table, column, value, fragment):
    path = edited(database, tmp_path, table, column, value)
    result = cli("report", path, "--out", tmp_path / "charts")
    assert_one_line_error(result, str(path), "is damaged", fragment)
    assert not (tmp_path / "charts").exists()


def test_a_confusion_cell_outside_the_runs_classes(tmp_path, database):
    path = edited(database, tmp_path, "confusion", "predicted_index", 40)
    with pytest.raises(MicroconvError, match=r"confusion cell \(0, 40\) lies outside the 26"):
        read_run(path)
