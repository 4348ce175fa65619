"""Every OpenCL kernel run on Oclgrind, the OpenCL device simulator, with its checks on.

PoCL forgives what a GPU does not: a read past a buffer's end returns whatever lies there,
races between work-items rarely show. Oclgrind interprets each kernel work-item by work-item
and reports out-of-bounds accesses (always on), data races (OCLGRIND_DATA_RACES), reads of
uninitialised memory (OCLGRIND_UNINITIALIZED) and API misuse (OCLGRIND_CHECK_API). Every
kernel runs here, on the simple and the fast path, at small ragged sizes (not multiples of the
8x16 tile, pooling windows that do not divide the image), its results checked against NumPy;
any report fails the test.

Oclgrind has to be the only OpenCL platform from the moment the process starts, so each check
runs this file as a script in a subprocess whose OCL_ICD_VENDORS names a folder holding one
.icd file for Oclgrind. The tests skip where Oclgrind (Debian's `oclgrind`) or pyopencl is
missing, unless MICROCONV_REQUIRE_OCLGRIND=1 (CI), where that is a failure.

Two runs, because Oclgrind's uninitialised-value plugin stops at LLVM's `freeze` instruction,
which the optimiser emits for a division and a remainder of the same numbers (docs/opencl.md):
- "as compiled": the kernels built as a device builds them, memory, race and API checks;
- "unoptimised": built with -cl-opt-disable, the same checks plus uninitialised reads; and
  two training steps on the backend with its device limits capped to smaller devices'
  (tests/test_opencl.py runs the same on PoCL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from optional import REQUIRE_OCLGRIND, skip_unless_required

# Where distributions install Oclgrind's ICD library.
OCLGRIND_LIBRARIES = ("/usr/lib/oclgrind/liboclgrind-rt-icd.so",
                      "/usr/lib64/oclgrind/liboclgrind-rt-icd.so",
                      "/usr/local/lib/liboclgrind-rt-icd.so")


def oclgrind_library():
    """The path of Oclgrind's ICD library, or a skip (under MICROCONV_REQUIRE_OCLGRIND=1, a
    failure)."""
    found = next((path for path in OCLGRIND_LIBRARIES if Path(path).is_file()), None)
    missing = None
    if found is None:
        missing = "Oclgrind is not installed (Debian/Ubuntu: apt-get install oclgrind)"
    else:
        try:
            import pyopencl  # noqa: F401
        except ImportError as exc:
            missing = f"pyopencl cannot be imported ({exc})"
    if missing:
        skip_unless_required(REQUIRE_OCLGRIND, missing)
    return found


def run_on_oclgrind(tmp_path, mode, checks):
    """Run this file's worker in ``mode`` on Oclgrind with ``checks`` (environment variables);
    the worker's summary, after asserting it succeeded and Oclgrind reported nothing."""
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "oclgrind.icd").write_text(oclgrind_library() + "\n")
    log = tmp_path / "oclgrind.log"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OCLGRIND_", "PYOPENCL_", "MICROCONV_OPENCL"))}
    env.update(checks, OCL_ICD_VENDORS=str(vendors), OCLGRIND_LOG=str(log),
               PYOPENCL_NO_CACHE="1")        # a cached binary would skip OCLGRIND_BUILD_OPTIONS
    result = subprocess.run([sys.executable, __file__, mode], env=env, capture_output=True,
                            text=True, timeout=600)
    reports = log.read_text() if log.exists() else ""
    assert result.returncode == 0, f"worker failed:\n{result.stderr[-6000:]}\n{reports[:6000]}"
    assert reports.strip() == "", f"Oclgrind reported:\n{reports[:6000]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


MEMORY_RACES_API = {"OCLGRIND_DATA_RACES": "1", "OCLGRIND_CHECK_API": "1"}


def test_every_kernel_as_compiled(tmp_path):
    summary = run_on_oclgrind(tmp_path, "kernels", MEMORY_RACES_API)
    assert summary["platform"] == "Oclgrind"
    assert summary["missed"] == [], "kernels the sweep never ran"


