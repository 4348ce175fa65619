"""The ``microconv`` command: train, evaluate, predict, inspect backends, data and graphs.

Each command only turns its options into arguments for a library function (training.train,
evaluate.evaluate, photo.read_letters, ...) and shows the result. Every expected failure is
a MicroconvError (or an OSError about a path the user gave); they are caught in one place,
``_Commands.invoke``, and become one red line on stderr and exit code 1, never a traceback.
Ctrl-C during training saves a checkpoint, says where, and exits with 130.

Options that several commands share are defined once, as ``Annotated`` types below.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import microconv
from microconv import backends as registry
from microconv.errors import BackendError, DataError, MicroconvError
from microconv.letters.training import TrainConfig

EXIT_INTERRUPTED = 130


# --- one place for expected failures ---------------------------------------------------------

def _error_console():
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _one_line(exc):
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    return " ".join(text.split())


class _Commands(TyperGroup):
    """The app's command group: turns expected failures into one line and an exit code."""

    def invoke(self, ctx):
        from microconv.letters.training import TrainingInterrupted
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as exc:
            _error_console().print(f"[yellow]{escape(_one_line(exc))}[/]")
            raise typer.Exit(128 + exc.signal_number) from None     # 130 for Ctrl-C
        except KeyboardInterrupt:
            # Ctrl-C in any other command: nothing was being written, so nothing is lost.
            _error_console().print("[yellow]interrupted[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # The reader of our output (say `| head`) stopped early: not the user's mistake.
            # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except (MicroconvError, OSError) as exc:
            _error_console().print(f"[bold red]error:[/] [red]{escape(_one_line(exc))}[/]")
            raise typer.Exit(1) from None


app = typer.Typer(
    name="microconv",
    cls=_Commands,
    help="microconv: a small, readable deep-learning framework that learns to read "
         "handwritten letters. Train the seed's ConvoAlphabetModel, watch it learn, and "
         "ask it to read your own handwriting.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Inspect, verify and download the EMNIST letters data.",
                       no_args_is_help=True, rich_markup_mode="rich")
app.add_typer(data_app, name="data")


def _version(value: bool):
    if value:
        typer.echo(f"microconv {microconv.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print the version and exit.")] = False,
):
    """microconv: train and use a small convolutional network that reads handwritten letters."""


# --- shared option definitions -----------------------------------------------------------------

def _choices(name, values):
    """An Enum of the allowed values (Typer's way to offer choices); members are strings."""
    return Enum(name, {value: value for value in values}, type=str)


def _plain_choice(value):
    """The string behind a choice, so commands and TrainConfig see plain values."""
    return value.value if isinstance(value, Enum) else value


_SETTING_TYPES = typing.get_type_hints(TrainConfig)     # resolved once, not per option


def _setting(name):
    """``Annotated[type, option]`` for a TrainConfig field: flag, help, limits and choices come
    from the field itself, so ``train``, the other commands and the Python API cannot drift."""
    field = TrainConfig.__dataclass_fields__[name]
    meta = field.metadata
    flag = "--" + name.replace("_", "-")
    kind = _SETTING_TYPES[name]
    if kind is bool:
        flag += f"/--no-{name.replace('_', '-')}"
    choices = meta.get("choices")
    if choices is not None:
        kind = _choices(name, choices() if callable(choices) else choices)
    option = typer.Option(flag, *([meta["short"]] if "short" in meta else []), help=meta["help"],
                          min=meta.get("min"), max=meta.get("max"), envvar=meta.get("envvar"),
                          case_sensitive=False,
                          callback=_plain_choice)
    return Annotated[kind, option]


BackendOption = _setting("backend")
DeviceOption = _setting("device")
DataDirOption = _setting("data_dir")
DatasetOption = _setting("dataset")
LimitOption = _setting("limit")
JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object instead of tables.")]
CheckpointArgument = Annotated[Path, typer.Argument(
    help="A checkpoint (.npz) written by [bold]microconv train[/] or "
         "[bold]microconv import-seed[/].", show_default=False)]
DataFolderArgument = Annotated[Optional[Path], typer.Argument(
    help="The data folder; default: $MICROCONV_DATA, then ~/.cache/microconv/emnist.",
    show_default=False)]
def _console():
    return Console(highlight=False)


def _print_json(value):
    typer.echo(json.dumps(_plain(value), indent=2))


