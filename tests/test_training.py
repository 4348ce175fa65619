"""The training loop: it learns, reports, checkpoints, resumes exactly and fails cleanly."""

import functools

import numpy as np
import pytest
from clitools import no_emnist, small_train_config, untrained_checkpoint  # noqa: F401 - a fixture

from microconv.errors import DataError, TrainingError
from microconv.letters import training
from microconv.letters.checkpoint import load_checkpoint, read_checkpoint
from microconv.letters.records import Reporter
from microconv.letters.training import TrainConfig, TrainingInterrupted, train

# Tests train on generated letters, whatever is installed on this machine.
pytestmark = pytest.mark.usefixtures("no_emnist")


class Recorder(Reporter):
    def __init__(self, on_batch=None):
        self.events = []
        self.batches = []
        self.validations = []
        self.warnings = []
        self.hook = on_batch

    def on_start(self, info):
        self.events.append("start")
        self.info = info

    def on_batch(self, record):
        self.batches.append(record)
        if self.hook:
            self.hook(record)

    def on_validation(self, record):
        self.validations.append(record)

    def on_checkpoint(self, record):
        self.events.append(("checkpoint", record.step))

    def on_warning(self, message):
        self.warnings.append(message)

    def on_end(self, record):
        self.events.append("end")
        self.final = record


small = functools.partial(small_train_config, epochs=2, eval_every=3, validation_size=20, seed=7)


def test_short_run_lowers_the_loss_and_reports_everything(tmp_path):
    recorder = Recorder()
    final = train(small(tmp_path, epochs=6, lr=3e-3, schedule="constant", augment=False),
                  recorder)
    assert "generated letters" in recorder.info.dataset
    assert recorder.info.train_size == 64 and recorder.info.batches_per_epoch == 4
    assert recorder.info.total_batches == 24 and recorder.info.validation_size == 20
    losses = [b.loss for b in recorder.batches]
    assert [b.step for b in recorder.batches] == list(range(1, 25))
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.3
    assert [v.step for v in recorder.validations] == [3, 6, 9, 12, 15, 18, 21, 24]
    v = recorder.validations[-1]
    assert v.sample_image.shape == (28, 28) and len(v.sample_top3) == 3
    assert recorder.events[0] == "start" and recorder.events[-1] == "end"
    assert final.steps == 24 and final.epochs_completed == 6
    assert final.test_accuracy == final.extra["accuracy"]
    assert set(final.extra) >= {"top2_accuracy", "perturbed_accuracy", "confusion"}
    header, params, optim = read_checkpoint(tmp_path / "run.npz")
    assert header["progress"]["step"] == 24
    assert header["optimizer"]["name"] == "adam" and optim
    assert header["metrics"]["test"]["accuracy"] == final.test_accuracy
    classifier = load_checkpoint(tmp_path / "run.npz")
    assert classifier.predict(np.zeros((2, 28, 28), np.uint8)).shape == (2, 26)


def test_same_seed_same_run(tmp_path):
    a = train(small(tmp_path / "a", epochs=1))
    b = train(small(tmp_path / "b", epochs=1))
    assert a.extra["confusion"] == b.extra["confusion"]
    _, pa, _ = read_checkpoint(tmp_path / "a" / "run.npz")
    _, pb, _ = read_checkpoint(tmp_path / "b" / "run.npz")
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name])


@pytest.mark.parametrize("optimizer, recipe, stop_at", [
    ("adam", {}, 5), ("sgd", {}, 5),             # in the second epoch
    # generated rows in every batch, augmentation growing over the first epoch, a warm-up;
    # stopped after the first epoch's last step
    ("adam", dict(generated_share=0.25, augment_ramp=1.0, warmup=3), 4)])
