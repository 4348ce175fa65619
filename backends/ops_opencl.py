"""The OpenCL backend: every primitive is a kernel from ``kernels/*.cl``, run through pyopencl.

Values live in device buffers for a whole forward, backward and update step; only
``to_numpy`` copies back (and waits for the queue). Nothing here touches the hardware when the
module is imported: pyopencl is imported, and the device opened, on first use.

Finding and choosing the device, and reading its limits, live in ``opencl_devices.py``.
Every launch stays within the limits: work-group sizes come from the device's (and each
compiled kernel's) maximum work-group size and per-dimension maximum; float64 only where the
device reports cl_khr_fp64; kernels are built as OpenCL C 1.2.

Every kernel has a simple version (one work-item per output element) and the hot ones have a
fast version: convolution runs as im2col + a register-tiled matrix product instead of one
work-item looping over C*K*K products. ``create(kernels="simple")`` uses only the simple
kernels; the tests check that both give the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from microconv.backends.base import Backend
from microconv.backends.opencl_devices import (  # noqa: F401 - unavailable_reason: the registry's
    DeviceLimits,
    choose_device,
    describe as describe_device,
    find_devices,
    import_pyopencl,
    language_options,
    unavailable_reason,
)

from microconv.errors import BackendError

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"

# Every kernel, by file, with its argument types: i = int32, r = a scalar of the buffer dtype
# (float or double), b = a buffer. Declared once, so pyopencl never guesses a scalar's type.
KERNELS = {
    "elementwise.cl": {
        "fill": "irb", "fill_from_scalar": "ibb",
        "add": "ibbb", "sub": "ibbb", "mul": "ibbb", "neg": "ibb", "scale": "irbb",
        "relu": "ibb", "relu_backward": "ibbb", "gelu": "ibb", "gelu_backward": "ibbb",
        "sum_chunks": "iibb", "sum_slices": "iibb", "sum_rows": "iibb", "row_sums": "iibb",
        "transpose": "iibb",
        "sgd_update": "irrrbbb", "adam_update": "irrrrrrrrrbbbb",
    },
    "matmul.cl": {
        "matmul_simple": "iiiiibbbb", "matmul_tiled": "iiiiiiiiibbbb",
    },
    "conv.cl": {
        "conv2d_direct": "iiiiiibbbb", "conv2d_dx_direct": "iiiiiibbb",
        "conv2d_dw_direct": "iiiiiibbb", "conv2d_db_direct": "iiibb",
        "im2col_rows": "iiiiibb", "im2col_cols": "iiiiibb", "col2im_rows": "iiiiibb",
        "maps_to_rows": "iiibb",
    },
    "pool_softmax.cl": {
        "max_pool2d": "iiiibb", "max_pool2d_backward": "iiiibbb",
        "max_pool2x2": "iiibb", "max_pool2x2_backward": "iiibbb",
        "log_softmax": "iibb", "log_softmax_backward": "iibbb",
    },
}

TILE = 16             # matmul_tiled computes TILE_ROWS x TILE outputs per work-item; B
TILE_ROWS = 8         # panels are TILE columns wide (the kernels get TILE as -DTILE)
SUM_CHUNK = 1024      # elements summed by one work-item in the first pass of sum()
K_CHUNK = 512         # products summing more than 4 * K_CHUNK terms are split into slices

_DTYPES = {"float32": "float", "float64": "double"}
# Status codes that mean "the device (or the host behind it) ran out of memory":
# MEM_OBJECT_ALLOCATION_FAILURE, OUT_OF_RESOURCES, OUT_OF_HOST_MEMORY, INVALID_BUFFER_SIZE
# (a single buffer larger than the device allows).
_MEMORY_CODES = (-4, -5, -6, -61)


def _status_code(exc):
    """The OpenCL status code inside a pyopencl error (its record, or the code argument)."""
    record = exc.args[0] if exc.args else None
    code = getattr(record, "code", None)
    if callable(code):
        return code()
    if len(exc.args) > 1 and isinstance(exc.args[1], int):
        return exc.args[1]
    return None


def create(device=None, kernels="auto", limits=None):
    """The OpenCL backend on the chosen device (see opencl_devices for the choice).

    kernels="simple" uses only the reference kernels; ``limits`` (a DeviceLimits) caps what
    the backend asks of the device, to run as a smaller device would."""
    if kernels not in ("auto", "simple"):
        raise BackendError(f"opencl: kernels must be 'auto' or 'simple', not {kernels!r}")
    if limits is not None and not isinstance(limits, DeviceLimits):
        raise BackendError(f"opencl: limits must be a DeviceLimits, not {limits!r}")
    cl = import_pyopencl()
    device = choose_device(cl, find_devices(cl), device)
    return OpenCLBackend(cl, device, simple=kernels == "simple",
                         limits=DeviceLimits.of(device).capped(limits))


# --- contexts, programs and kernels, each made once -----------------------------------------

_contexts = {}        # device -> (context, queue)
_programs = {}        # (context, dtype name) -> ({name: cl.Kernel}, {name: KernelLimits})


class KernelLimits(NamedTuple):
    """What the device allows a launch of one compiled kernel: a kernel that needs many
    registers may allow fewer work-items per group than the device does."""

    max_group: int        # CL_KERNEL_WORK_GROUP_SIZE
    local_mem: int        # CL_KERNEL_LOCAL_MEM_SIZE: bytes of __local memory per work-group


def _load_source(filename):
    return (KERNEL_DIR / filename).read_text()


def _context_for(cl, device):
    if device not in _contexts:
        try:
            context = cl.Context([device])
            _contexts[device] = (context, cl.CommandQueue(context))
        except cl.Error as exc:
            raise BackendError(f"OpenCL cannot open device '{device.name.strip()}' ({exc}); "
                               "check the driver with clinfo, or use --backend numpy") from None
    return _contexts[device]


def _build_kernels(cl, context, device, dtype):
    """Compile every kernel file for one context and dtype, once; keep the kernels (their
    scalar argument types declared) and their limits on this device."""
    key = (context, dtype)
    if key in _programs:
        return _programs[key]
    real = _DTYPES[dtype]
    options = [*language_options(device), f"-Dreal={real}", f"-Dreal8={real}8",
               f"-DTILE={TILE}", f"-Dreal16={real}16"]
    if dtype == "float64":
        options.append("-DREAL_IS_DOUBLE")
    scalar = np.dtype(dtype).type
    arg_types = {"i": np.int32, "r": scalar, "b": None}
    info = cl.kernel_work_group_info
    table, limits = {}, {}
    for filename, kernels in KERNELS.items():
        source = _load_source(filename)
        if dtype == "float64":
            source = "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n" + source
        program = cl.Program(context, source)
        try:
            program.build(options=options, devices=[device])
        except cl.Error as exc:
            try:
                log = program.get_build_info(device, cl.program_build_info.LOG).strip()
            except cl.Error:
                log = ""
            raise BackendError(
                f"OpenCL kernel file {filename} ({real}) failed to build for device "
                f"'{device.name.strip()}' ({device.platform.name.strip()}, driver "
                f"{device.driver_version.strip()}): {exc}; another --device or driver may "
                f"work, --backend numpy does\nBuild log:\n{log or str(exc)}") from None
        for name, signature in kernels.items():
            kernel = cl.Kernel(program, name)
            kernel.set_scalar_arg_dtypes([arg_types[c] for c in signature])
            table[name] = kernel
            limits[name] = KernelLimits(kernel.get_work_group_info(info.WORK_GROUP_SIZE, device),
                                        kernel.get_work_group_info(info.LOCAL_MEM_SIZE, device))
    _programs[key] = table, limits
    return _programs[key]


# --- buffers --------------------------------------------------------------------------------

class CLBuffer:
    """A device buffer with its shape and dtype (always C order, contiguous)."""

    __slots__ = ("data", "dtype", "shape", "size")

    def __init__(self, data, shape, dtype):
        self.data = data
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.size = math.prod(self.shape)

    def __repr__(self):
        return f"<CLBuffer {self.shape} {self.dtype}>"


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


def _pow2_at_least(n):
    return 1 << max(0, (n - 1).bit_length())


class OpenCLBackend(Backend):
    name = "opencl"
    host_memory = False

    def __init__(self, cl, device, simple=False, limits=None):
        self.cl = cl
        self.device = device
        self.simple = simple
        self.limits = limits or DeviceLimits.of(device)
        self.context, self.queue = _context_for(cl, device)
        self.pool = cl.tools.MemoryPool(cl.tools.ImmediateAllocator(self.queue))
        self.is_cpu = bool(device.type & cl.device_type.CPU)
        # Preferred work-group sizes, within the limits (each launch also stays within its
        # kernel's own maximum): 1-D kernels use a multiple of the SIMD width, the tiled
        # product a 2-D group of 8x16 tiles (16 x 4 was fastest on PoCL; a GPU wants more
        # work-items per group).
        self.local_1d = min(64 if self.is_cpu else 128, self.limits.max_work_group_size,
                            self.limits.max_work_item_sizes[0])
        self.tile_group = (16, 4) if self.is_cpu else (16, 8)
        # A product should give every compute unit a few work-groups, or one unit idles
        # while another finishes (the weight gradients have few, long-running tiles).
        self.min_groups = 4 * device.max_compute_units
        self._dtype_names = {}            # np.dtype -> its name, once checked

    def describe(self):
        return f"OpenCL: {describe_device(self.device)}"

    # --- plumbing ---------------------------------------------------------------------
    def _program(self, dtype):
        """The kernels for dtype and their limits. Every primitive asks, several times per
        call, so the dtype's name and the device's support for it are worked out once."""
        dtype = np.dtype(dtype)           # cheap, unlike .name; and always a usable key
        name = self._dtype_names.get(dtype)
        if name is None:
            name = self._supported_dtype_name(dtype)
            self._check_local_memory(_build_kernels(self.cl, self.context, self.device, name)[1])
            self._dtype_names[dtype] = name
        return _build_kernels(self.cl, self.context, self.device, name)

    def _kernels(self, dtype):
        """The kernel table for dtype: {name: pyopencl.Kernel}."""
        return self._program(dtype)[0]

    def _supported_dtype_name(self, dtype):
        name = dtype.name
        if name not in _DTYPES:
            raise BackendError(f"opencl: dtype {name} is not supported (use float32)")
        if name == "float64" and not self.limits.fp64:
            raise BackendError(f"opencl: device '{self.device.name.strip()}' does not report "
                               "cl_khr_fp64, so it cannot compute in float64; use float32, or "
                               "--backend numpy")
        return name

    def _check_local_memory(self, kernel_limits):
        for name, limits in kernel_limits.items():
            if limits.local_mem > self.limits.local_mem_size:
                raise BackendError(
                    f"opencl: kernel {name} needs {limits.local_mem} bytes of local memory, "
                    f"device '{self.device.name.strip()}' allows {self.limits.local_mem_size}; "
                    "try another --device, or --backend numpy")

    def _memory_error(self, exc):
        return BackendError(f"OpenCL device '{self.device.name.strip()}' is out of memory "
                            f"({exc}, status {_status_code(exc)}); try a smaller --batch-size, "
                            "or --backend numpy")

    def _empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        self._kernels(dtype)          # fails early and clearly for an unsupported dtype
        nbytes = max(1, math.prod(shape)) * dtype.itemsize
        try:
            data = self.pool.allocate(nbytes)
        except self.cl.Error as exc:
            if _status_code(exc) not in _MEMORY_CODES:
                raise BackendError(f"OpenCL could not allocate {nbytes} bytes on "
                                   f"'{self.device.name.strip()}': {exc}") from None
            self.pool.free_held()     # give cached blocks back and try once more
            try:
                data = self.pool.allocate(nbytes)
            except self.cl.Error:
                raise self._memory_error(exc) from None
        return CLBuffer(data, shape, dtype)

    def _device_error(self, exc, what):
        """A BackendError for a failed OpenCL call: out of memory, or the device failing."""
        if _status_code(exc) in _MEMORY_CODES:
            return self._memory_error(exc)
        return BackendError(f"OpenCL {what} failed on '{self.device.name.strip()}': {exc}; "
                            "try --backend numpy")

    def _copy(self, dest, src, what):
        try:
            self.cl.enqueue_copy(self.queue, dest, src, is_blocking=True)
        except self.cl.Error as exc:
            raise self._device_error(exc, what) from None

    def _run(self, name, dtype, global_size, *args, local_size=None):
        """Enqueue kernel ``name`` for dtype on a 1-D (int) or N-D (tuple) global size."""
        kernels, limits = self._program(dtype)
        if isinstance(global_size, int):      # 1-D: round up to whole work-groups
            if global_size == 0:
                return
            group = min(self.local_1d, limits[name].max_group)
            local_size = (group,)
            global_size = (_round_up(global_size, group),)
        elif 0 in global_size:                # N-D: exact sizes; the group is the caller's
            return                            # (within the limits) or the driver's choice
        self._enqueue(kernels[name], name, global_size, local_size,
                      [a.data if isinstance(a, CLBuffer) else a for a in args])

    def _enqueue(self, kernel, name, global_size, local_size, args):
        """Launch a kernel; its event (benchmarks/opencl_vs_numpy.py --profile reads them)."""
        try:
            return kernel(self.queue, global_size, local_size, *args)
        except self.cl.Error as exc:
            raise self._device_error(exc, f"kernel {name}") from None

    def _elementwise(self, name, *inputs, extra=(), per_item=1):
        """One work-item per ``per_item`` numbers (kernels that work on vectors say so)."""
        first = inputs[0]
        out = self._empty(first.shape, first.dtype)
        self._run(name, first.dtype, -(-first.size // per_item), first.size, *extra, *inputs,
                  out)
        return out

    def _per_row(self, name, *inputs):
        """A kernel with one work-item per row of the last axis (rows, length, inputs, out)."""
        first = inputs[0]
        length = first.shape[-1]
        rows = first.size // length
        out = self._empty(first.shape, first.dtype)
        self._run(name, first.dtype, rows, rows, length, *inputs, out)
        return out

    # --- moving data ------------------------------------------------------------------
    def from_numpy(self, array):
        array = np.asarray(array)
        if array.dtype.kind != "f" or array.dtype.name not in _DTYPES:
            array = array.astype(np.float32)       # integers and bools become float32
        array = np.ascontiguousarray(array)
        buf = self._empty(array.shape, array.dtype)
        if array.size:
            self._copy(buf.data, array, "copy to the device")
        return buf

    def to_numpy(self, buf):
        out = np.empty(buf.shape, dtype=buf.dtype)
        if buf.size:
            self._copy(out, buf.data, "copy from the device")
        return out

    def full(self, shape, value, dtype):
        out = self._empty(tuple(shape), dtype)
        self._run("fill", out.dtype, out.size, out.size, value, out)
        return out

    # --- elementwise ------------------------------------------------------------------
    def add(self, a, b):
        return self._elementwise("add", a, b)

    def sub(self, a, b):
        return self._elementwise("sub", a, b)

    def mul(self, a, b):
        return self._elementwise("mul", a, b)

    def neg(self, a):
        return self._elementwise("neg", a)

    def scale(self, a, c):
        return self._elementwise("scale", a, extra=(c,))

    # --- reductions and movement ------------------------------------------------------
    def sum(self, a):
        """Chunked passes: each work-item adds SUM_CHUNK numbers, until one number is left."""
        n, current = a.size, a
        while True:
            parts = max(1, -(-n // SUM_CHUNK))
            out = self._empty(() if parts == 1 else (parts,), a.dtype)
            if n == 0:
                self._run("fill", a.dtype, 1, 1, 0.0, out)
            else:
                self._run("sum_chunks", a.dtype, parts, n, SUM_CHUNK, current, out)
            if parts == 1:
                return out
            n, current = parts, out

    def broadcast_scalar(self, s, shape):
        out = self._empty(tuple(shape), s.dtype)
        self._run("fill_from_scalar", s.dtype, out.size, out.size, s, out)
        return out

    def sum_rows(self, a):
        rows, cols = a.shape
        out = self._empty((cols,), a.dtype)
        self._run("sum_rows", a.dtype, cols, rows, cols, a, out)
        return out

    def reshape(self, a, shape):
        return CLBuffer(a.data, shape, a.dtype)       # same memory, new shape: no copy

    def _transpose(self, a):
        rows, cols = a.shape
        out = self._empty((cols, rows), a.dtype)
        self._run("transpose", a.dtype, a.size, rows, cols, a, out)
        return out

    # --- dense layers -----------------------------------------------------------------
    def _panels(self, rows, cols, dtype):
        """A (rows, cols) matrix to be written in panels of TILE columns (see matmul.cl), with
        room for the last panel's padding; only _product(..., b_in_panels=True) reads it."""
        room = self._empty((-(-cols // TILE), rows, TILE), dtype)
        return CLBuffer(room.data, (rows, cols), dtype)

    def _product(self, a_t, b, bias=None, bias_mode=0, group=None, out_shape=None,
                 b_in_panels=False, a_group=1):
        """A @ b (+ bias) from a_t = A transposed (K, M) and b (K, N), row-major or (fast
        kernels only) in panels from _panels; see matmul.cl for the layouts, the bias modes
        and the column groups that let a convolution store NCHW directly. a_group > 1 (fast
        kernels only) reads A through column groups instead, as matmul.cl says."""
        (k, m), (_, n) = a_t.shape, b.shape
        group = n if group is None else group
        out = self._empty(out_shape or (m, n), b.dtype)
        bias = b if bias is None else bias            # any buffer will do when bias_mode is 0
        if m * n == 0:
            return out
        if self.simple:
            self._run("matmul_simple", b.dtype, m * n, m, n, k, group, bias_mode, a_t, b, bias,
                      out)
        else:
            b_row, b_panel = (TILE, k) if b_in_panels else (n, 1)
            tiles_x, tiles_y = -(-n // TILE), -(-m // TILE_ROWS)
            lx, ly = self._tile_group_for(tiles_x, tiles_y, b.dtype)
            grid = (_round_up(tiles_x, lx), _round_up(tiles_y, ly))
            slices = -(-k // K_CHUNK) if k > 4 * K_CHUNK and bias_mode == 0 and group == n else 1
            target = out if slices == 1 else self._empty((slices, m, n), b.dtype)
            self._run("matmul_tiled", b.dtype, grid + (slices,), m, n, k, group, bias_mode,
                      k if slices == 1 else K_CHUNK, b_row, b_panel, a_group, a_t, b, bias,
                      target, local_size=(lx, ly, 1))
            if slices > 1:
                self._run("sum_slices", b.dtype, m * n, m * n, slices, target, out)
        return out

    def _tile_group_for(self, tiles_x, tiles_y, dtype):
        """The device's preferred group of tiles, within the limits and what the compiled
        kernel allows (a GPU may allow fewer work-items for a register-hungry kernel than for
        others), halved (x first, down to 4) until the product has at least min_groups
        work-groups."""
        kernel_limit = self._program(dtype)[1]["matmul_tiled"].max_group
        limit = min(self.limits.max_work_group_size, kernel_limit)
        lx = min(self.tile_group[0], _pow2_at_least(tiles_x), self.limits.max_work_item_sizes[0])
        ly = min(self.tile_group[1], _pow2_at_least(tiles_y), self.limits.max_work_item_sizes[1])
        while lx * ly > limit:
            lx, ly = (lx // 2, ly) if lx >= ly else (lx, ly // 2)
        groups = lambda: -(-tiles_x // lx) * -(-tiles_y // ly)
        while groups() < self.min_groups and (lx > 4 or ly > 1):
            if lx > 4:
                lx //= 2
            else:
                ly //= 2
        return lx, ly

    def _product_of_rows(self, a, b, **options):
        """_product with the first operand A (M, K) given as it is, row-major: the fast kernel
        reads it in place through column groups of K (matmul.cl); the simple one needs it
        transposed."""
        m, k = a.shape
        if self.simple:
            return self._product(self._transpose(a), b, **options)
        return self._product(self.reshape(a, (k, m)), b, a_group=k, **options)

    def matmul(self, a, b, trans_a=False, trans_b=False):
        # A transposed is what the product kernels take, and A itself the fast one reads in
        # place; a transposed second operand is materialised (memory-bound, small next to
        # the product).
        b = self._transpose(b) if trans_b else b
        return self._product(a, b) if trans_a else self._product_of_rows(a, b)

    def linear(self, x, w, b):
        return self._product_of_rows(x, self._transpose(w), bias=b, bias_mode=2)

    # --- convolution ------------------------------------------------------------------
    def conv2d(self, x, w, b):
        n, c, h, wd = x.shape
        o, _, k, _ = w.shape
        oh, ow = h - k + 1, wd - k + 1
        if self.simple:
            out = self._empty((n, o, oh, ow), x.dtype)
            self._run("conv2d_direct", x.dtype, out.size, n, c, h, wd, o, k, x, w, b, out)
            return out
        # cols (C*k*k, N*OH*OW); w (O, C*k*k) @ cols lands as NCHW with the bias per row.
        cols = self._panels(c * k * k, n * oh * ow, x.dtype)
        self._run("im2col_rows", x.dtype, (ow, oh, c * k * k * n), n, c, h, wd, k, x, cols)
        w_t = self._transpose(self.reshape(w, (o, c * k * k)))              # (C*k*k, O)
        return self._product(w_t, cols, bias=b, bias_mode=1, group=oh * ow,
                             out_shape=(n, o, oh, ow), b_in_panels=True)

    def conv2d_backward(self, x, w, g, needs):
        if self.simple:
            return self._conv2d_backward_direct(x, w, g, needs)
        n, c, h, wd = x.shape
        o, _, k, _ = w.shape
        oh, ow = h - k + 1, wd - k + 1
        dx = dw = db = None
        if needs[0]:
            # g as an (O, N*OH*OW) matrix; w (O, C*k*k) is already the transposed w^T.
            g_rows = self._panels(o, n * oh * ow, g.dtype)
            self._run("maps_to_rows", g.dtype, (oh * ow, n, o), n, o, oh * ow, g, g_rows)
            d_cols = self._product(self.reshape(w, (o, c * k * k)), g_rows,
                                   b_in_panels=True)                            # (C*k*k, N*P)
            dx = self._empty(x.shape, x.dtype)
            self._run("col2im_rows", x.dtype, (wd, h, n * c), n, c, h, wd, k, d_cols, dx)
        if needs[1]:
            # dw = g (O, N*P) @ cols (N*P, C*k*k), g read in place through column groups
            cols = self._panels(n * oh * ow, c * k * k, x.dtype)
            self._run("im2col_cols", x.dtype, (ow, oh, c * k * k * n), n, c, h, wd, k, x, cols)
            dw = self.reshape(self._product(self.reshape(g, (n * oh * ow, o)), cols,
                                            b_in_panels=True, a_group=oh * ow), w.shape)
        if needs[2]:
            # Each (image, channel) map's sum, then the sum over the images.
            maps = self._empty((n, o), g.dtype)
            self._run("row_sums", g.dtype, n * o, n * o, oh * ow, g, maps)
            db = self.sum_rows(maps)
        return dx, dw, db

    def _conv2d_backward_direct(self, x, w, g, needs):
        n, c, h, wd = x.shape
        o, _, k, _ = w.shape
        dx = dw = db = None
        if needs[0]:
            dx = self._empty(x.shape, x.dtype)
            self._run("conv2d_dx_direct", x.dtype, dx.size, n, c, h, wd, o, k, g, w, dx)
        if needs[1]:
            dw = self._empty(w.shape, w.dtype)
            self._run("conv2d_dw_direct", x.dtype, dw.size, n, c, h, wd, o, k, x, g, dw)
        if needs[2]:
            db = self._empty((o,), g.dtype)
            self._run("conv2d_db_direct", g.dtype, o, n, o, g.shape[2] * g.shape[3], g, db)
        return dx, dw, db

    # --- pooling ----------------------------------------------------------------------
    def max_pool2d(self, x, k):
        n, c, h, w = x.shape
        out = self._empty((n, c, -(-h // k), -(-w // k)), x.dtype)
        self._run_pool(("max_pool2d", "max_pool2x2"), k, out.shape[::-1][:2] + (n * c,),
                       n * c, h, w, x, out)
        return out

    def max_pool2d_backward(self, x, y, g, k):
        n, c, h, w = x.shape
        dx = self._empty(x.shape, x.dtype)
        self._run_pool(("max_pool2d_backward", "max_pool2x2_backward"), k,
                       y.shape[::-1][:2] + (n * c,), n * c, h, w, x, g, dx)
        return dx

    def _run_pool(self, names, k, global_size, planes, h, w, *buffers):
        """names = (the kernel for any k, the one written out for 2x2 windows): the second
        when k is 2 on the fast path (see pool_softmax.cl)."""
        any_k, two = names
        if k == 2 and not self.simple:
            self._run(two, buffers[0].dtype, global_size, planes, h, w, *buffers)
        else:
            self._run(any_k, buffers[0].dtype, global_size, planes, h, w, k, *buffers)

    # --- activations ------------------------------------------------------------------
    def gelu(self, x):
        return self._elementwise("gelu", x, per_item=8)

    def gelu_backward(self, x, g):
        return self._elementwise("gelu_backward", x, g, per_item=8)

    def relu(self, x):
        return self._elementwise("relu", x)

    def relu_backward(self, x, g):
        return self._elementwise("relu_backward", x, g)

    def log_softmax(self, x):
        return self._per_row("log_softmax", x)

    def log_softmax_backward(self, y, g):
        return self._per_row("log_softmax_backward", y, g)

    # --- optimiser updates, in place --------------------------------------------------
    def sgd_update(self, p, g, v, lr, momentum, weight_decay):
        self._run("sgd_update", p.dtype, p.size, p.size, lr, momentum, weight_decay, p, g, v)

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        # 1 - beta and the bias corrections in double precision on the host, as NumPy does.
        self._run("adam_update", p.dtype, p.size, p.size, lr, beta1, 1.0 - beta1, beta2,
                  1.0 - beta2, eps, weight_decay, 1.0 - beta1 ** step, 1.0 - beta2 ** step,
                  p, g, m, v)