def _plain(value):
    """Make a value JSON-safe: NumPy numbers become Python ones, NaN becomes null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _percent(value):
    return "-" if value is None or value != value else f"{value:.1%}"


def _backend_options(backend, device):
    """The options for backends.get: only a backend with devices takes --device."""
    if not device:
        return {}
    if "device" not in registry.options(backend):
        with_devices = [name for name in registry.names() if "device" in registry.options(name)]
        raise BackendError(f"--device chooses a device; the {backend} backend has none (add "
                           + " or ".join(f"--backend {name}" for name in with_devices) + ")")
    return {"device": device}


# --- train -------------------------------------------------------------------------------------

def _with_training_settings(command):
    """Give ``command(ctx, ..., **settings)`` one option per TrainConfig field, after ctx."""
    own = list(inspect.signature(command).parameters.values())[:-1]      # all but **settings
    settings = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  default=f.default, annotation=_setting(f.name))
                for f in dataclasses.fields(TrainConfig)]
    command.__signature__ = inspect.Signature(own[:1] + settings + own[1:])
    return command


@app.command()
@_with_training_settings
def train(
    ctx: typer.Context,
    dashboard: Annotated[Optional[bool], typer.Option(
        "--dashboard/--no-dashboard",
        help="Live Rich dashboard; default: on when stdout is a terminal, otherwise one "
             "plain line every few seconds.", show_default=False)] = None,
    **settings,
):
    """Train the letter reader and watch it learn on a live dashboard.

    Uses EMNIST letters when found (--data-dir, $MICROCONV_DATA, the user cache), otherwise
    generated letters, and says which. Ctrl-C saves a checkpoint and stops (exit code 130).
    'mpirun -n N microconv train' trains with N processes sharing every batch (install
    microconv[mpi]); rank 0 shows the progress and writes the files.
    """
    from microconv.cli.dashboard import LineReporter, LiveDashboard
    from microconv.letters import distributed, training

    _backend_options(settings["backend"], settings["device"])    # refuse --device early
    if settings["resume"] is not None:
        # Keep the checkpoint's settings except those given on this command line.
        given = {name: value for name, value in settings.items()
                 if name != "resume" and _given(ctx, name)}
        config = training.resume_config(settings["resume"], **given)
    else:
        config = training.TrainConfig(**settings)

    # Under mpirun -n N: this process's rank. Found after everything that can fail on one
    # rank alone: a rank that exits before MPI starts makes mpirun stop the others.
    world = distributed.world()
    if not world.is_root:
        try:
            training.train(config, world=world)      # rank 0 reports for all
        except training.TrainingInterrupted as exc:
            # Rank 0 writes the checkpoints and says what it saved; this rank only stopped.
            _error_console().print(f"[yellow]rank {world.rank} interrupted at step {exc.step}; "
                                   "rank 0 keeps the checkpoint[/]")
            raise typer.Exit(128 + exc.signal_number) from None     # as rank 0 exits
        return
    console = _console()
    use_dashboard = console.is_terminal if dashboard is None else dashboard
    if use_dashboard:
        reporter = LiveDashboard(console)
    else:
        note = ("(no dashboard: stdout is not a terminal; progress every 5 s)"
                if dashboard is None else None)
        reporter = LineReporter(note=note)
    try:
        final = training.train(config, reporter, world)
    finally:
        if use_dashboard:
            reporter.close()
    console.print(f"test accuracy [bold]{_percent(final.test_accuracy)}[/] (top-2 "
                  f"{_percent(final.test_top2_accuracy)}); checkpoint saved to "
                  f"[bold]{escape(str(final.checkpoint))}[/]", soft_wrap=True)   # a path whole


def _given(ctx, name):
    """Whether an option was set on the command line or by an environment variable."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _str(path):
    return None if path is None else str(path)


# --- evaluate ----------------------------------------------------------------------------------

def _test_split(data_dir, dataset, limit, header):
    """The test images to evaluate on, and a sentence saying what they are."""
    from microconv.letters import training
    from microconv.letters.data import class_names, describe_source, find_data_dir, load_split

    class_names(dataset)                     # an unknown dataset is named as such
    folder = find_data_dir(_str(data_dir), dataset)
    if folder is not None:
        images, labels = load_split(folder, "test", dataset)
        what = f"test split of the {describe_source(folder, dataset)} in {folder}"
    else:
        if dataset != "letters":
            raise DataError(f"no EMNIST {dataset} files found; pass --data-dir")
        # the generated test letters a run without data files used
        seed = int((header.get("config") or {}).get("seed", 0))
        images, labels = training.generated_split("test", seed, limit)
        what = "generated letters (no EMNIST files found; pass --data-dir)"
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels, what


