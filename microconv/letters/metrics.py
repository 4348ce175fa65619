"""The metrics database: every training run in one SQLite file (standard library only).

``MetricsDB`` is a Reporter: attach it to ``training.train`` and it writes

* ``runs``        one row per run: start time, backend and device, dataset, the config as JSON,
                  and at the end the status, steps, time and test accuracy;
* ``batches``     one row per training batch (step, epoch, loss, accuracy, images/s, lr, time);
* ``validations`` one row per validation on the fixed subset;
* ``checkpoints`` one row per checkpoint written;
* ``evaluations`` the final test evaluation (accuracy, top-2, perturbed, per-letter JSON);
* ``confusion``   its confusion matrix, one row per non-zero (true, predicted) cell;
* ``warnings``    anything the loop warned about.

Never one row per parameter element (the seed's ``data`` table wrote 137k rows per snapshot).
Like the seed it uses WAL mode and commits at most about once a second while batches stream
in, plus at every validation, checkpoint and at the end, so a crash loses at most a second.
``read_run`` reads a run back for ``microconv report``; a database is a file anyone can edit,
so every row is checked against ``ROWS`` (SQLite stores any value in any column) and the
confusion matrix may only name classes that exist.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

from microconv.errors import MicroconvError
from microconv.letters import schema
from microconv.letters.data import DATASETS
from microconv.letters.records import Reporter

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT NOT NULL,
    backend TEXT, device TEXT, dataset TEXT, config TEXT,
    parameters INTEGER, train_size INTEGER, validation_size INTEGER, test_size INTEGER,
    batches_per_epoch INTEGER, total_batches INTEGER,
    status TEXT NOT NULL DEFAULT 'running',
    finished TEXT, steps INTEGER, epochs_completed INTEGER, elapsed_s REAL,
    test_accuracy REAL, test_top2_accuracy REAL, checkpoint TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS batches (
    run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER, epoch INTEGER, batch INTEGER,
    loss REAL, accuracy REAL, images_per_s REAL, lr REAL, elapsed_s REAL
);
CREATE TABLE IF NOT EXISTS validations (
    run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER, epoch INTEGER, loss REAL,
    accuracy REAL, top2_accuracy REAL, best_accuracy REAL, elapsed_s REAL, most_confused TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER, path TEXT, elapsed_s REAL
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id INTEGER NOT NULL REFERENCES runs(id), count INTEGER, loss REAL, accuracy REAL,
    top2_accuracy REAL, perturbed_accuracy REAL, perturbed_top2_accuracy REAL,
    time_to_target_s REAL, per_class TEXT, most_confused TEXT
);
CREATE TABLE IF NOT EXISTS confusion (
    run_id INTEGER NOT NULL REFERENCES runs(id), true_class TEXT, predicted_class TEXT,
    true_index INTEGER, predicted_index INTEGER, count INTEGER
);
CREATE TABLE IF NOT EXISTS warnings (
    run_id INTEGER NOT NULL REFERENCES runs(id), message TEXT, at TEXT
);
CREATE INDEX IF NOT EXISTS batches_by_run ON batches(run_id, step);
CREATE INDEX IF NOT EXISTS validations_by_run ON validations(run_id, step);
"""
COMMIT_EVERY_S = 1.0
MAX_CLASSES = max(len(d["classes"]) for d in DATASETS.values())


def _row_schemas():
    number = schema.optional(schema.number())
    count = schema.optional(schema.integer(0))
    text = schema.optional(schema.text(max_length=100_000))
    label = schema.one_of(schema.integer(0, MAX_CLASSES - 1), schema.text(max_length=100))
    pairs = schema.json_text(schema.listing(schema.listing(
        schema.one_of(label, schema.integer(0)), 3, 3), max_length=10_000))
    per_class = schema.json_text(schema.mapping(schema.optional(schema.number(0, 1)),
                                                max_keys=MAX_CLASSES))
    return {
        "runs": schema.record({
            "id": schema.integer(1), "config": schema.json_text(schema.mapping(schema.scalar)),
            **{name: count for name in ("parameters", "train_size", "validation_size",
                                        "test_size", "batches_per_epoch", "total_batches",
                                        "steps", "epochs_completed")},
            **{name: number for name in ("elapsed_s", "test_accuracy", "test_top2_accuracy")},
            **{name: text for name in ("started", "backend", "device", "dataset", "status",
                                       "finished", "checkpoint", "error")}}),
        "batches": schema.record({**{name: count for name in ("step", "epoch", "batch")},
                                  **{name: number for name in ("loss", "accuracy",
                                                               "images_per_s", "lr",
                                                               "elapsed_s")}}),
        "validations": schema.record({
            "step": count, "epoch": count, "most_confused": pairs,
            **{name: number for name in ("loss", "accuracy", "top2_accuracy", "best_accuracy",
                                         "elapsed_s")}}),
        "checkpoints": schema.record({"step": count, "path": text, "elapsed_s": number}),
        "warnings": schema.record({"message": text}),
        "evaluations": schema.record({
            "count": count, "per_class": per_class, "most_confused": pairs,
            **{name: number for name in ("loss", "accuracy", "top2_accuracy",
                                         "perturbed_accuracy", "perturbed_top2_accuracy",
                                         "time_to_target_s")}}),
        "confusion": schema.record({"true_index": schema.integer(0, MAX_CLASSES - 1),
                                    "predicted_index": schema.integer(0, MAX_CLASSES - 1),
                                    "count": schema.integer(0)}),
    }