def test_every_kernel_unoptimised_with_uninitialised_reads_and_small_limits(tmp_path):
    summary = run_on_oclgrind(tmp_path, "kernels+limits", {
        **MEMORY_RACES_API, "OCLGRIND_UNINITIALIZED": "1",
        "OCLGRIND_BUILD_OPTIONS": "-cl-opt-disable"})
    assert summary["platform"] == "Oclgrind"
    assert summary["missed"] == [], "kernels the sweep never ran"
    assert summary["small devices"] == 2


# --- the worker, run as a script on Oclgrind -----------------------------------------------

class FreshBuffers:
    """An allocator that never reuses memory, so that Oclgrind sees every buffer start
    uninitialised. The backend's memory pool hands back blocks written earlier; and Oclgrind
    gives a released buffer's number to the next buffer created while its uninitialised-value
    plugin keeps the old buffer's record (its size, what was written), so every buffer is
    kept until the process ends."""

    def __init__(self, cl, context):
        self.cl, self.context = cl, context
        self.kept = []

    def allocate(self, nbytes):
        buffer = self.cl.Buffer(self.context, self.cl.mem_flags.READ_WRITE, nbytes)
        self.kept.append(buffer)
        return buffer

    def free_held(self):
        pass


def quiet_nvidia_probe():
    """pyopencl asks every device for CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV (0x4000) to find out
    whether it is an NVIDIA GPU, when it builds a program and when it sets up a kernel, and
    treats the error as "no". Oclgrind's API check rightly reports that query; ask only devices
    that list the extension defining it, which gives pyopencl the same answer."""
    import pyopencl.characterize as characterize
    probe = characterize.nv_compute_capability

    def nv_compute_capability(device):
        return probe(device) if "cl_nv_device_attribute_query" in device.extensions else None

    characterize.nv_compute_capability = nv_compute_capability


