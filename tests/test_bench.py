"""The benchmark's result: a JSON-able dict with positive throughputs and the BLAS it ran on.

Only structure and sanity are checked here, never speed (speed lives in benchmarks/).
"""

import json

import pytest
from rich.console import Console

from microconv import MicroconvError
from microconv.cli.bench import profile_step, render_bench, render_profile, run_bench

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


def test_threads_limit_is_recorded():
    pytest.importorskip("threadpoolctl")
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
