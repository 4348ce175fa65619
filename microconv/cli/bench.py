"""Throughput benchmarks users can trust: what is timed, how often, and on which BLAS kernel.

One training step is exactly what training does: assign a preprocessed batch and its one-hot
labels, forward and backward through the full ConvoAlphabetModel, read the loss, and take an
SGD step (momentum 0.9). Inference is the same model without the loss, at batch 256, with the
log-probabilities copied back to the host. Each backend is warmed up first (graph built,
buffers allocated, caches filled), then timed over ``runs`` runs of several steps; we report
the median run and the fastest and slowest ones. The runs of all backends (and PyTorch) are
interleaved, in an order that reverses every round, so a change in the machine's load during
the benchmark hits them alike and none is always timed first or last.

PyTorch, when it happens to be importable, runs the same architecture with the same weights,
batch, thread count and optimiser in the same process, so the ratios compare like with like.
It is never a dependency: without it the result says why there is no comparison.

The BLAS library decides most of the speed, so the result names it (through threadpoolctl;
'unknown' for a BLAS it does not recognise). The NumPy backend uses as many threads as BLAS
may, so ``threads`` sets both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import time

import numpy as np
import threadpoolctl

from microconv import backends as backend_registry
from microconv.engine.optim import SGD
from microconv.errors import MicroconvError
from microconv.letters.model import INIT_GAIN, ConvoAlphabetModel, LetterGraph
from microconv.letters.preprocess import Preprocessing

INFER_BATCH_SIZE = 256
LEARNING_RATE = 0.01
MOMENTUM = 0.9
MIN_RUN_SECONDS = 0.3          # a timed run repeats steps until it lasts about this long
DATA_POOL_BATCHES = 4          # distinct batches cycled through, so no step sees cached input


# --- the machine and its BLAS --------------------------------------------------------------

def machine_info():
    """CPU, core count, Python and NumPy versions, and the BLAS-related environment."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        # Other programs competing for the cores change every number; say how busy it was.
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "env": {name: os.environ.get(name) for name in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                 "OMP_NUM_THREADS")},
    }


def blas_info():
    """The BLAS libraries loaded in this process, or 'unknown' when threadpoolctl finds none."""
    keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
    found = []
    for lib in threadpoolctl.threadpool_info():
        if lib.get("user_api") == "blas":
            entry = {key: lib.get(key, "unknown") for key in keys}
            entry["library"] = os.path.basename(lib.get("filepath", ""))
            found.append(entry)
    return found or "unknown"


def _require_positive_int(value, what):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise MicroconvError(f"bench: {what} must be a positive integer, got {value!r}")


@contextlib.contextmanager
def blas_threads(threads):
    """Limit the BLAS thread pools to ``threads`` inside the block (no limit for None)."""
    if threads is None:
        yield
        return
    _require_positive_int(threads, "threads")
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        yield


def blas_thread_count(blas):
    """The thread count of the first BLAS in ``blas_info()``'s answer, else the core count."""
    if isinstance(blas, list) and blas:
        return blas[0]["num_threads"]
    return os.cpu_count()


# --- the benchmark scripts in benchmarks/ ---------------------------------------------------

def script_parser(description):
    """The options every benchmark script takes: backend, batch size, BLAS threads, JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def print_result(result, as_json, summary):
    """A script's result: the whole of it as one JSON object, or its one-line ``summary``."""
    print(json.dumps(result, indent=2) if as_json else summary)


# --- timing ----------------------------------------------------------------------------------