def sweep(backend, ref, rng):
    """Call every primitive at small ragged sizes and compare with the NumPy backend."""
    from tolerance import assert_close

    def check(method, inputs, *extra, terms=1, magnitude=4.0):
        got = getattr(backend, method)(*[backend.from_numpy(np.float32(a)) for a in inputs],
                                       *extra)
        want = getattr(ref, method)(*[np.float64(a) for a in inputs], *extra)
        pairs = zip(got, want) if isinstance(got, tuple) else [(got, want)]
        for i, (g, w) in enumerate(pairs):
            if w is not None:
                assert_close(backend.to_numpy(g), w, terms=terms, magnitude=magnitude,
                             what=f"{method} output {i}")

    def uniform(*shape, low=-2.0):
        return rng.uniform(low, 2.0, shape)

    a, b = uniform(3, 37), uniform(3, 37)
    for method in ("add", "sub", "mul"):
        check(method, [a, b])
    for method in ("neg", "relu", "gelu"):
        check(method, [a])
    check("scale", [a], 0.75)
    check("relu_backward", [a, b])
    check("gelu_backward", [a, b])
    assert backend.to_numpy(backend.full((5, 3), 1.5, "float32")).tolist() == [[1.5] * 3] * 5
    for size in (0, 37, 2500):                          # no pass, one pass, several passes
        check("sum", [uniform(size)], terms=size)
    check("broadcast_scalar", [np.asarray(0.5)], (4, 9))
    check("sum_rows", [uniform(5, 7)], terms=5)
    # Products: whole tiles, edge tiles, a sum long enough to be split into slices.
    for m, k, n in ((16, 13, 24), (19, 7, 21), (9, 2100, 3)):
        for ta, tb in ((False, False), (True, False), (False, True), (True, True)):
            x, y = uniform(m, k), uniform(k, n)
            check("matmul", [x.T if ta else x, y.T if tb else y], ta, tb, terms=k)
    for batch, n_in, n_out in ((16, 11, 8), (5, 11, 13)):
        check("linear", [uniform(batch, n_in), uniform(n_out, n_in), uniform(n_out)],
              terms=n_in + 1)
    # Convolution: 10 output channels (a whole and a partial tile of rows), 7x5 = 35 pixels
    # per map so that 16-column groups straddle two images in the NCHW store.
    x, w, bias = uniform(3, 2, 9, 7), uniform(10, 2, 3, 3), uniform(10)
    check("conv2d", [x, w, bias], terms=19)
    g = uniform(3, 10, 7, 5)
    for needs in ((True, True, True), (False, True, False)):
        check("conv2d_backward", [x, w, g], needs, terms=3 * 35 + 90)
    # C*k*k = 4 (a single partial panel) and 3 * 27 * 27 = 2187 pixels: the weight
    # gradient's long sum is split into slices.
    x, w, g = uniform(3, 1, 28, 28), uniform(3, 1, 2, 2), uniform(3, 3, 27, 27)
    check("conv2d_backward", [x, w, g], (False, True, True), terms=2187)
    # Pooling: k = 2 and 3 on sides 7 and 5 (truncated edge windows), and the model's 11 -> 6.
    for shape, k in (((2, 3, 7, 5), 2), ((2, 3, 7, 5), 3), ((1, 2, 11, 11), 2)):
        x = rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) / 8
        y = ref.max_pool2d(x, k)
        check("max_pool2d", [x], k, magnitude=64)
        check("max_pool2d_backward", [x, y, uniform(*y.shape)], k)
    logits = uniform(4, 26)
    check("log_softmax", [logits], terms=26)
    check("log_softmax_backward", [ref.log_softmax(logits), uniform(4, 26)], terms=26)
    p, grad, m1, m2 = uniform(45), uniform(45), uniform(45), uniform(45, low=0.0)
    for wd in (0.0, 1e-2):
        got = [backend.from_numpy(np.float32(v)) for v in (p, grad, m1, m2)]
        want = [np.float64(v) for v in (p, grad, m1, m2)]
        for be, bufs in ((backend, got), (ref, want)):
            be.sgd_update(bufs[0], bufs[1], bufs[2], 0.1, 0.9, wd)
            be.adam_update(bufs[0], bufs[1], bufs[2], bufs[3], 1e-2, 0.9, 0.999, 1e-8, wd, 3)
        for name, g_buf, w_buf in zip(("p", "g", "m", "v"), got, want):
            assert_close(backend.to_numpy(g_buf), w_buf, magnitude=2, what=f"update {name}")
    if backend.limits.fp64:            # the float64 build, and GELU's float64 branch
        x = uniform(3, 37)
        for method, inputs in (("gelu", [x]), ("gelu_backward", [x, uniform(3, 37)])):
            got = getattr(backend, method)(*[backend.from_numpy(v) for v in inputs])
            assert_close(backend.to_numpy(got), getattr(ref, method)(*inputs), dtype="float64",
                         magnitude=4, what=f"{method} float64")


def worker(mode):
    """Run the sweep on every path of the backend on the only platform there is (Oclgrind),
    and with "limits" in ``mode`` train on smaller devices; print a one-line JSON summary."""
    quiet_nvidia_probe()
    import microconv as mc
    from microconv.backends import ops_opencl
    from test_opencl import SMALL_DEVICES, train_on_small_device

    ran = set()
    paths = {"auto": ops_opencl.create(), "simple": ops_opencl.create(kernels="simple")}
    small = [ops_opencl.create(limits=cap) for cap in SMALL_DEVICES.values()] \
        if "limits" in mode else []
    for backend in [*paths.values(), *small]:
        backend.pool = FreshBuffers(backend.cl, backend.context)
        run = backend._run

        def recording(name, *args, run=run, **kwargs):
            ran.add(name)
            return run(name, *args, **kwargs)

        backend._run = recording
    ref = mc.backends.get("numpy")
    for backend in paths.values():
        sweep(backend, ref, np.random.default_rng(5))
    for backend in small:
        train_on_small_device(backend, ref)
    every = {name for kernels in ops_opencl.KERNELS.values() for name in kernels}
    print(json.dumps({"platform": paths["auto"].device.platform.name.strip(),
                      "missed": sorted(every - ran), "small devices": len(small)}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    worker(sys.argv[1])