def _confusion_table(matrix, names):
    """The confusion matrix with rows = true letter; the diagonal green, mistakes red."""
    matrix = np.asarray(matrix)
    table = Table(title="confusion matrix (row: true letter, column: letter read)",
                  box=None, padding=(0, 0), show_edge=False, title_justify="left")
    table.add_column("", style="bold", justify="right", width=2)
    for name in names:
        table.add_column(name, justify="right", width=4, header_style="bold")
    worst = max(1, int((matrix - np.diag(np.diag(matrix))).max()))
    for i, name in enumerate(names):
        total = max(1, int(matrix[i].sum()))
        cells = []
        for j, count in enumerate(matrix[i]):
            if count == 0:
                cells.append(Text("·", style="dim"))
            elif i == j:
                share = count / total
                cells.append(Text(str(count), style="bold green" if share >= 0.8 else "green"))
            else:
                style = "bold red" if count / worst > 0.5 else "red" if count / worst > 0.2 \
                    else "yellow"
                cells.append(Text(str(count), style=style))
        table.add_row(name, *cells)
    return table


def _letter_grid(title, per_class, cell):
    """A value per letter in two halves, each a row of letters above a row of ``cell(value)``."""
    table = Table(title=title, box=None, padding=(0, 1), title_justify="left",
                  show_header=False)
    names = list(per_class)
    half = (len(names) + 1) // 2
    for row_names in (names[:half], names[half:]):
        table.add_row(*(Text(name, style="bold") for name in row_names))
        table.add_row(*(cell(per_class[name]) for name in row_names))
    return table


def _accuracy_cell(value):
    style = "green" if value is not None and value >= 0.9 else \
        "yellow" if value is not None and value >= 0.7 else "red"
    return Text("-" if value is None else f"{value:.0%}", style=style)


@app.command()
def evaluate(
    checkpoint: CheckpointArgument,
    data_dir: DataDirOption = None,
    backend: BackendOption = "numpy",
    device: DeviceOption = None,
    dataset: DatasetOption = "letters",
    limit: LimitOption = None,
    seed: Annotated[int, typer.Option(
        min=0, help="Seed of the perturbed copy of the test set.")] = 0,
    as_json: JsonOption = False,
):
    """How well a checkpoint reads the test letters.

    Accuracy, top-2, accuracy on shifted and speckled copies, per-letter accuracy, the
    confusion matrix and the most-confused pairs.
    """
    from microconv.letters.checkpoint import load_checkpoint
    from microconv.letters.data import class_names
    from microconv.letters.evaluate import evaluate as evaluate_classifier

    classifier = load_checkpoint(checkpoint, backend, **_backend_options(backend, device))
    names = class_names(dataset)
    if classifier.class_names != names:
        raise DataError(f"{checkpoint} was trained on the classes {classifier.class_names}, "
                        f"the {dataset} test split has {names}; pass the --dataset it was "
                        "trained on")
    images, labels, what = _test_split(data_dir, dataset, limit, classifier.header)
    result = evaluate_classifier(classifier, images, labels, seed=seed, class_names=names)
    result["checkpoint"] = str(checkpoint)
    result["data"] = what
    result["backend"] = classifier.model.backend.describe()
    if as_json:
        _print_json(result)
        return
    console = _console()
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("accuracy", _percent(result["accuracy"]))
    summary.add_row("top-2 accuracy", _percent(result["top2_accuracy"]))
    summary.add_row("perturbed accuracy", _percent(result["perturbed_accuracy"]))
    summary.add_row("loss", f"{result['loss']:.4f}")
    summary.add_row("test images", f"{result['count']:,}")
    console.print(Panel(summary, title=escape(f"{checkpoint}"), expand=False))
    console.print(f"[dim]on {escape(what)}, backend {escape(result['backend'])}[/]")
    console.print(_confusion_table(result["confusion"], names))
    console.print(_letter_grid("accuracy per letter", result["per_class"], _accuracy_cell))
    pairs = result["most_confused"]
    if pairs:
        console.print("most confused (true -> read): " + ", ".join(
            f"[bold]{t}[/]->[bold]{p}[/] x{n}" for t, p, n in pairs))


