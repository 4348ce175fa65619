"""What a person watching training sees: a Rich live dashboard, or plain progress lines.

Both are Reporters (see microconv.letters.records): the training loop hands them immutable records
and never knows how they are shown. ``DashboardState`` keeps what the records said (bounded
in memory however long the run), ``render_dashboard`` turns one state into a Rich Layout,
and ``LiveDashboard`` shows that layout under ONE ``rich.live.Live``, redrawn from the
latest state about four times a second. Rich allows only one live display at a time, so
nothing inside starts a spinner, status or progress display of its own: the one
``Progress`` here is only ever rendered as part of the layout.

``LineReporter`` is for logs and pipes (stdout is not a terminal, or ``--no-dashboard``):
one line every few seconds, plus one per validation, checkpoint and warning.
"""

from __future__ import annotations

import string
import sys
import threading
import time
from collections import deque
from datetime import datetime

from rich import box
from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from microconv.cli.viz import letter_art
from microconv.letters.records import Reporter

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
RUNNING_WINDOW = 50          # batches averaged for the running train loss and accuracy
LOSS_HISTORY = 4096          # losses kept for the sparkline; older ones are merged in pairs
ROWS = {"header": 6, "progress": 4, "body": 18}   # fixed heights; the footer grows with warnings
LETTER_PANEL_WIDTH = 34      # 28 columns of letter art, borders and padding


def format_duration(seconds):
    """12.3 -> '0:00:12'; None -> '-:--:--'."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def sparkline(values, width):
    """Unicode blocks showing ``values`` (oldest left), squeezed into ``width`` characters by
    averaging neighbours; low values get low blocks. Non-finite values are skipped."""
    values = [v for v in values if v == v and abs(v) != float("inf")]
    if not values or width < 1:
        return ""
    if len(values) > width:
        buckets = []
        for i in range(width):
            chunk = values[i * len(values) // width:(i + 1) * len(values) // width]
            buckets.append(sum(chunk) / len(chunk))
        values = buckets
    low, high = min(values), max(values)
    span = high - low
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - low) / span * top) if span > 0 else 0]
                   for v in values)


def class_names_for(info):
    """The printable class names of the run's dataset (A..Z for letters)."""
    dataset = (info.config or {}).get("dataset", "letters") if info is not None else "letters"
    try:
        from microconv.letters.data import class_names
        return class_names(dataset)
    except Exception:  # noqa: BLE001 - a display must not fail on an unknown dataset
        return string.ascii_uppercase


class DashboardState:
    """Everything the records have said so far, in the form the displays need."""

    def __init__(self):
        self.info = None
        self.batch = None
        self.validation = None
        self.checkpoint = None
        self.checkpoint_time = None      # wall-clock time the checkpoint record arrived
        self.final = None
        self.warnings = deque(maxlen=3)
        self.recent = deque(maxlen=RUNNING_WINDOW)   # (loss, accuracy) of the latest batches
        self.losses = []                 # the whole run's losses, merged in pairs when long
        self._merge_every = 1            # batches that one entry of self.losses stands for
        self._pending = []
        self.best_epoch = None
        self.first_step = None           # the step this session started at (a resumed run)
        self.first_elapsed = 0.0
        self.names = string.ascii_uppercase

    def start(self, info):
        self.info = info
        self.names = class_names_for(info)

    def add_batch(self, record):
        if self.first_step is None:
            self.first_step = record.step - 1
            self.first_elapsed = record.elapsed_s
        self.batch = record
        self.recent.append((record.loss, record.accuracy))
        self._pending.append(record.loss)
        if len(self._pending) == self._merge_every:
            self.losses.append(sum(self._pending) / len(self._pending))
            self._pending = []
        if len(self.losses) >= LOSS_HISTORY:
            # Keep memory bounded: every entry now covers twice as many batches.
            self.losses = [(a + b) / 2 for a, b in zip(self.losses[0::2], self.losses[1::2])]
            self._merge_every *= 2

    def add_validation(self, record):
        if self.validation is None or record.accuracy >= record.best_accuracy:
            self.best_epoch = record.epoch
        self.validation = record

    def add_checkpoint(self, record):
        self.checkpoint = record
        self.checkpoint_time = datetime.now()

    # --- derived numbers ------------------------------------------------------------------
    def running_loss(self):
        return sum(l for l, _ in self.recent) / len(self.recent) if self.recent else None

    def running_accuracy(self):
        return sum(a for _, a in self.recent) / len(self.recent) if self.recent else None

    def total_batches(self):
        return self.info.total_batches if self.info is not None else None

    def eta_s(self):
        """Seconds left: from this session's pace over the planned batches, or from the time
        limit when only --max-minutes bounds the run."""
        if self.batch is None or self.info is None:
            return None
        elapsed = self.batch.elapsed_s
        total = self.info.total_batches
        if total:
            done = self.batch.step - self.first_step
            seconds = elapsed - self.first_elapsed
            if done <= 0 or seconds <= 0:
                return None
            eta = (total - self.batch.step) * seconds / done
        else:
            eta = None
        limit = (self.info.config or {}).get("max_minutes")
        if limit:
            by_time = max(0.0, limit * 60 - elapsed)
            eta = by_time if eta is None else min(eta, by_time)
        return eta

    def progress_line(self):
        """One line saying where the run is; shared by the plain reporter."""
        b = self.batch
        if b is None:
            return "starting"
        per_epoch = self.info.batches_per_epoch if self.info else "?"
        total = self.total_batches()
        epochs = (self.info.config or {}).get("epochs") if self.info else None
        parts = [f"epoch {b.epoch}" + (f"/{epochs}" if epochs else ""),
                 f"batch {b.batch}/{per_epoch}",
                 f"step {b.step}" + (f"/{total}" if total else ""),
                 f"loss {self.running_loss():.4f}",
                 f"acc {self.running_accuracy():.1%}",
                 f"{b.images_per_s:,.0f} img/s",
                 f"lr {b.lr:.3g}",
                 f"{format_duration(b.elapsed_s)} elapsed",
                 f"ETA {format_duration(self.eta_s())}"]
        return " | ".join(parts)