# What each row read back may hold, column by column.
ROWS = _row_schemas()


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _connect(path, create):
    path = Path(path)
    if not create and not path.is_file():
        raise MicroconvError(f"metrics database {path} does not exist")
    try:
        db = sqlite3.connect(str(path))
        db.execute("PRAGMA journal_mode=WAL")
        if create:
            db.executescript(SCHEMA)
        else:
            db.execute("SELECT 1 FROM runs LIMIT 1")
    except sqlite3.Error as exc:
        raise MicroconvError(f"cannot use {path} as a metrics database: {exc}") from None
    return db


def _write_errors(method):
    """sqlite3 errors while writing (disk full, no permission, the file removed) become one
    clear MicroconvError: training stops and the last checkpoint stays as it was."""
    @functools.wraps(method)
    def guarded(self, *args):
        try:
            return method(self, *args)
        except sqlite3.Error as exc:
            raise MicroconvError(f"cannot write the metrics database {self.path}: {exc}") from None
    return guarded


class MetricsDB(Reporter):
    """A Reporter that stores a training run in SQLite; ``run_id`` is set by on_start."""

    def __init__(self, path):
        self.path = Path(path)
        self.db = _connect(self.path, create=True)
        self.run_id = None
        self._last_commit = time.monotonic()

    # --- Reporter ---------------------------------------------------------------------
    @_write_errors
    def on_start(self, info):
        cursor = self.db.execute(
            "INSERT INTO runs (started, backend, device, dataset, config, parameters, train_size,"
            " validation_size, test_size, batches_per_epoch, total_batches)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), info.backend, info.device, info.dataset, json.dumps(info.config),
             info.parameters, info.train_size, info.validation_size, info.test_size,
             info.batches_per_epoch, info.total_batches))
        self.run_id = cursor.lastrowid
        self._commit()

    @_write_errors
    def on_batch(self, r):
        self.db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.run_id, r.step, r.epoch, r.batch, r.loss, r.accuracy,
                         r.images_per_s, r.lr, r.elapsed_s))
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self._commit()

    @_write_errors
    def on_validation(self, r):
        self.db.execute("INSERT INTO validations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.run_id, r.step, r.epoch, r.loss, r.accuracy, r.top2_accuracy,
                         r.best_accuracy, r.elapsed_s, json.dumps([list(t) for t in
                                                                   r.most_confused])))
        self._commit()

    @_write_errors
    def on_checkpoint(self, r):
        self.db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?)",
                        (self.run_id, r.step, r.path, r.elapsed_s))
        self._commit()

    @_write_errors
    def on_warning(self, message):
        self.db.execute("INSERT INTO warnings VALUES (?, ?, ?)", (self.run_id, message, _now()))
        self._commit()

    @_write_errors
    def on_end(self, r):
        extra = r.extra or {}
        status = ("interrupted" if r.interrupted else "failed" if extra.get("error")
                  else "finished")
        self.db.execute(
            "UPDATE runs SET status = ?, finished = ?, steps = ?, epochs_completed = ?,"
            " elapsed_s = ?, test_accuracy = ?, test_top2_accuracy = ?, checkpoint = ?,"
            " error = ? WHERE id = ?",
            (status, _now(), r.steps, r.epochs_completed, r.elapsed_s, r.test_accuracy,
             r.test_top2_accuracy, r.checkpoint, extra.get("error"), self.run_id))
        if "confusion" in extra:
            self._write_evaluation(extra)
        self._commit()

    def _write_evaluation(self, result):
        self.db.execute("INSERT INTO evaluations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (self.run_id, result.get("count"), result.get("loss"),
                         result.get("accuracy"), result.get("top2_accuracy"),
                         result.get("perturbed_accuracy"), result.get("perturbed_top2_accuracy"),
                         result.get("time_to_target_s"), json.dumps(result.get("per_class")),
                         json.dumps(result.get("most_confused"))))
        names = list(result.get("per_class") or {})
        rows = [(self.run_id, names[t] if t < len(names) else str(t),
                 names[p] if p < len(names) else str(p), t, p, count)
                for t, row in enumerate(result["confusion"])
                for p, count in enumerate(row) if count]
        self.db.executemany("INSERT INTO confusion VALUES (?, ?, ?, ?, ?, ?)", rows)

    # --- housekeeping -------------------------------------------------------------------
    def _commit(self):
        self.db.commit()
        self._last_commit = time.monotonic()

    @_write_errors
    def close(self):
        if self.db is not None:
            db, self.db = self.db, None
            try:
                db.commit()
            finally:
                db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rows(db, sql, args=()):
    cursor = db.execute(sql, args)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def list_runs(path):
    """Every run in a metrics database, oldest first (without their batch rows)."""
    db = _connect(path, create=False)
    try:
        return _rows(db, "SELECT id, started, status, backend, dataset, steps, elapsed_s,"
                         " test_accuracy, test_top2_accuracy FROM runs ORDER BY id")
    finally:
        db.close()