# --- predict -----------------------------------------------------------------------------------

@app.command()
def predict(
    checkpoint: CheckpointArgument,
    images: Annotated[list[Path], typer.Argument(
        help="PNG or JPEG files: one letter, or a page of handwritten lines.",
        show_default=False)],
    annotate: Annotated[Optional[Path], typer.Option(
        help="Write the picture with a box around each letter and the letter read "
             "(one IMAGE only).")] = None,
    save_letters: Annotated[Optional[Path], typer.Option(
        "--save-letters", file_okay=False,
        help="Write each letter found as a picture into DIR/<letter read>/<image>-<n>.png "
             "(never replacing a file), to correct by hand and train on with --data-dir.")
    ] = None,
    backend: BackendOption = "numpy",
    device: DeviceOption = None,
    as_json: JsonOption = False,
):
    """Read the handwritten letters in pictures: the text, line by line, and each letter with
    its top-3 guesses."""
    from microconv.cli.viz import letter_art
    from microconv.letters import photo
    from microconv.letters.checkpoint import check_outputs, load_checkpoint

    if annotate is not None and len(images) != 1:
        raise MicroconvError("--annotate writes one picture: give exactly one IMAGE")
    check_outputs([("--annotate", annotate)],
                  [("CHECKPOINT", checkpoint)] + [("IMAGE", path) for path in images])
    classifier = load_checkpoint(checkpoint, backend, **_backend_options(backend, device))
    classifier.require_letters(checkpoint)
    found = []
    for path in images:
        page = photo.read_page(classifier, path, save_to=save_letters)
        found.append({"image": str(path), **page})     # _print_json turns tuples into lists
        if annotate is not None:
            photo.annotate(path, page["letters"], annotate)
    if as_json:
        _print_json({"checkpoint": str(checkpoint), "images": found,
                     "annotated": _str(annotate), "saved_letters": _str(save_letters)})
        return
    console = _console()
    for path, entry in zip(images, found):
        if not entry["letters"]:
            console.print(f"{escape(str(path))}: [yellow]no letters found[/]")
            continue
        if len(entry["lines"]) == 1:
            console.print(f"{escape(str(path))}: read [bold green]{escape(entry['text'])}[/]")
        else:
            console.print(f"{escape(str(path))}: read {len(entry['lines'])} lines")
            for line in entry["lines"]:
                console.print(f"  [bold green]{escape(line)}[/]")
        table = Table(box=None, padding=(0, 2))
        table.add_column("#", justify="right")
        table.add_column("line", justify="right")
        table.add_column("letter", style="bold")
        table.add_column("top-3")
        table.add_column("ink box (left, top, right, bottom)", style="dim")
        for i, letter in enumerate(entry["letters"], 1):
            top3 = "  ".join(f"{c} {p:.0%}" for c, p in letter["top3"])
            table.add_row(str(i), str(letter["line"] + 1), letter["letter"], top3,
                          str(letter["ink_box"]))
        if len(entry["letters"]) == 1:
            # One letter: also show it the way the network saw it, found as read_page finds it.
            gray, colour = photo.read_photo(path)
            _, prepared = photo.found_letters(gray, colour)
            console.print(Columns([Panel(letter_art(prepared[0]), title="as the network sees "
                                         "it", expand=False), table]))
        else:
            console.print(table)
    if annotate is not None:
        console.print(f"annotated picture written to [bold]{escape(str(annotate))}[/]")
    if save_letters is not None:
        saved = sum(len(entry["letters"]) for entry in found)
        console.print(f"{saved} letter pictures saved in [bold]{escape(str(save_letters))}[/], "
                      "one folder per letter read")


# --- serve -------------------------------------------------------------------------------------