# --- rendering --------------------------------------------------------------------------------

class Sparkline:
    """A renderable loss curve that fills the width it is given."""

    def __init__(self, values, style="cyan"):
        self.values = values
        self.style = style

    def __rich_console__(self, console, options):
        yield Text(sparkline(self.values, options.max_width) or "(no batches yet)",
                   style=self.style if self.values else "dim", no_wrap=True)


def _percent(value):
    return "-" if value is None or value != value else f"{value:.1%}"


def _number(value, digits=4):
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def render_header(state):
    info = state.info
    if info is None:
        return Panel(Text("waiting for the run to start...", style="dim"), title="microconv")
    config = info.config or {}
    # The dataset sentence ends with its sizes; they get a line of their own so that a long
    # description can be cut short without losing them.
    description = info.dataset.rsplit(": ", 1)[0] if info.dataset.endswith(" images") \
        else info.dataset
    rows = [("backend", f"{info.backend}: {info.device}"),
            ("model", f"{info.parameters:,} parameters; {config.get('optimizer', '?')}, "
                      f"batch {config.get('batch_size', '?')}, seed {config.get('seed', '?')}"),
            ("data", description),
            ("images", f"{info.train_size:,} training, {info.validation_size:,} validation, "
                       f"{info.test_size:,} test")]
    grid = Group(*(Text.assemble((f"{label:<9}", "bold"), value, no_wrap=True,
                                 overflow="ellipsis") for label, value in rows))
    return Panel(grid, title="[bold]microconv train[/]", border_style="blue", box=box.ROUNDED)


def render_metrics(state):
    table = Table(box=None, expand=True, show_header=False, padding=(0, 1))
    table.add_column("metric", no_wrap=True, overflow="ellipsis")
    table.add_column("value", justify="right", no_wrap=True)
    v = state.validation
    table.add_row("train loss (running)", _number(state.running_loss()))
    table.add_row("train accuracy (running)", _percent(state.running_accuracy()))
    table.add_row("validation accuracy", _percent(v.accuracy if v else None))
    table.add_row("validation top-2", _percent(v.top2_accuracy if v else None))
    table.add_row("validation loss", _number(v.loss if v else None))
    best = _percent(v.best_accuracy if v else None)
    if v is not None and state.best_epoch is not None:
        best += f" (epoch {state.best_epoch})"
    table.add_row("best validation accuracy", Text(best, style="bold green"))
    table.add_row("learning rate", f"{state.batch.lr:.3g}" if state.batch else "-")
    return table


def render_letter(state):
    v = state.validation
    if v is None or v.sample_image is None:
        return Panel(Text("the first validation\nshows a letter here", style="dim"),
                     title="validation letter", width=LETTER_PANEL_WIDTH)
    names = state.names
    truth = names[v.sample_label] if 0 <= v.sample_label < len(names) else "?"
    lines = [letter_art(v.sample_image)]
    if v.sample_top3:
        guess, _ = v.sample_top3[0]
        right = guess == v.sample_label
        verdict = Text.assemble(("true ", "dim"), (truth, "bold"), ("  read ", "dim"),
                                (names[guess], "bold green" if right else "bold red"),
                                ("  ✓" if right else "  ✗", "green" if right else "red"))
        top3 = "  ".join(f"{names[c]} {p:.0%}" for c, p in v.sample_top3)
        lines += [verdict, Text(f"top-3: {top3}", style="dim")]
    return Panel(Group(*lines), title=f"validation letter, step {v.step}",
                 width=LETTER_PANEL_WIDTH)