class Contender:
    """One thing being timed: a step, the images it handles, and how to wait for its device.

    ``prepare`` warms it up and picks how many steps make one run last ``min_seconds``;
    ``time_one_run`` adds one run's throughput. Runs of all contenders are interleaved (see
    ``time_interleaved``) so that a change in the machine's load hits them alike.
    """

    def __init__(self, step, images_per_step, sync=None, warmup=2, min_seconds=None):
        self.step = step
        self.images_per_step = images_per_step
        self.sync = sync or (lambda: None)
        self.warmup = warmup
        self.min_seconds = MIN_RUN_SECONDS if min_seconds is None else min_seconds
        self.steps_per_run = None
        self.rates = []

    def prepare(self):
        if self.steps_per_run is not None:
            return
        for _ in range(self.warmup):
            self.step()
        self.sync()
        start = time.perf_counter()
        self.step()
        self.sync()
        one_step = max(time.perf_counter() - start, 1e-9)
        self.steps_per_run = max(1, math.ceil(self.min_seconds / one_step))

    def time_one_run(self):
        start = time.perf_counter()
        for _ in range(self.steps_per_run):
            self.step()
        self.sync()
        elapsed = time.perf_counter() - start
        self.rates.append(self.steps_per_run * self.images_per_step / elapsed)

    def summary(self):
        median = statistics.median(self.rates)
        return {
            "batch_size": self.images_per_step,
            "steps_per_run": self.steps_per_run,
            "runs_images_per_s": list(self.rates),
            "median": median,
            "min": min(self.rates),
            "max": max(self.rates),
            "ms_per_step": 1000.0 * self.images_per_step / median,
            "seconds_per_image": 1.0 / median,
        }


def turns(contenders, runs):
    """The contenders in the order of each of ``runs`` rounds: forwards, then backwards, and
    so on. A contender timed right after another may find the caches, the CPU's clock or the
    other program's load in a state the other left; alternating the order gives every
    contender each place equally often, so no one is always timed first or always last."""
    for round_index in range(runs):
        yield contenders if round_index % 2 == 0 else contenders[::-1]


def time_interleaved(contenders, runs):
    """Prepare every contender, then time one run of each, ``runs`` rounds; their summaries."""
    for contender in contenders:
        contender.prepare()
    for round_order in turns(contenders, runs):
        for contender in round_order:
            contender.time_one_run()
    return [contender.summary() for contender in contenders]


def cpu_ms_per_step(contenders, runs, steps=10):
    """CPU milliseconds (user and system, every thread of this process) of one step of each
    contender: the median of ``runs`` runs of ``steps`` steps, the contenders' runs interleaved.
    On a machine that other programs keep busy, wall times swing by a factor of several and
    CPU time much less: it says how much work a step is, not how long it took to get the
    cores."""
    for contender in contenders:
        contender.prepare()
    spent = {id(contender): [] for contender in contenders}
    for round_order in turns(contenders, runs):
        for contender in round_order:
            start = time.process_time()
            for _ in range(steps):
                contender.step()
            contender.sync()
            spent[id(contender)].append(1000 * (time.process_time() - start) / steps)
    return [statistics.median(spent[id(contender)]) for contender in contenders]


def random_letters(count, rng, classes=ConvoAlphabetModel.classes):
    """``count`` random uint8 28x28 images and their labels, drawn from ``rng``; the pixels'
    values do not change the work a step does."""
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, classes, size=count)
    return images, labels


def random_batches(count, batch_size, seed=0, classes=ConvoAlphabetModel.classes):
    """``count`` batches of random uint8 letters, preprocessed like real ones, with labels."""
    rng = np.random.default_rng(seed)
    prep = Preprocessing()
    batches = []
    for _ in range(count):
        images, labels = random_letters(batch_size, rng, classes)
        batches.append((prep.apply(images), labels))
    return batches