@app.command()
def serve(
    checkpoint: CheckpointArgument,
    host: Annotated[str, typer.Option(
        help="Address to listen on; 127.0.0.1 keeps the pad on this computer.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8000,
    backend: BackendOption = "numpy",
    device: DeviceOption = None,
):
    """A drawing pad in the browser: write a letter and watch the network read it.

    Also shows the letter as the network receives it, what each layer sees, and reads
    uploaded photos. Serves a JSON API for scripts too (docs/serve.md). Needs the web extra:
    pip install "microconv\\[web]".
    """
    from microconv.cli.serve import serve as serve_pad

    serve_pad(checkpoint, host, port, backend, _backend_options(backend, device),
              say=typer.echo)


# --- backends ----------------------------------------------------------------------------------

def backend_report(device=None):
    """Every backend with its availability, and every OpenCL device (for ``backends``)."""
    from microconv.backends import opencl_devices

    opencl = opencl_devices.listing(device)
    chosen = [d for d in opencl["devices"] if d["chosen"]]
    entries = []
    for name in registry.names():
        reason = registry.unavailable_reason(name)
        description = None
        if reason is None and "device" not in registry.options(name):
            description = registry.get(name).describe()
        elif reason is None and chosen:
            # A backend with devices is not opened here: the device listing already names
            # the one --device chooses.
            description = (f"{chosen[0]['device']} on {chosen[0]['platform']}, "
                           f"driver {chosen[0]['driver']}")
        entries.append({"name": name, "available": reason is None, "reason": reason,
                        "description": description})
    return {"backends": entries, "opencl": opencl}


@app.command()
def backends(
    device: DeviceOption = None,
    as_json: JsonOption = False,
):
    """Which backends can run here, and why not.

    Also lists every OpenCL platform and device with its type and driver, marking the one
    that would be chosen.
    """
    report = backend_report(device)
    if as_json:
        _print_json(report)
        return
    console = _console()
    table = Table(title="backends", title_justify="left")
    table.add_column("backend", style="bold")
    table.add_column("available")
    table.add_column("device, or why not")
    for entry in report["backends"]:
        table.add_row(entry["name"], "[green]yes[/]" if entry["available"] else "[red]no[/]",
                      escape(entry["description"] or entry["reason"] or ""))
    console.print(table)
    devices = report["opencl"]["devices"]
    if devices:
        cl_table = Table(title="OpenCL devices (--device P:D or a piece of the name)",
                         title_justify="left")
        for column in ("", "P:D", "platform", "device", "type", "driver"):
            cl_table.add_column(column)
        for d in devices:
            cl_table.add_row("[green]chosen[/]" if d["chosen"] else "", d.get("index", ""),
                             escape(d["platform"]), escape(d["device"]), d["type"],
                             escape(d["driver"]))
        console.print(cl_table)
    elif report["opencl"]["error"]:
        console.print(f"[dim]OpenCL: {escape(report['opencl']['error'])}[/]")


# --- bench -------------------------------------------------------------------------------------

@app.command()
def bench(
    backend: Annotated[Optional[list[_choices("backend", registry.names())]], typer.Option(
        "--backend", "-b", case_sensitive=False,
        help="Backend to measure; repeat for several (default: numpy).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Training batch size.")] = 64,
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="Limit the BLAS (and PyTorch) thread pools.")] = None,
    runs: Annotated[Optional[int], typer.Option(
        min=1, help="Timed runs per measurement (default 5), or training runs per contender "
                    "with --time-to-accuracy (default 1).", show_default=False)] = None,
    compare_torch: Annotated[bool, typer.Option(
        help="Also time the same model in PyTorch, if it is installed.")] = False,
    profile: Annotated[bool, typer.Option(
        help="Also show where one training step spends its time, per op.")] = False,
    time_to_accuracy: Annotated[bool, typer.Option(
        "--time-to-accuracy",
        help="Instead: train as 'microconv train' does and time until validation passes 85% "
             "and 90% (needs --data-dir or $MICROCONV_DATA).")] = False,
    data_dir: DataDirOption = None,
    max_minutes: Annotated[float, typer.Option(
        min=0.1, help="--time-to-accuracy: stop a run after this many minutes.")] = 10.0,
    as_json: JsonOption = False,
):
    """Training and inference speed in images per second, per backend; with
    --time-to-accuracy, the time until validation passes 85% and 90%."""
    from microconv.cli.bench import profile_step, render_bench, render_profile, run_bench

    names = [b.value for b in backend] if backend else ["numpy"]
    _require_bench_memory(names, batch_size)
    if time_to_accuracy:
        from microconv.cli.time_to_accuracy import render_time_to_accuracy
        from microconv.cli.time_to_accuracy import time_to_accuracy as race

        result = race(_data_folder(data_dir, "letters"), names, compare_torch=compare_torch,
                      threads=threads, repeats=runs or 1, max_minutes=max_minutes,
                      batch_size=batch_size)
        if as_json:
            _print_json(result)
        else:
            _console().print(render_time_to_accuracy(result))
        return
    result = run_bench(names, batch_size=batch_size, threads=threads, runs=runs or 5,
                       compare_torch=compare_torch)
    rows = None
    if profile:
        rows = {name: profile_step(name, batch_size=batch_size, threads=threads)
                for name in result["backends"] if not registry.get(name).slow}
        result["profile"] = {name: [{"op": op, "forward_ms": f, "backward_ms": b}
                                    for op, f, b in r] for name, r in rows.items()}
    if as_json:
        _print_json(result)
        return
    console = _console()
    console.print(render_bench(result))
    for name, r in (rows or {}).items():
        console.print(render_profile(name, r))


