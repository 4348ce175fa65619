"""The benchmark's result: a JSON-able dict with positive throughputs and the BLAS it ran on.

Only structure and sanity are checked here, never speed (speed lives in benchmarks/).
"""

import json

import pytest
from rich.console import Console

from microconv import MicroconvError
from microconv.cli.bench import (
    profile_step,
    render_bench,
    render_profile,
    run_bench,
    time_interleaved,
)

TINY = {"batch_size": 4, "infer_batch_size": 4, "runs": 2, "warmup": 1, "min_run_seconds": 0}


@pytest.fixture(scope="module")
def result():
    return run_bench(["numpy"], compare_torch=True, **TINY)


def test_result_is_json_with_positive_throughputs(result):
    decoded = json.loads(json.dumps(result))
    numpy_entry = decoded["backends"]["numpy"]
    assert numpy_entry["train_images_per_s"] > 0 and numpy_entry["infer_images_per_s"] > 0
    for part, batch in (("train", TINY["batch_size"]), ("infer", TINY["infer_batch_size"])):
        summary = numpy_entry[part]
        assert summary["batch_size"] == batch
        assert len(summary["runs_images_per_s"]) == TINY["runs"]
        assert 0 < summary["min"] <= summary["median"] <= summary["max"]
    assert decoded["batch_size"] == 4 and decoded["runs"] == 2


def test_result_names_the_machine_and_the_blas(result):
    assert result["machine"]["cores"] >= 1 and result["machine"]["numpy"]
    blas = result["blas"]
    assert blas == "unknown" or all(
        {"internal_api", "version", "architecture", "num_threads"} <= set(lib) for lib in blas)


def test_torch_comparison_is_reported_or_explained(result):
    torch_entry = result["torch"]
    if torch_entry["available"]:
        assert torch_entry["train_images_per_s"] > 0
        assert result["ratios_to_torch"]["numpy"]["train"] > 0
    else:
        assert "PyTorch" in torch_entry["reason"]


def test_every_contender_is_timed_first_and_last_equally_often():
    """A contender always timed last (PyTorch is named last) would always meet the state the
    others left; the rounds alternate the order so that each place is shared."""
    timed = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def prepare(self):
            pass

        def time_one_run(self):
            timed.append(self.name)

        def summary(self):
            return self.name

    assert time_interleaved([Recorder("numpy"), Recorder("torch")], runs=4) == ["numpy", "torch"]
    rounds = [timed[i:i + 2] for i in range(0, len(timed), 2)]
    assert [r[0] for r in rounds].count("numpy") == [r[0] for r in rounds].count("torch") == 2


def test_threads_limit_is_recorded():
    limited = run_bench(["numpy"], threads=1, **TINY)
    assert limited["threads"] == 1
    assert all(lib["num_threads"] == 1 for lib in limited["blas"])


def test_rendering_shows_every_backend(result):
    console = Console(width=120, record=True)
    console.print(render_bench(result))
    text = console.export_text()
    assert "numpy" in text and "BLAS" in text


@pytest.mark.parametrize("bad", [{"runs": 0}, {"batch_size": -1}, {"threads": 0},
                                 {"backends": ["nonesuch"]}])
def test_bad_arguments_are_refused_in_one_line(bad):
    options = {**TINY, **bad}
    with pytest.raises(MicroconvError) as info:
        run_bench(**options)
    assert "\n" not in str(info.value)


def test_unavailable_backend_is_skipped_with_its_reason(monkeypatch):
    from microconv import backends
    monkeypatch.setattr(backends, "unavailable_reason",
                        lambda name: "no device" if name == "opencl" else None)
    monkeypatch.setattr(backends, "names", lambda: ["python", "numpy", "opencl"])
    skipped = run_bench(["opencl"], **TINY)
    assert skipped["skipped"] == {"opencl": "no device"} and skipped["backends"] == {}