def render_confusions(state):
    v = state.validation
    pairs = v.most_confused if v is not None else ()
    if not pairs:
        body = Text("none yet" if v is None else "no mistakes on the validation set",
                    style="dim")
    else:
        names = state.names
        body = Text(", ".join(f"{names[t]}→{names[p]} ×{n}" for t, p, n in pairs[:6]))
    return Panel(body, title="most confused (true→read)", border_style="magenta")


def render_footer(state):
    lines = []
    c = state.checkpoint
    if c is not None:
        when = state.checkpoint_time.strftime("%H:%M:%S") if state.checkpoint_time else "?"
        lines.append(Text.assemble(("last checkpoint ", "dim"), f"{when}, step {c.step}: ",
                                   (c.path, "bold"), no_wrap=True, overflow="ellipsis"))
    else:
        lines.append(Text("no checkpoint yet", style="dim"))
    final = state.final
    if final is not None:
        if final.interrupted:
            lines.append(Text(f"interrupted at step {final.steps}", style="bold yellow"))
        elif (final.extra or {}).get("error"):
            lines.append(Text(f"stopped: {final.extra['error']}", style="bold red"))
        elif final.test_accuracy is not None:
            lines.append(Text(f"finished: test accuracy {final.test_accuracy:.1%}, top-2 "
                              f"{final.test_top2_accuracy:.1%}", style="bold green"))
    lines += [Text(f"warning: {w}", style="yellow", no_wrap=True, overflow="ellipsis")
              for w in state.warnings]
    return Panel(Group(*lines), border_style="dim")


def render_dashboard(state, progress=None):
    """The whole dashboard for one state, as a Layout of fixed-height rows."""
    progress = progress or make_progress()
    update_progress(progress, state)
    layout = Layout(name="dashboard")
    layout.split_column(
        Layout(render_header(state), name="header", size=ROWS["header"]),
        Layout(Panel(progress, title="progress", border_style="blue"), name="progress",
               size=ROWS["progress"]),
        Layout(name="body", size=ROWS["body"]),
        Layout(render_footer(state), name="footer", size=footer_height(state)),
    )
    left = Layout(name="left")
    left.split_column(
        Layout(Panel(render_metrics(state), title="metrics"), name="metrics", size=9),
        Layout(Panel(Sparkline(list(state.losses)), title="train loss over the run"),
               name="loss", size=3),
        Layout(render_confusions(state), name="confused", size=6),
    )
    layout["body"].split_row(left, Layout(render_letter(state), name="letter",
                                          size=LETTER_PANEL_WIDTH))
    return layout


class FixedHeight:
    """Render a Layout at a fixed height, instead of the full height of the screen."""

    def __init__(self, renderable, height):
        self.renderable = renderable
        self.height = height

    def __rich_console__(self, console, options):
        # Live crops what does not fit a terminal; a log or a pipe gets every line.
        yield from console.render(self.renderable, options.update(height=self.height))


def footer_height(state):
    return 3 + len(state.warnings) + (state.final is not None)


def dashboard_height(state):
    """The lines the dashboard needs (the terminal's height caps it)."""
    return sum(ROWS.values()) + footer_height(state)


def make_progress():
    """The one Progress of the dashboard: epoch and batch tasks, rendered inside the layout
    (never started on its own, so it never opens a second live display)."""
    return Progress(TextColumn("{task.description:<6}"), BarColumn(bar_width=None),
                    MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
                    expand=True, auto_refresh=False)


def update_progress(progress, state):
    """Set the epoch and batch tasks from the state (elapsed and ETA come from the records)."""
    if not progress.tasks:
        progress.add_task("epoch", total=None, detail="")
        progress.add_task("batch", total=None, detail="")
    epoch_task, batch_task = progress.tasks[0].id, progress.tasks[1].id
    info, b = state.info, state.batch
    epochs = (info.config or {}).get("epochs") if info else None
    per_epoch = info.batches_per_epoch if info else None
    if b is None:
        return
    # The epoch bar counts finished epochs; the batch bar the current one.
    progress.update(epoch_task, total=epochs, completed=b.epoch - 1 + b.batch / per_epoch
                    if per_epoch else b.epoch - 1,
                    detail=f"{format_duration(b.elapsed_s)} elapsed, "
                           f"ETA {format_duration(state.eta_s())}")
    progress.update(batch_task, total=per_epoch, completed=b.batch,
                    detail=f"{b.images_per_s:,.0f} images/s, step {b.step}"
                           + (f"/{info.total_batches}" if info and info.total_batches else ""))