def _require_bench_memory(names, batch_size):
    """Refuse up front a batch size that cannot fit in memory on a host backend (slow backends
    time a single image; a device backend reports its own memory)."""
    from microconv.letters.model import ConvoAlphabetModel, require_graph_memory

    for name in names:
        if registry.unavailable_reason(name) is None:
            be = registry.get(name)
            if be.host_memory and not be.slow:
                require_graph_memory(ConvoAlphabetModel(be), batch_size, train=True)


# --- data --------------------------------------------------------------------------------------

def _data_folder(folder, dataset):
    """The folder the user gave, else the one with the default search finds, else a DataError."""
    from microconv.letters.data import default_cache_dir, find_data_dir

    if folder is not None:
        return folder
    found = find_data_dir(None, dataset)
    if found is None:
        raise DataError(f"no EMNIST {dataset} files found in $MICROCONV_DATA or "
                        f"{default_cache_dir()}; pass a folder or run 'microconv data download'")
    return found


def _sample_letters(folder, dataset, count):
    """One test image for each of the first ``count`` classes, drawn as half-block art."""
    from microconv.cli.viz import letter_art
    from microconv.letters.data import class_names, load_emnist

    images, labels = load_emnist(folder, "test", dataset)
    names = class_names(dataset)
    panels = []
    for label in range(min(count, len(names))):
        where = np.flatnonzero(labels == label)
        if len(where):
            panels.append(Panel(letter_art(images[where[0]]), title=names[label], expand=False))
    return panels


@data_app.command("info")
def data_info(
    folder: DataFolderArgument = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="Only this EMNIST split (default: every split present).")] = None,
    samples: Annotated[int, typer.Option(
        min=0, help="Letters drawn in the terminal.")] = 4,
    as_json: JsonOption = False,
):
    """What a data folder holds: images per class, an orientation check, a few letters."""
    from microconv.letters.data import describe_data_dir

    folder = _data_folder(folder, dataset or "letters")
    info = describe_data_dir(folder, dataset)
    if as_json:
        _print_json(info)
        return
    console = _console()
    for name, entry in info["datasets"].items():
        table = Table(title=f"EMNIST {name} in {escape(str(folder))}", title_justify="left")
        table.add_column("split", style="bold")
        table.add_column("images", justify="right")
        table.add_column("per class (min-max)", justify="right")
        table.add_column("orientation")
        for split, s in entry["splits"].items():
            if s.get("missing"):
                table.add_row(split, "[red]missing[/]", "", "")
                continue
            counts = list(s["per_class"].values())
            table.add_row(split, f"{s['count']:,}", f"{min(counts):,}-{max(counts):,}",
                          f"{s['orientation']} (vertical-stroke ratio "
                          f"{s['vertical_stroke_ratio']})")
        console.print(table)
        test = entry["splits"].get("test", {})
        if test and not test.get("missing"):
            console.print(_letter_grid("test images per class", test["per_class"], str))
            if samples:
                console.print(Columns(_sample_letters(folder, name, samples)))


@data_app.command("verify")
def data_verify(
    folder: DataFolderArgument = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="Only this EMNIST split (default: every split present).")] = None,
    as_json: JsonOption = False,
):
    """Check every EMNIST file: structure, sizes and SHA-256 against known files."""
    from microconv.letters.data import verify_data_dir

    folder = _data_folder(folder, dataset or "letters")
    result = verify_data_dir(folder, dataset)
    if as_json:
        _print_json(result)
    else:
        table = Table(title=f"files in {escape(str(folder))}", title_justify="left")
        table.add_column("file", style="bold", overflow="fold")
        table.add_column("bytes", justify="right")
        table.add_column("sha256")
        table.add_column("check")
        for f in result["files"]:
            check = "[green]ok[/]" if f["ok"] else f"[red]{escape(f['problem'] or 'bad')}[/]"
            if f.get("known"):
                check += " [dim](known file)[/]"
            table.add_row(escape(f["name"]), f"{f.get('size', 0):,}",
                          (f.get("sha256") or "")[:16], check)
        _console().print(table)
    if not result["ok"]:
        bad = sum(not f["ok"] for f in result["files"])
        raise DataError(f"{bad} of {len(result['files'])} files in {folder} failed the check")


