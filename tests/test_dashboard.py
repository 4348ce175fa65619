"""The dashboard and the plain reporter, fed synthetic records: what does a person see?"""

from io import StringIO

import numpy as np
import pytest
from rich.console import Console

from microconv.cli.dashboard import (
    LOSS_HISTORY,
    SPARK_BLOCKS,
    DashboardState,
    FixedHeight,
    LineReporter,
    LiveDashboard,
    dashboard_height,
    format_duration,
    render_dashboard,
    sparkline,
)
from microconv.cli.viz import letter_lines
from microconv.letters.records import (
    BatchRecord,
    CheckpointRecord,
    FinalRecord,
    RunInfo,
    ValidationRecord,
)

C, I, L, G, Q = 2, 8, 11, 6, 16     # class indices of letters used below


def letter_c():
    """A 28x28 upright 'C': a thick ring open to the right."""
    rows, cols = np.mgrid[0:28, 0:28]
    radius = np.hypot(rows - 13.5, cols - 13.5)
    image = ((radius > 6) & (radius < 11) & ~((cols > 16) & (abs(rows - 13.5) < 5)))
    return (image * 255).astype(np.uint8)


def run_info(total_batches=90, epochs=3, max_minutes=None):
    config = {"dataset": "letters", "epochs": epochs, "optimizer": "adam", "batch_size": 32,
              "seed": 7, "max_minutes": max_minutes}
    return RunInfo(backend="numpy", device="NumPy 9.9 on the CPU", parameters=137_178,
                   train_size=960, validation_size=200, test_size=400,
                   dataset="generated letters: 960 training, 400 test images", config=config,
                   batches_per_epoch=30, total_batches=total_batches)


def batch(step, loss, accuracy=0.5, elapsed=None):
    return BatchRecord(step=step, epoch=(step - 1) // 30 + 1, batch=(step - 1) % 30 + 1,
                       loss=loss, accuracy=accuracy, images_per_s=812.0, lr=0.002,
                       elapsed_s=step * 0.5 if elapsed is None else elapsed)


def validation(step=40, accuracy=0.713, best=0.713, predicted=C):
    return ValidationRecord(step=step, epoch=2, loss=0.9, accuracy=accuracy, top2_accuracy=0.85,
                            best_accuracy=best, elapsed_s=20.0, sample_image=letter_c(),
                            sample_label=C, sample_top3=((predicted, 0.8), (14, 0.1), (G, 0.05)),
                            most_confused=((I, L, 4), (G, Q, 2)))


def fed_state():
    state = DashboardState()
    state.start(run_info())
    for step in range(1, 46):
        state.add_batch(batch(step, loss=3.3 * np.exp(-step / 15) + 0.2,
                              accuracy=min(1.0, step / 50)))
    state.add_validation(validation())
    state.add_checkpoint(CheckpointRecord("runs/letters.npz", 40, 20.0))
    state.warnings.append("loss spiked at step 33")
    return state


def shown(renderable, width=100):
    console = Console(record=True, file=StringIO(), width=width, height=60)
    console.print(renderable)
    return console.export_text()


# --- pieces -----------------------------------------------------------------------------------

def test_sparkline_rises_and_falls_with_the_values():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == SPARK_BLOCKS
    assert sparkline([8, 1], 2) == "█▁"


def test_sparkline_squeezes_a_long_run_into_the_width():
    line = sparkline(list(range(1000, 0, -1)), 40)
    assert len(line) == 40
    assert line[0] == "█" and line[-1] == "▁"


def test_sparkline_of_nothing_or_a_constant():
    assert sparkline([], 10) == ""
    assert sparkline([float("nan")], 10) == ""
    assert sparkline([2.0, 2.0, 2.0], 10) == "▁▁▁"


def test_loss_history_stays_bounded_over_a_long_run():
    state = DashboardState()
    state.start(run_info(total_batches=None))
    for step in range(1, 3 * LOSS_HISTORY):
        state.add_batch(batch(step, loss=1.0 / step))
    assert 0 < len(state.losses) <= LOSS_HISTORY
    # Merged, the curve still falls from start to end.
    assert state.losses[0] > state.losses[-1]


def test_running_numbers_average_the_latest_batches():
    state = DashboardState()
    state.start(run_info())
    for step in range(1, 201):
        state.add_batch(batch(step, loss=5.0 if step <= 100 else 1.0, accuracy=0.25))
    assert state.running_loss() == pytest.approx(1.0)
    assert state.running_accuracy() == pytest.approx(0.25)


def test_eta_follows_the_pace_of_this_session():
    state = DashboardState()
    state.start(run_info(total_batches=100))
    state.add_batch(batch(11, loss=1.0, elapsed=100.0))   # a resumed run: 10 steps done before
    state.add_batch(batch(20, loss=1.0, elapsed=109.0))   # 10 steps in 9 s since then
    assert state.eta_s() == pytest.approx(80 * 0.9)


def test_eta_of_a_time_limited_run_is_the_time_left():
    state = DashboardState()
    state.start(run_info(total_batches=None, epochs=None, max_minutes=2))
    state.add_batch(batch(5, loss=1.0, elapsed=30.0))
    assert state.eta_s() == pytest.approx(90.0)
    assert format_duration(state.eta_s()) == "0:01:30"


def test_format_duration():
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(None) == "-:--:--"


# --- the whole dashboard ------------------------------------------------------------------------