def _checked(path, table, rows):
    """Rows of a table after checking every value; JSON columns come back parsed."""
    checker = ROWS[table]
    try:
        return [checker(row, f"{table} row {number}") for number, row in enumerate(rows, 1)]
    except schema.Invalid as exc:
        raise MicroconvError(f"metrics database {path} is damaged: {exc}") from None


def read_run(path, run_id=None):
    """One run (the latest when run_id is None) as a dict: run (with config parsed), batches,
    validations, checkpoints, warnings, evaluation (or None) and confusion (a matrix or None).
    Every value is checked first: a damaged or hand-edited database is one MicroconvError."""
    db = _connect(path, create=False)
    try:
        if run_id is None:
            found = db.execute("SELECT max(id) FROM runs").fetchone()[0]
            if found is None:
                raise MicroconvError(f"metrics database {path} holds no runs")
            run_id = found
        runs = _checked(path, "runs", _rows(db, "SELECT * FROM runs WHERE id = ?", (run_id,)))
        if not runs:
            raise MicroconvError(f"metrics database {path} has no run {run_id}")
        run = runs[0]
        run["config"] = run["config"] or {}
        batches = _checked(path, "batches", _rows(
            db, "SELECT step, epoch, batch, loss, accuracy, images_per_s, lr, elapsed_s"
                " FROM batches WHERE run_id = ? ORDER BY step", (run_id,)))
        validations = _checked(path, "validations", _rows(
            db, "SELECT step, epoch, loss, accuracy, top2_accuracy, best_accuracy, elapsed_s,"
                " most_confused FROM validations WHERE run_id = ? ORDER BY step", (run_id,)))
        for v in validations:
            v["most_confused"] = v["most_confused"] or []
        checkpoints = _checked(path, "checkpoints", _rows(
            db, "SELECT step, path, elapsed_s FROM checkpoints WHERE run_id = ? ORDER BY step",
            (run_id,)))
        warnings = [r["message"] for r in _checked(path, "warnings", _rows(
            db, "SELECT message FROM warnings WHERE run_id = ?", (run_id,)))]
        evaluations = _checked(path, "evaluations", _rows(
            db, "SELECT count, loss, accuracy, top2_accuracy, perturbed_accuracy,"
                " perturbed_top2_accuracy, time_to_target_s, per_class, most_confused"
                " FROM evaluations WHERE run_id = ?", (run_id,)))
        evaluation, confusion = None, None
        if evaluations:
            evaluation = evaluations[-1]
            evaluation["most_confused"] = evaluation["most_confused"] or []
            cells = _checked(path, "confusion", _rows(
                db, "SELECT true_index, predicted_index, count FROM confusion"
                    " WHERE run_id = ?", (run_id,)))
            size = len(evaluation["per_class"] or {}) or MAX_CLASSES
            outside = [c for c in cells if max(c["true_index"], c["predicted_index"]) >= size]
            if outside:
                raise MicroconvError(f"metrics database {path} is damaged: a confusion cell "
                                     f"({outside[0]['true_index']}, "
                                     f"{outside[0]['predicted_index']}) lies outside the "
                                     f"{size} classes of run {run_id}")
            size = max([len(evaluation["per_class"] or {})]
                       + [max(c["true_index"], c["predicted_index"]) + 1 for c in cells])
            confusion = [[0] * size for _ in range(size)]
            for c in cells:
                confusion[c["true_index"]][c["predicted_index"]] = c["count"]
        return {"run": run, "batches": batches, "validations": validations,
                "checkpoints": checkpoints, "warnings": warnings, "evaluation": evaluation,
                "confusion": confusion}
    except sqlite3.Error as exc:
        raise MicroconvError(f"cannot read {path}: {exc}") from None
    finally:
        db.close()