@data_app.command("download")
def data_download(
    dest: Annotated[Optional[Path], typer.Argument(
        help="Where to put the files (default: ~/.cache/microconv/emnist).",
        show_default=False)] = None,
    url: Annotated[Optional[str], typer.Option(
        help="Archive to fetch instead of NIST's gzip.zip (also file:// URLs).")] = None,
    sha256: Annotated[Optional[str], typer.Option(
        help="Expected SHA-256 of the archive.")] = None,
    as_json: JsonOption = False,
):
    """Download EMNIST and unpack the letters files.

    The archive is about 560 MB; an interrupted download resumes, and the archive is
    checksummed before anything is unpacked.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from microconv.letters import download
    from microconv.letters.data import default_cache_dir

    dest = dest or default_cache_dir()
    url = url or download.OFFICIAL_URL
    console = _console()
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=as_json or not console.is_terminal) as bar:
        task = bar.add_task("download", total=None)

        def progress(done, total):
            bar.update(task, completed=done, total=total)

        result = download.download_emnist(dest, url=url, progress=progress,
                                          expected_sha256=sha256)
    if as_json:
        _print_json(result)
        return
    if result.get("unchecked"):
        console.print(f"[yellow]note: {escape(result['unchecked'])}[/]")
    if result.get("already_present"):
        console.print(f"the letters are already in [bold]{escape(str(dest))}[/]")
    else:
        console.print(f"unpacked {len(result['files'])} files into "
                      f"[bold]{escape(str(dest))}[/] (archive sha256 {result['archive_sha256']})")


# --- report, graph, import-seed ----------------------------------------------------------------

@app.command()
def report(
    database: Annotated[Path, typer.Argument(
        help="The SQLite file written by [bold]microconv train --metrics[/].",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for the PNG charts.")] = Path("report"),
    run: Annotated[Optional[int], typer.Option(help="Run id (default: the latest).")] = None,
):
    """PNG charts of a training run from its metrics database.

    Loss and accuracy over time, and the test confusion matrix as a heatmap. Needs
    matplotlib: pip install 'microconv\\[report]'.
    """
    from microconv.cli.report import write_report

    written = write_report(database, out, run_id=run)
    console = _console()
    for path in written:
        console.print(f"wrote [bold]{escape(str(path))}[/]")


@app.command()
def graph(
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size of the input node.")] = 1,
    training: Annotated[bool, typer.Option(
        "--train/--inference", help="Include the loss (the graph training differentiates).")
    ] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Write the dot text to a file instead of stdout.")] = None,
):
    """The model's graph as Graphviz dot text, nodes labelled with op and shape.

    Try: microconv graph | dot -Tsvg > graph.svg
    """
    from microconv.cli.viz import model_graph_dot
    from microconv.letters.checkpoint import check_outputs, write_atomically

    check_outputs([("--out", out)])
    text = model_graph_dot(batch_size=batch_size, train=training)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_atomically(out, lambda f: f.write(text.encode("utf-8")), error=MicroconvError)
        _console().print(f"wrote [bold]{escape(str(out))}[/]")


@app.command("import-seed")
def import_seed(
    state: Annotated[Path, typer.Argument(
        help="A hello-dl .state file (legacy or HEAD layout).", show_default=False)],
    out: Annotated[Path, typer.Option(help="The checkpoint to write.")
    ] = Path("seed-letters.npz"),
    as_json: JsonOption = False,
):
    """Convert the seed's (hello-dl) trained weights into a microconv checkpoint."""
    from microconv.letters.hello_dl import import_seed as convert

    summary = convert(state, out)
    if as_json:
        _print_json(summary)
        return
    console = _console()
    console.print(f"wrote [bold]{escape(str(out))}[/] from {escape(str(state))} "
                  f"({summary['layout']} layout, {summary['parameters']:,} parameters)")
    if summary.get("caveat"):
        console.print(f"[yellow]note: {escape(summary['caveat'])}[/]")


def main():
    """The console-script entry point."""
    app(prog_name="microconv")


if __name__ == "__main__":
    sys.exit(main())