def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, optimizer, recipe,
                                                           stop_at):
    settings = dict(optimizer=optimizer, dropout=0.25, epochs=2, eval_every=100, **recipe)
    train(small(tmp_path / "whole", **settings))

    def stop(record):
        if record.step == stop_at:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted) as caught:
        train(small(part, **settings), Recorder(stop))
    assert caught.value.path == str(part / "run.npz") and caught.value.step == stop_at
    assert read_checkpoint(part / "run.npz")[0]["progress"]["step"] == stop_at
    recorder = Recorder()
    train(small(part, resume=str(part / "run.npz"), **settings), recorder)
    assert [(b.step, b.epoch, b.batch) for b in recorder.batches] == [
        (step, 2, step - 4) for step in range(stop_at + 1, 9)]
    _, expected, expected_optim = read_checkpoint(tmp_path / "whole" / "run.npz")
    _, got, got_optim = read_checkpoint(part / "run.npz")
    assert set(got_optim) == set(expected_optim) and expected_optim
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in expected_optim:
        np.testing.assert_array_equal(got_optim[name], expected_optim[name], err_msg=name)


def test_preparing_batches_ahead_changes_no_number(tmp_path):
    """The next batch is augmented on a background thread while a step runs: the run's losses,
    accuracies and final weights are those of preparing every batch in its turn."""
    settings = dict(epochs=2, generated_share=0.25, augment_ramp=1.0, warmup=3, dropout=0.25)
    runs = {}
    for ahead in (True, False):
        recorder = Recorder()
        train(small(tmp_path / str(ahead), **settings), recorder, prepare_ahead=ahead)
        runs[ahead] = [(b.step, b.loss, b.accuracy) for b in recorder.batches]
    assert runs[True] == runs[False] and len(runs[True]) == 8
    _, ahead, _ = read_checkpoint(tmp_path / "True" / "run.npz")
    _, in_turn, _ = read_checkpoint(tmp_path / "False" / "run.npz")
    for name in ahead:
        np.testing.assert_array_equal(ahead[name], in_turn[name], err_msg=name)


