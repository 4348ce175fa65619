"""OpenCL going wrong: no driver, a kernel that will not build, a device out of memory.

Every case reaches the user through the command line as one line that suggests
``--backend numpy``, exit code 1, no traceback. test_opencl.py checks the backend's own
errors; here each fault is injected where pyopencl would raise it and followed through
train, evaluate and predict. Faults on a working device need an OpenCL device (PoCL will do).
"""

import importlib
import sys

import clitools
import numpy as np
import pytest
from clitools import cli, no_emnist_env, set_env, untrained_checkpoint

from microconv import backends as registry
from optional import REQUIRE_OPENCL, import_or_skip


@pytest.fixture(autouse=True)
def fresh_backends(tmp_path, monkeypatch):
    """No cached backend objects, contexts or programs: each test opens the device anew."""
    monkeypatch.setattr(registry, "_instances", {})
    set_env(monkeypatch, no_emnist_env(tmp_path))
    for name in ("MICROCONV_OPENCL_DEVICE", "PYOPENCL_CTX"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def opencl_module(monkeypatch):
    cl = import_or_skip("pyopencl", REQUIRE_OPENCL)
    ops_opencl = importlib.import_module("microconv.backends.ops_opencl")   # what the registry uses
    monkeypatch.setattr(ops_opencl, "_contexts", {})
    monkeypatch.setattr(ops_opencl, "_programs", {})
    return cl, ops_opencl


@pytest.fixture
def device(opencl_module, monkeypatch):
    """pyopencl and the backend module, on a machine with a working OpenCL device."""
    from conftest import backend_or_skip
    backend_or_skip("opencl")
    cl, ops_opencl = opencl_module
    monkeypatch.setattr(registry, "_instances", {})       # forget what the check opened
    monkeypatch.setattr(ops_opencl, "_contexts", {})
    return opencl_module


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("model"))


def assert_one_line_error(result, *fragments):
    """One error line that also suggests the NumPy backend."""
    return clitools.assert_one_line_error(result, "--backend numpy", *fragments)


def commands(model_file, tmp_path):
    """The three commands that compute on a backend, each asked to use OpenCL."""
    return [
        ("train", "-b", "opencl", "--limit", 32, "--batch-size", 16, "--epochs", 1,
         "--validation-size", 16, "--out", tmp_path / "cl.npz", "--no-dashboard"),
        ("evaluate", model_file, "-b", "opencl", "--limit", 26),
        ("predict", model_file, tmp_path / "letter.png", "-b", "opencl"),
    ]


# --- no driver at all ----------------------------------------------------------------------------

@pytest.mark.parametrize("failure", ["empty list", "loader error"])
def test_no_opencl_platform(opencl_module, monkeypatch, model_file, tmp_path, failure):
    cl, _ = opencl_module

    def no_platforms():
        if failure == "loader error":
            raise cl.LogicError("clGetPlatformIDs", -1001, "PLATFORM_NOT_FOUND_KHR")
        return []

    monkeypatch.setattr(cl, "get_platforms", no_platforms)
    for argv in commands(model_file, tmp_path):
        assert_one_line_error(cli(*argv), "No OpenCL platform found", "pocl-opencl-icd")
    assert not (tmp_path / "cl.npz").exists()
    listing = cli("backends")
    assert listing.exit_code == 0 and "no OpenCL platform found" in listing.stdout


def test_pyopencl_missing(monkeypatch, model_file, tmp_path):
    monkeypatch.setitem(sys.modules, "pyopencl", None)          # import pyopencl fails
    for argv in commands(model_file, tmp_path)[:2]:
        assert_one_line_error(cli(*argv), "pyopencl")
    assert cli("backends").exit_code == 0


# --- faults on a working device --------------------------------------------------------------

def test_a_kernel_that_fails_to_build(device, monkeypatch, model_file, tmp_path):
    _, ops_opencl = device
    monkeypatch.setattr(ops_opencl, "_load_source", lambda filename: "this is not OpenCL C;")
    for argv in commands(model_file, tmp_path)[:2]:
        assert_one_line_error(cli(*argv), "failed to build", "Build log")


def test_a_device_that_cannot_be_opened(device, monkeypatch, model_file, tmp_path):
    cl, _ = device

    def refuse(*args, **kwargs):
        raise cl.RuntimeError("clCreateContext", -2, "DEVICE_NOT_AVAILABLE")

    monkeypatch.setattr(cl, "Context", refuse)
    assert_one_line_error(cli(*commands(model_file, tmp_path)[1]), "cannot open device")


class ExhaustedPool:
    """pyopencl's memory pool on a device whose memory is gone after ``room`` buffers."""

    room = 0

    def __init__(self, allocator):
        self.allocator, self.count = allocator, 0

    def allocate(self, nbytes):
        import pyopencl as cl
        self.count += 1
        if self.count > self.room:
            raise cl.MemoryError("clCreateBuffer", -4, "MEM_OBJECT_ALLOCATION_FAILURE")
        return self.allocator(nbytes)

    def free_held(self):
        pass


@pytest.mark.parametrize("room", [0, 40])
def test_out_of_device_memory(device, monkeypatch, model_file, tmp_path, room):
    """No room at all, or room for the weights but not for a batch's activations."""
    cl, _ = device
    monkeypatch.setattr(ExhaustedPool, "room", room)
    monkeypatch.setattr(cl.tools, "MemoryPool", ExhaustedPool)
    for argv in commands(model_file, tmp_path)[:2]:
        assert_one_line_error(cli(*argv), "out of memory", "--batch-size")
    assert not (tmp_path / "cl.npz").exists()


@pytest.mark.parametrize("code, name, fragment", [
    (-5, "OUT_OF_RESOURCES", "out of memory"),
    (-6, "OUT_OF_HOST_MEMORY", "out of memory"),
    (-36, "INVALID_COMMAND_QUEUE", "copy to the device failed"),
])
def test_copies_that_fail(device, monkeypatch, model_file, tmp_path, code, name, fragment):
    cl, _ = device

    def failing_copy(*args, **kwargs):
        raise cl.RuntimeError("clEnqueueWriteBuffer", code, name)

    monkeypatch.setattr(cl, "enqueue_copy", failing_copy)
    assert_one_line_error(cli(*commands(model_file, tmp_path)[1]), fragment)


def test_a_kernel_launch_that_fails(device, monkeypatch):
    """The device fails mid-computation: the library raises a BackendError, not pyopencl's."""
    cl, ops_opencl = device
    from microconv.errors import BackendError
    backend = registry.get("opencl")
    a = backend.from_numpy(np.ones(4, np.float32))
    kernels = backend._kernels("float32")

    def lost(*args, **kwargs):
        raise cl.RuntimeError("clEnqueueNDRangeKernel", -9999, "UNKNOWN")

    monkeypatch.setitem(kernels, "add", lost)
    with pytest.raises(BackendError, match="kernel add failed .*--backend numpy"):
        backend.add(a, a)