class TrainingStep:
    """One microconv training step on a fixed graph, fed new batches through leaf assignment."""

    def __init__(self, backend, batch_size, seed=0, dtype="float32"):
        self.model = ConvoAlphabetModel(backend, dtype=dtype, seed=seed)
        self.graph = LetterGraph(self.model, batch_size, train=True)
        self.feed = self.graph.feed
        self.optimizer = SGD(self.model.named_parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def __call__(self, images, labels):
        self.feed(images, labels)
        self.graph.loss.backward()
        loss = self.graph.loss.item()
        self.optimizer.step()
        return loss

    def sync(self):
        """Wait for the device: read back one parameter the last update wrote."""
        self.model.fc3.bias.numpy()


class InferenceStep:
    def __init__(self, model, batch_size):
        self.graph = LetterGraph(model, batch_size)

    def __call__(self, images):
        self.graph.feed(images)
        return self.graph.log_probs.numpy()


def cycle(items):
    """A function returning the items in turn, round and round."""
    index = 0

    def take():
        nonlocal index
        item = items[index % len(items)]
        index += 1
        return item
    return take


def backend_contenders(name, batch_size, infer_batch_size, warmup=2, seed=0,
                       min_seconds=None):
    """The training and the inference step of one microconv backend, ready to be timed."""
    be = backend_registry.get(name)
    train = TrainingStep(be, batch_size, seed=seed)
    train_data = cycle(random_batches(DATA_POOL_BATCHES, batch_size, seed))
    infer = InferenceStep(train.model, infer_batch_size)
    infer_data = cycle(random_batches(DATA_POOL_BATCHES, infer_batch_size, seed + 1))
    return (be.describe(),
            Contender(lambda: train(*train_data()), batch_size, train.sync, warmup, min_seconds),
            Contender(lambda: infer(infer_data()[0]), infer_batch_size, None, warmup,
                      min_seconds))


# --- PyTorch, when it happens to be installed -----------------------------------------------

def torch_model(torch, weights=None, width=1):
    """The ConvoAlphabetModel in PyTorch layers, optionally with microconv's weights.

    ``width`` multiplies the channels and hidden units of every layer (1: the model itself;
    microconv's weights fit only that one). Without weights, each layer starts as microconv's
    do: PyTorch's default draw, the weights times INIT_GAIN.
    """
    nn = torch.nn
    c1, c2, c3, f1, f2 = (round(width * n) for n in (32, 64, 128, 64, 128))
    model = nn.Sequential(
        nn.Conv2d(1, c1, 3), nn.MaxPool2d(2, ceil_mode=True), nn.GELU(),
        nn.Conv2d(c1, c2, 3), nn.MaxPool2d(2, ceil_mode=True), nn.GELU(),
        nn.Conv2d(c2, c3, 3), nn.MaxPool2d(2, ceil_mode=True), nn.GELU(),
        nn.Flatten(),
        nn.Linear(4 * c3, f1), nn.GELU(),
        nn.Linear(f1, f2), nn.GELU(),
        nn.Linear(f2, 26), nn.LogSoftmax(dim=1),
    )
    if weights is None:
        with torch.no_grad():
            for layer in model:
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight *= INIT_GAIN
    if weights is not None:
        layer_index = {"c1": 0, "c2": 3, "c3": 6, "fc1": 10, "fc2": 12, "fc3": 14}
        state = {}
        for name, array in weights.items():
            layer, kind = name.split(".")
            state[f"{layer_index[layer]}.{kind}"] = torch.from_numpy(np.array(array))
        model.load_state_dict(state)
    return model


def torch_contenders(batch_size, infer_batch_size, warmup=2, seed=0, min_seconds=None):
    """The same model, batch and optimiser in PyTorch, ready to be timed; or why not.

    Returns (info, train contender, infer contender), or (info, None, None) when PyTorch is
    not importable. The caller sets PyTorch's thread count.
    """
    try:
        import torch
    except ImportError as exc:
        return {"available": False, "reason": f"PyTorch is not importable ({exc})"}, None, None
    torch.manual_seed(seed)
    weights = ConvoAlphabetModel("numpy", seed=seed).state_dict()
    model = torch_model(torch, weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    train_data = cycle([(torch.from_numpy(x), torch.from_numpy(y))
                        for x, y in random_batches(DATA_POOL_BATCHES, batch_size, seed)])

    def train_step():
        x, y = train_data()
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.nll_loss(model(x), y)
        loss.backward()
        loss_value = loss.item()
        optimizer.step()
        return loss_value

    infer_data = cycle([torch.from_numpy(x) for x, _ in
                        random_batches(DATA_POOL_BATCHES, infer_batch_size, seed + 1)])

    def infer_step():
        with torch.inference_mode():
            return model(infer_data()).numpy()

    info = {"available": True, "version": torch.__version__,
            "device": f"PyTorch {torch.__version__} on the CPU"}
    return (info, Contender(train_step, batch_size, None, warmup, min_seconds),
            Contender(infer_step, infer_batch_size, None, warmup, min_seconds))


@contextlib.contextmanager
def torch_threads(threads):
    """Set PyTorch's intra-op thread count inside the block, when PyTorch is importable."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- the whole benchmark ------------------------------------------------------------------

def run_bench(backends=("numpy",), batch_size=64, threads=None, runs=5, compare_torch=False,
              python_images=1, infer_batch_size=INFER_BATCH_SIZE, warmup=2, seed=0,
              min_run_seconds=None):
    """Measure training and inference throughput; returns a JSON-able dict.

    ``backends``: microconv backend names (unavailable ones are listed under ``skipped``
    with the reason). The python backend trains and infers on ``python_images`` images per
    step, one warm-up step, since it needs seconds per image. ``threads`` limits the BLAS
    thread pools (and PyTorch's) for the whole run. ``min_run_seconds`` is how long each
    timed run lasts at least (0: one step per run, for tests).
    """
    backends = list(backends)
    for value, what in ((batch_size, "batch_size"), (runs, "runs"),
                        (python_images, "python_images"), (infer_batch_size, "infer_batch_size")):
        _require_positive_int(value, what)
    known = backend_registry.names()
    for name in backends:
        if name not in known:
            raise MicroconvError(f"bench: unknown backend '{name}'; known: {', '.join(known)}")

    result = {
        "batch_size": batch_size,
        "infer_batch_size": infer_batch_size,
        "runs": runs,
        "threads_requested": threads,
        "machine": machine_info(),
        "backends": {},
        "skipped": {},
    }
    with blas_threads(threads):
        blas = blas_info()
        used_threads = threads if threads is not None else blas_thread_count(blas)
        result["blas"] = blas
        result["threads"] = used_threads
        contenders = {}                          # name -> (device, train, infer)
        for name in backends:
            reason = backend_registry.unavailable_reason(name)
            if reason is not None:
                result["skipped"][name] = reason
                continue
            small = backend_registry.get(name).slow      # seconds per image: a few, one warm-up
            try:
                contenders[name] = backend_contenders(
                    name, python_images if small else batch_size,
                    python_images if small else infer_batch_size, warmup=1 if small else warmup,
                    seed=seed, min_seconds=0 if small else min_run_seconds)
                contenders[name][1].prepare()    # fails here if a driver cannot build kernels
            except MicroconvError as exc:
                result["skipped"][name] = f"failed: {str(exc).splitlines()[0]}"
                contenders.pop(name, None)
        if compare_torch:
            info, torch_train, torch_infer = torch_contenders(
                batch_size, infer_batch_size, warmup=warmup, seed=seed,
                min_seconds=min_run_seconds)
            result["torch"] = info
            if info["available"]:
                info["threads"] = used_threads
                contenders["torch"] = (info["device"], torch_train, torch_infer)
        with torch_threads(used_threads) if compare_torch else contextlib.nullcontext():
            train = time_interleaved([c[1] for c in contenders.values()], runs)
            infer = time_interleaved([c[2] for c in contenders.values()], runs)
        for (name, (device, _, _)), train_summary, infer_summary in zip(
                contenders.items(), train, infer):
            entry = {"device": device,
                     "train_images_per_s": train_summary["median"],
                     "infer_images_per_s": infer_summary["median"],
                     "train": train_summary, "infer": infer_summary}
            if name == "torch":
                result["torch"].update(entry)
            else:
                result["backends"][name] = entry
        if compare_torch and result["torch"]["available"]:
            torch_entry = result["torch"]
            result["ratios_to_torch"] = {
                name: {"train": entry["train_images_per_s"] / torch_entry["train_images_per_s"],
                       "infer": entry["infer_images_per_s"] / torch_entry["infer_images_per_s"]}
                for name, entry in result["backends"].items()
            }
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return result


# --- where the time goes --------------------------------------------------------------------

class _TimedBackend:
    """Wraps a backend so that every primitive call adds its wall time to a table.

    Time is booked under the current ``phase`` ('forward' or 'backward'); the optimiser update
    is booked under 'backward'. A backend that computes asynchronously may offer ``finish()``
    (or an OpenCL ``queue`` with one); it is called after every primitive so that the time lands
    on the primitive that caused it, not on the next host copy.
    """

    def __init__(self, inner):
        self._inner = inner
        self.name = inner.name
        self.phase = "forward"
        self.times = {}
        queue = getattr(inner, "queue", None)
        self._finish = getattr(inner, "finish", None) or getattr(queue, "finish", None)
        from microconv.backends.base import PRIMITIVES
        for primitive in PRIMITIVES:
            setattr(self, primitive, self._timed(primitive, getattr(inner, primitive)))

    def _timed(self, primitive, method):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = method(*args, **kwargs)
            if self._finish is not None:
                self._finish()
            key = (primitive, self.phase)
            self.times[key] = self.times.get(key, 0.0) + time.perf_counter() - start
            return out
        return call

    def describe(self):
        return self._inner.describe()

    def __getattr__(self, attribute):
        return getattr(self._inner, attribute)


def _op_of(primitive):
    """The model-level op a primitive serves: conv2d_backward belongs to conv2d."""
    return primitive[:-len("_backward")] if primitive.endswith("_backward") else primitive


def profile_step(backend="numpy", batch_size=64, steps=5, seed=0, threads=None):
    """Per-op time of one training step: a list of (op name, forward ms, backward ms).

    Averages ``steps`` steps after one warm-up step. The backward column includes the
    optimiser update (op 'sgd_update'). The last row, 'engine (Python)', is the step's wall
    time not spent inside any primitive: graph walking, stamps, assignment, bookkeeping.
    ``threads`` limits the BLAS thread pools as in ``run_bench``.
    """
    if not isinstance(steps, int) or steps < 1:
        raise MicroconvError(f"profile: steps must be a positive integer, got {steps!r}")
    with blas_threads(threads):
        return _profile_step(backend, batch_size, steps, seed)


def _profile_step(backend, batch_size, steps, seed):
    inner = backend_registry.resolve(backend)
    timed = _TimedBackend(inner)
    train = TrainingStep(timed, batch_size, seed=seed)
    data = cycle(random_batches(DATA_POOL_BATCHES, batch_size, seed))
    wall = {"forward": 0.0, "backward": 0.0}

    def one_step():
        images, labels = data()
        start = time.perf_counter()
        timed.phase = "forward"
        train.feed(images, labels)
        train.graph.loss.realize()
        middle = time.perf_counter()
        timed.phase = "backward"
        train.graph.loss.backward()
        train.graph.loss.item()
        train.optimizer.step()
        train.sync()
        end = time.perf_counter()
        wall["forward"] += middle - start
        wall["backward"] += end - middle

    one_step()
    timed.times.clear()
    wall.update(forward=0.0, backward=0.0)
    for _ in range(steps):
        one_step()

    table = {}
    for (primitive, phase), seconds in timed.times.items():
        row = table.setdefault(_op_of(primitive), {"forward": 0.0, "backward": 0.0})
        row[phase] += seconds
    rows = [(op, 1000.0 * t["forward"] / steps, 1000.0 * t["backward"] / steps)
            for op, t in table.items()]
    rows.sort(key=lambda row: row[1] + row[2], reverse=True)
    in_primitives = {phase: sum(s for (_, p), s in timed.times.items() if p == phase)
                     for phase in ("forward", "backward")}
    rows.append(("engine (Python)",
                 1000.0 * max(0.0, wall["forward"] - in_primitives["forward"]) / steps,
                 1000.0 * max(0.0, wall["backward"] - in_primitives["backward"]) / steps))
    return rows


# --- rendering --------------------------------------------------------------------------------

def _blas_line(blas):
    if not isinstance(blas, list):
        return "BLAS: unknown (threadpoolctl does not recognise it)"
    return "; ".join(f"BLAS: {b['internal_api']} {b['version']}, kernel {b['architecture']}, "
                     f"{b['num_threads']} threads" for b in blas)


def format_rate(rate):
    """Images per second: whole numbers from 10 up, two decimals below (the python backend)."""
    return f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}"


def rate_cell(summary, dash="-"):
    """The median rate, then the slowest and fastest run: '1,234 (1,100-1,300)'."""
    return (f"{format_rate(summary['median'])} "
            f"({format_rate(summary['min'])}{dash}{format_rate(summary['max'])})")


def render_bench(result):
    """A Rich renderable: one table row per backend (and PyTorch), plus machine and BLAS."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ratios = result.get("ratios_to_torch", {})
    table = Table(title=f"Training (batch {result['batch_size']}) and inference "
                        f"(batch {result['infer_batch_size']}), images/s: median (min-max) "
                        f"of {result['runs']} runs")
    table.add_column("backend")
    table.add_column("train img/s", justify="right")
    table.add_column("ms/step", justify="right")
    table.add_column("infer img/s", justify="right")
    if ratios:
        table.add_column("train vs torch", justify="right")
        table.add_column("infer vs torch", justify="right")
    for name, entry in result["backends"].items():
        label = name
        if entry["train"]["batch_size"] != result["batch_size"]:
            label += f" ({entry['train']['batch_size']} img/step)"
        row = [label, rate_cell(entry["train"]), f"{entry['train']['ms_per_step']:,.1f}",
               rate_cell(entry["infer"])]
        if ratios:
            row += [f"{ratios[name]['train']:.2f}x", f"{ratios[name]['infer']:.2f}x"]
        table.add_row(*row)
    torch_entry = result.get("torch")
    if torch_entry and torch_entry["available"]:
        row = [f"torch {torch_entry['version']}", rate_cell(torch_entry["train"]),
               f"{torch_entry['train']['ms_per_step']:,.1f}", rate_cell(torch_entry["infer"])]
        if ratios:
            row += ["1.00x", "1.00x"]
        table.add_row(*row)

    notes = []
    for name, entry in result["backends"].items():
        if entry["train"]["batch_size"] != result["batch_size"]:
            notes.append(f"{name}: {entry['train']['seconds_per_image']:.2f} s per image "
                         f"training, {entry['infer']['seconds_per_image']:.2f} s inference")
    for name, reason in result["skipped"].items():
        notes.append(f"{name}: skipped, {reason}")
    if torch_entry and not torch_entry["available"]:
        notes.append(f"torch: no comparison, {torch_entry['reason']}")
    machine = result["machine"]
    notes.append(f"{machine['cpu']}, {machine['cores']} cores; Python {machine['python']}, "
                 f"NumPy {machine['numpy']}; {result['threads']} threads")
    notes.append(_blas_line(result["blas"]))
    coretype = machine["env"].get("OPENBLAS_CORETYPE")
    if coretype:
        notes.append(f"OPENBLAS_CORETYPE={coretype} is set; it may force a slower kernel "
                     f"(run with env -u OPENBLAS_CORETYPE to compare)")
    return Group(table, *(Text(note, style="dim") for note in notes))


def render_profile(backend, rows):
    """A Rich table of ``profile_step`` rows, slowest first, with the share of the step."""
    from rich.table import Table

    total = sum(f + b for _, f, b in rows) or 1.0
    table = Table(title=f"One training step on {backend}, ms (backward includes the update)")
    table.add_column("op")
    table.add_column("forward", justify="right")
    table.add_column("backward", justify="right")
    table.add_column("share", justify="right")
    for op, forward, backward in rows:
        table.add_row(op, f"{forward:.2f}", f"{backward:.2f}",
                      f"{100 * (forward + backward) / total:.0f}%")
    table.add_row("total", f"{sum(f for _, f, _ in rows):.2f}",
                  f"{sum(b for _, _, b in rows):.2f}", "100%", style="bold")
    return table