# --- the reporters --------------------------------------------------------------------------------

class LiveDashboard(Reporter):
    """The live dashboard: records update the state, one Live redraws it ~4 times a second.

    Use as a context manager (or call ``close``) so the terminal is restored even when
    training fails before ``on_end``. Live redraws from its own thread, so the state is
    changed and read under a lock.
    """

    def __init__(self, console=None, refresh_per_second=4):
        self.console = console or Console()
        self.state = DashboardState()
        self.progress = make_progress()
        self._lock = threading.Lock()
        self.live = Live(console=self.console, refresh_per_second=refresh_per_second,
                         get_renderable=self.renderable, transient=False,
                         redirect_stdout=False, redirect_stderr=False)
        self._started = False

    def renderable(self):
        with self._lock:
            return FixedHeight(render_dashboard(self.state, self.progress),
                               dashboard_height(self.state))

    def on_start(self, info):
        with self._lock:
            self.state.start(info)
        if not self._started:
            self.live.start()
            self._started = True

    def on_batch(self, record):
        with self._lock:
            self.state.add_batch(record)

    def on_validation(self, record):
        with self._lock:
            self.state.add_validation(record)
        self.refresh()

    def on_checkpoint(self, record):
        with self._lock:
            self.state.add_checkpoint(record)

    def on_warning(self, message):
        with self._lock:
            self.state.warnings.append(message)
        self.refresh()

    def on_end(self, record):
        with self._lock:
            self.state.final = record
        self.close()

    def refresh(self):
        if self._started:
            self.live.refresh()

    def close(self):
        """Draw the final state and give the terminal back."""
        if self._started:
            self.live.refresh()
            self.live.stop()
            if not self.console.is_terminal:
                self.console.line()         # a log gets the final frame, then a new line
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LineReporter(Reporter):
    """Plain progress for logs and pipes: a line every ``every_s`` seconds, plus one for each
    validation, checkpoint, warning and the end. ``clock`` is injectable for tests."""

    def __init__(self, file=None, every_s=5.0, clock=time.monotonic, note=None):
        self.file = file
        self.every_s = every_s
        self.clock = clock
        self.note = note
        self.state = DashboardState()
        self._last_line = None

    def _print(self, line):
        out = self.file or sys.stdout       # looked up per line: tests swap sys.stdout
        print(line, file=out, flush=True)

    def on_start(self, info):
        self.state.start(info)
        self._print(f"training on {info.backend} ({info.device}); {info.parameters:,} "
                    f"parameters; {info.dataset}")
        if self.note:
            self._print(self.note)

    def on_batch(self, record):
        self.state.add_batch(record)
        now = self.clock()
        total = self.state.total_batches()
        if (self._last_line is None or now - self._last_line >= self.every_s
                or (total and record.step == total)):
            self._last_line = now
            self._print(self.state.progress_line())

    def on_validation(self, record):
        self.state.add_validation(record)
        names = self.state.names
        pairs = ", ".join(f"{names[t]}->{names[p]} x{n}" for t, p, n in record.most_confused[:3])
        self._print(f"validation at step {record.step}: accuracy {record.accuracy:.1%} "
                    f"(best {record.best_accuracy:.1%}), top-2 {record.top2_accuracy:.1%}, "
                    f"loss {record.loss:.4f}" + (f"; most confused {pairs}" if pairs else ""))

    def on_checkpoint(self, record):
        previous = self.state.checkpoint
        self.state.add_checkpoint(record)
        if previous is None or (previous.path, previous.step) != (record.path, record.step):
            self._print(f"checkpoint {record.path} (step {record.step})")

    def on_warning(self, message):
        self._print(f"warning: {message}")

    def on_end(self, record):
        self.state.final = record
        if record.interrupted:
            self._print(f"interrupted after {record.steps} steps")
        elif (record.extra or {}).get("error"):
            self._print(f"stopped after {record.steps} steps: {record.extra['error']}")
        else:
            accuracy = _percent(record.test_accuracy)
            self._print(f"finished {record.steps} steps in {format_duration(record.elapsed_s)}:"
                        f" test accuracy {accuracy}, top-2 {_percent(record.test_top2_accuracy)}"
                        f"; checkpoint {record.checkpoint}")