def test_profile_covers_the_convolutions_and_the_engine():
    rows = profile_step("numpy", batch_size=2, steps=1)
    ops = {op: (forward, backward) for op, forward, backward in rows}
    assert ops["conv2d"][0] > 0 and ops["conv2d"][1] > 0
    assert ops["sgd_update"][0] == 0 and ops["sgd_update"][1] > 0
    assert "engine (Python)" in ops
    Console(width=120, file=None, record=True).print(render_profile("numpy", rows))


# --- time to accuracy -------------------------------------------------------------------------

# the data alone (no generated share), so the steps per epoch are as written
RACE = {"epochs": 1, "batch_size": 16, "eval_every": 2, "validation_size": 32,
        "generated_share": 0.0}


@pytest.fixture(scope="module")
def letters_folder(tmp_path_factory):
    from microconv.letters import synth
    return synth.write_emnist_files(tmp_path_factory.mktemp("letters"), 96, 48, seed=2)


@pytest.fixture(scope="module")
def race(letters_folder):
    from microconv.cli.time_to_accuracy import time_to_accuracy
    # 0% is passed at the first validation; 101% never, so those runs go to their end.
    return time_to_accuracy(letters_folder, ["numpy", "python"], compare_torch=True,
                            thresholds=(0.0, 1.01), **RACE)


def test_time_to_accuracy_records_when_each_threshold_is_passed(race):
    decoded = json.loads(json.dumps(race))
    numpy_entry = decoded["contenders"]["numpy"]
    (run,) = numpy_entry["runs"]
    assert run["passed"]["0.00"]["step"] == RACE["eval_every"]
    assert 0 < run["passed"]["0.00"]["seconds"] == numpy_entry["0.00"]["median"]
    assert run["passed"]["1.01"] is None and numpy_entry["1.01"] is None
    steps = [step for step, _, _ in run["validations"]]
    assert steps == [2, 4, 6] and all(0 <= a <= 1 for _, _, a in run["validations"])
    assert "days" in decoded["skipped"]["python"]
    torch_runs = [name for name in decoded["contenders"] if name.startswith("torch")]
    if "torch" in decoded["skipped"]:
        assert "PyTorch" in decoded["skipped"]["torch"]
    else:
        # same weights, batches and augmentation: validated at the same steps
        (torch_run,) = decoded["contenders"][torch_runs[0]]["runs"]
        assert [step for step, _, _ in torch_run["validations"]] == steps


def test_time_to_accuracy_renders_every_contender(race):
    from microconv.cli.time_to_accuracy import render_time_to_accuracy
    console = Console(width=160, record=True)
    console.print(render_time_to_accuracy(race))
    text = console.export_text()
    assert "numpy" in text and "not passed" in text and "load average" in text


def test_time_to_accuracy_from_the_command_line(letters_folder):
    from clitools import assert_one_line_error, cli
    result = cli("bench", "--time-to-accuracy", "--data-dir", letters_folder, "--batch-size",
                 "32", "--max-minutes", "0.1", "--json")
    assert result.exit_code == 0, result.output
    decoded = json.loads(result.stdout)
    assert decoded["config"]["batch_size"] == 32 and "numpy" in decoded["contenders"]
    missing = cli("bench", "--time-to-accuracy", "--data-dir", letters_folder / "nowhere")
    assert_one_line_error(missing, "nowhere", "does not exist")


def test_a_wider_torch_model_starts_as_microconv_weights_do():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional)")
    from microconv.cli.bench import torch_model
    torch.manual_seed(0)
    wide = torch_model(torch, width=2)
    convs = [layer for layer in wide if isinstance(layer, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256]
    assert wide(torch.zeros(3, 1, 28, 28)).shape == (3, 26)
    # microconv draws weights with variance 1 / inputs (LeCun), three times PyTorch's default
    weight = convs[1].weight.detach().numpy()
    inputs = 64 * 3 * 3
    assert abs(weight.var() * inputs - 1.0) < 0.05
    assert abs(weight).max() <= (3.0 / inputs) ** 0.5