def test_dashboard_shows_the_run_the_numbers_and_the_letter():
    state = fed_state()
    text = shown(FixedHeight(render_dashboard(state), dashboard_height(state)))
    for expected in ("numpy: NumPy 9.9 on the CPU", "137,178 parameters",
                     "data     generated letters",
                     "960 training, 200 validation, 400 test",
                     "71.3%",             # latest validation accuracy
                     "85.0%",             # top-2
                     "0.002",             # learning rate
                     "812 images/s",
                     "I→L ×4", "G→Q ×2",
                     "step 40: runs/letters.npz",
                     "warning: loss spiked at step 33"):
        assert expected in text, expected
    # The letter is drawn with half blocks, row for row.
    for row in letter_lines(letter_c()):
        if row.strip():
            assert row.strip() in text
    assert "true C  read C" in text
    assert "C 80%  O 10%  G 5%" in text


def test_dashboard_marks_a_wrong_reading():
    state = fed_state()
    state.add_validation(validation(step=80, accuracy=0.5, best=0.713, predicted=G))
    text = shown(render_dashboard(state))
    assert "true C  read G  ✗" in text
    assert "50.0%" in text and "71.3% (epoch 2)" in text


def test_dashboard_loss_curve_falls():
    text = shown(render_dashboard(fed_state()))
    # The curve's panel is on the left; the letter drawn on the right uses blocks too.
    panels = [line.split("│")[1] for line in text.splitlines() if line.count("│") >= 2]
    curve = next(panel for panel in panels if "▁" in panel)
    blocks = [c for c in curve if c in SPARK_BLOCKS]
    assert blocks[0] == "█" and blocks[-1] == "▁"


def test_dashboard_before_any_record_and_at_the_end():
    empty = shown(render_dashboard(DashboardState()))
    assert "waiting for the run to start" in empty
    state = fed_state()
    state.final = FinalRecord(steps=90, epochs_completed=3, elapsed_s=45.0, test_accuracy=0.72,
                              test_top2_accuracy=0.86, checkpoint="runs/letters.npz")
    assert "finished: test accuracy 72.0%, top-2 86.0%" in shown(render_dashboard(state))


def test_live_dashboard_draws_its_final_frame_and_stops():
    console = Console(record=True, file=StringIO(), width=100, height=50)
    dashboard = LiveDashboard(console)
    dashboard.on_start(run_info())
    for step in range(1, 31):
        dashboard.on_batch(batch(step, loss=2.0 / step))
    dashboard.on_validation(validation())
    dashboard.on_checkpoint(CheckpointRecord("runs/letters.npz", 30, 15.0))
    dashboard.on_end(FinalRecord(steps=30, epochs_completed=1, elapsed_s=15.0,
                                 test_accuracy=0.7, test_top2_accuracy=0.8,
                                 checkpoint="runs/letters.npz"))
    assert not dashboard.live.is_started
    text = console.export_text()
    assert "finished: test accuracy 70.0%" in text
    assert "true C  read C" in text
    # A second dashboard can start: the first gave the live display back.
    second = LiveDashboard(console)
    second.on_start(run_info())
    second.close()


# --- the plain reporter -----------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_reporter_prints_a_line_every_few_seconds():
    out, clock = StringIO(), FakeClock()
    reporter = LineReporter(file=out, every_s=5.0, clock=clock)
    reporter.on_start(run_info(total_batches=90))
    for step in range(1, 91):
        clock.now = step * 0.5           # two batches a second: a line every ten batches
        reporter.on_batch(batch(step, loss=1.5, accuracy=0.75))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("training on numpy (NumPy 9.9 on the CPU); 137,178 parameters")
    progress = [line for line in lines if line.startswith("epoch ")]
    assert 9 <= len(progress) <= 11
    assert "step 90/90" in progress[-1]            # the last batch is always reported
    assert "loss 1.5000" in progress[-1] and "acc 75.0%" in progress[-1]
    assert "812 img/s" in progress[-1] and "ETA 0:00:00" in progress[-1]


def test_line_reporter_reports_validation_checkpoint_warning_and_end():
    out = StringIO()
    reporter = LineReporter(file=out, clock=FakeClock())
    reporter.on_start(run_info())
    reporter.on_batch(batch(1, loss=3.0))
    reporter.on_validation(validation())
    reporter.on_checkpoint(CheckpointRecord("runs/letters.npz", 40, 20.0))
    reporter.on_checkpoint(CheckpointRecord("runs/letters.npz", 40, 21.0))   # same: once
    reporter.on_warning("loss spiked")
    reporter.on_end(FinalRecord(steps=40, epochs_completed=1, elapsed_s=21.0, test_accuracy=0.7,
                                test_top2_accuracy=0.8, checkpoint="runs/letters.npz"))
    text = out.getvalue()
    assert ("validation at step 40: accuracy 71.3% (best 71.3%), top-2 85.0%, loss 0.9000; "
            "most confused I->L x4, G->Q x2") in text
    assert text.count("checkpoint runs/letters.npz (step 40)") == 1
    assert "warning: loss spiked" in text
    assert text.rstrip().endswith("test accuracy 70.0%, top-2 80.0%; checkpoint runs/letters.npz")


def test_line_reporter_says_when_a_run_was_interrupted():
    out = StringIO()
    reporter = LineReporter(file=out, clock=FakeClock())
    reporter.on_start(run_info())
    reporter.on_end(FinalRecord(steps=12, epochs_completed=0, elapsed_s=6.0, test_accuracy=None,
                                test_top2_accuracy=None, checkpoint="x.npz", interrupted=True))
    assert "interrupted after 12 steps" in out.getvalue()
