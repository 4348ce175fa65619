"""The metrics database: one row per batch and validation, the final evaluation, read back."""

import sqlite3

import numpy as np
import pytest

from microconv.errors import MicroconvError
from microconv.letters.metrics import MetricsDB, list_runs, read_run
from microconv.letters.records import (
    BatchRecord,
    CheckpointRecord,
    FinalRecord,
    RunInfo,
    ValidationRecord,
)


def info(dataset="generated letters"):
    return RunInfo(backend="numpy", device="NumPy on 2 cores", parameters=137178,
                   train_size=640, validation_size=100, test_size=260, dataset=dataset,
                   config={"lr": 0.002, "optimizer": "adam"}, batches_per_epoch=10,
                   total_batches=20)


def evaluation():
    confusion = np.zeros((26, 26), int)
    confusion[np.arange(26), np.arange(26)] = 9
    confusion[6, 16] = 1                                   # one G read as Q
    per_class = {chr(65 + i): 0.9 if i == 6 else 1.0 for i in range(26)}
    return {"count": 235, "loss": 0.1, "accuracy": 0.99, "top2_accuracy": 1.0,
            "perturbed_accuracy": 0.9, "perturbed_top2_accuracy": 0.95, "per_class": per_class,
            "confusion": confusion.tolist(), "most_confused": [["G", "Q", 1]],
            "time_to_target_s": 12.5}


def fill(db, steps=20, final=True):
    db.on_start(info())
    for step in range(1, steps + 1):
        db.on_batch(BatchRecord(step=step, epoch=1 + (step - 1) // 10, batch=1 + (step - 1) % 10,
                                loss=3.0 / step, accuracy=step / 20, images_per_s=700.0,
                                lr=0.002, elapsed_s=step * 0.1))
        if step % 10 == 0:
            db.on_validation(ValidationRecord(step=step, epoch=step // 10, loss=1.0,
                                              accuracy=0.5, top2_accuracy=0.7,
                                              best_accuracy=0.5, elapsed_s=step * 0.1,
                                              most_confused=((6, 16, 3),)))
            db.on_checkpoint(CheckpointRecord(path="run.npz", step=step, elapsed_s=step * 0.1))
    db.on_warning("slow disk")
    if final:
        db.on_end(FinalRecord(steps=steps, epochs_completed=2, elapsed_s=2.0,
                              test_accuracy=0.99, test_top2_accuracy=1.0, checkpoint="run.npz",
                              extra=evaluation()))


def test_a_run_is_written_and_read_back(tmp_path):
    path = tmp_path / "metrics.sqlite3"
    with MetricsDB(path) as db:
        fill(db)
    run = read_run(path)
    assert run["run"]["status"] == "finished" and run["run"]["backend"] == "numpy"
    assert run["run"]["config"] == {"lr": 0.002, "optimizer": "adam"}
    assert run["run"]["test_accuracy"] == 0.99
    assert [b["step"] for b in run["batches"]] == list(range(1, 21))
    assert run["batches"][1]["loss"] == pytest.approx(1.5)
    assert [v["step"] for v in run["validations"]] == [10, 20]
    assert run["validations"][0]["most_confused"] == [[6, 16, 3]]
    assert [c["step"] for c in run["checkpoints"]] == [10, 20]
    assert run["warnings"] == ["slow disk"]
    assert run["evaluation"]["perturbed_accuracy"] == 0.9
    assert run["evaluation"]["per_class"]["G"] == 0.9
    assert run["confusion"] == evaluation()["confusion"]
    # Confusion cells are stored sparsely: 26 diagonal cells and one mistake.
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT count(*) FROM confusion").fetchone()[0] == 27
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "data" not in tables                     # never one row per parameter element


def test_several_runs_and_an_interrupted_one(tmp_path):
    path = tmp_path / "metrics.sqlite3"
    with MetricsDB(path) as db:
        fill(db, steps=10)
    with MetricsDB(path) as db:
        fill(db, steps=5, final=False)
        db.on_end(FinalRecord(steps=5, epochs_completed=0, elapsed_s=0.5, test_accuracy=None,
                              test_top2_accuracy=None, checkpoint="run.npz", interrupted=True))
    runs = list_runs(path)
    assert [r["status"] for r in runs] == ["finished", "interrupted"]
    latest = read_run(path)
    assert latest["run"]["id"] == runs[1]["id"] and latest["evaluation"] is None
    assert len(read_run(path, runs[0]["id"])["batches"]) == 10
    with pytest.raises(MicroconvError, match="no run 99"):
        read_run(path, 99)


def test_unreadable_databases(tmp_path):
    with pytest.raises(MicroconvError, match="does not exist"):
        read_run(tmp_path / "missing.sqlite3")
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(MicroconvError, match="cannot use"):
        read_run(junk)
    empty = tmp_path / "empty.sqlite3"
    MetricsDB(empty).close()
    with pytest.raises(MicroconvError, match="holds no runs"):
        read_run(empty)