def test_a_failure_preparing_a_batch_ahead_stops_the_run_with_its_own_error(tmp_path,
                                                                            monkeypatch):
    calls = []

    def failing(images, *args):
        calls.append(len(images))
        if len(calls) == 6:            # the batch of step 6, prepared while step 5 runs
            raise DataError("augment: no ink left")
        return images.copy()

    monkeypatch.setattr(training, "augment", failing)
    recorder = Recorder()
    with pytest.raises(DataError, match="no ink left"):
        train(small(tmp_path, epochs=2, eval_every=2), recorder)
    assert [b.step for b in recorder.batches] == [1, 2, 3, 4, 5]
    assert recorder.final.extra["error"] == "augment: no ink left"
    assert read_checkpoint(tmp_path / "run.npz")[0]["progress"]["step"] == 4


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    models = []

    class Captured(training.ConvoAlphabetModel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            models.append(self)

    monkeypatch.setattr(training, "ConvoAlphabetModel", Captured)

    def poison(record):
        if record.step == 3:
            weight = models[0].fc2.weight
            weight._value[...] = np.inf          # what an exploding update would leave behind
            weight.mark_changed()

    recorder = Recorder(poison)
    with pytest.raises(TrainingError, match=r"step 4 .*first non-finite gradient"):
        train(small(tmp_path, eval_every=2), recorder)
    assert recorder.final.extra["error"]
    header, params, _ = read_checkpoint(tmp_path / "run.npz")
    assert header["progress"]["step"] == 2
    assert all(np.isfinite(v).all() for v in params.values())


def test_bad_settings_and_resume_mismatch(tmp_path):
    with pytest.raises(TrainingError, match="optimizer must be one of"):
        train(small(tmp_path, optimizer="rmsprop"))
    with pytest.raises(TrainingError, match="fewer than one batch"):
        train(small(tmp_path, limit=10))
    train(small(tmp_path, epochs=1))
    with pytest.raises(training.CheckpointError, match="optimizer 'adam'"):
        train(small(tmp_path, optimizer="sgd", resume=str(tmp_path / "run.npz")))


def test_learning_rate_schedule():
    config = TrainConfig(lr=0.01, warmup=0)
    assert training.learning_rate(config, 1, 100) == pytest.approx(0.01)
    assert training.learning_rate(config, 51, 100) == pytest.approx(0.005)
    assert training.learning_rate(config, 100, 100) < 1e-5
    assert training.learning_rate(TrainConfig(schedule="constant", warmup=0), 90, 100) \
        == training.DEFAULT_LR["adam"]


def test_the_warm_up_climbs_to_the_peak_then_the_cosine_falls_from_it():
    config = TrainConfig(lr=0.01, warmup=10)
    rates = [training.learning_rate(config, step, 110) for step in range(1, 111)]
    assert rates[0] == pytest.approx(0.01 / 11) and rates[9] == pytest.approx(0.01 * 10 / 11)
    assert all(a < b for a, b in zip(rates[:10], rates[1:11]))          # climbing
    assert rates[10] == pytest.approx(0.01)                              # the peak
    assert rates[60] == pytest.approx(0.005) and rates[-1] < 1e-5       # the cosine after it
    assert max(rates) == pytest.approx(0.01)


def test_an_epoch_is_as_long_as_the_data_with_generated_rows_in_every_batch():
    real, made = 100, 25
    data = training.Dataset(np.zeros((real + made, 28, 28), np.uint8), np.zeros(real + made, int),
                            None, None, "", "", "", generated=made)
    config = TrainConfig(batch_size=20, generated_share=0.25)
    batches = training.epoch_batches(data, config, epoch=1)
    assert batches.shape == (real // 20, 20)                            # the data's size
    assert ((batches >= real).sum(axis=1) == 5).all()                   # a quarter generated
    assert len(np.unique(batches)) == batches.size                      # nothing twice
    assert (batches[:, :5] < real).any() and (batches[:, :5] >= real).any()    # mixed
    np.testing.assert_array_equal(batches, training.epoch_batches(data, config, epoch=1))
    assert not np.array_equal(batches, training.epoch_batches(data, config, epoch=2))
    assert training.generated_rows(1, 0.9) == 0 and training.generated_rows(64, 0.99) == 63


def test_the_augmentation_grows_over_the_ramp():
    config = TrainConfig(augment_ramp=2.0)
    first, middle = (training.augmentation_at(config, step, 50) for step in (1, 51))
    assert first.rotation == 0 and first.scale == (1.0, 1.0) and first.speckle_share == 0
    assert middle.rotation == pytest.approx(training.FULL_AUGMENTATION.rotation / 2)
    assert training.augmentation_at(config, 101, 50) == training.FULL_AUGMENTATION
    assert training.augmentation_at(TrainConfig(augment_ramp=0.0), 1, 50) \
        == training.FULL_AUGMENTATION


def test_metrics_database_is_written_by_train(tmp_path):
    from microconv.letters.metrics import read_run
    db = tmp_path / "m.sqlite3"
    train(small(tmp_path, epochs=1, metrics=str(db)))
    run = read_run(db)
    assert run["run"]["status"] == "finished" and len(run["batches"]) == 4
    assert [v["step"] for v in run["validations"]] == [3, 4]
    assert run["evaluation"]["count"] == 64


def test_resuming_on_other_data_warns(tmp_path):
    train(small(tmp_path, epochs=1))
    recorder = Recorder()
    train(small(tmp_path, epochs=2, limit=48, resume=str(tmp_path / "run.npz")), recorder)
    warnings = recorder.warnings
    assert len(warnings) == 1 and "64 training" in warnings[0] and "48 training" in warnings[0]


def test_weights_without_training_state_are_fine_tuned(tmp_path):
    plain = untrained_checkpoint(tmp_path)
    recorder = Recorder()
    train(small(tmp_path, epochs=1, resume=str(plain)), recorder)
    assert "no training state" in recorder.warnings[0]
    assert [b.step for b in recorder.batches] == [1, 2, 3, 4]
