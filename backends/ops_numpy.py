"""The NumPy backend: vectorised primitives, convolution as one matrix multiply per layer.

Buffers are NumPy arrays whose dtype (float32 by default, float64 for gradient checks) is kept
by every primitive. No Python loop runs over pixels, channels or batch items; the only loops
are over the k*k offsets of a kernel or a pooling window, each a whole-array operation.

Layout: shapes are NCHW as the interface says, but a convolution's output is an NCHW *view* of
channel-last (NHWC) memory, because that is what the matrix multiply produces. Pooling, GELU
and the other elementwise primitives keep whatever memory order their input has (NumPy's
order='K'), so the next convolution finds its input already channel-last and builds its
im2col matrix from runs of C contiguous numbers, without a transpose. Every value is still
an ordinary array of the right shape: ``to_numpy`` and ``reshape`` see NCHW semantics.

Threads: convolution, pooling and GELU split their batch into one slice per thread and run the
slices side by side (NumPy releases the GIL in its loops and BLAS calls), each slice's matrix
products on a single BLAS thread; pooling and GELU only where their many calls stay long.
The backend uses as many threads as BLAS may (OPENBLAS_NUM_THREADS, threadpoolctl's limits,
``microconv bench --threads``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import sys
import threading
import weakref

import numpy as np
from microconv.backends.base import Backend
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import ThreadpoolController

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_erfc64 = np.frompyfunc(math.erfc, 1, 1)
# Below this many channels an im2col row has short contiguous runs, and k*k slice copies
# beat one big strided reshape (measured: 3x faster for the 1-channel first layer).
_SLICE_IM2COL_BELOW_CHANNELS = 8

# The upper normal tail, Phi(-a) = t * Q(t) * exp(-a^2/2) for a >= 0, with t = 1 / (1 + 0.325a)
# mapping [0, inf) onto (0, 1] and Q a polynomial of degree 7 (highest power first). Fitted by
# least squares weighted towards the largest relative error (Lawson's iteration) against
# scipy.special.erfcx: relative error below 7e-7 for every a, so GELU keeps float32 relative
# accuracy far into its negative tail. Fewer terms than a general erfc fit: each term is two
# passes over the largest activations.
_TAIL_T_SCALE = 0.325
_TAIL_COEFFICIENTS = (0.03381678, -0.11351983, 0.08530882, 0.02604606, 0.09351631,
                      0.11550388, 0.12967209, 0.12965615)


def _normal_tail(a, t, q):
    """Phi(-a) = q * t for a >= 0 (float32): q = t * Q(t), then t = exp(-a^2/2); in place.

    The two factors are left apart so that a caller multiplies q by a before the exponential:
    their product is then not a subnormal number where GELU's own value is still a normal one.
    """
    one = a.dtype.type
    np.multiply(a, one(_TAIL_T_SCALE), out=t)
    t += one(1.0)
    np.divide(one(1.0), t, out=t)           # np.reciprocal has no vector loop: 2x slower
    np.multiply(t, one(_TAIL_COEFFICIENTS[0]), out=q)
    for c in _TAIL_COEFFICIENTS[1:]:
        q += one(c)
        q *= t
    np.square(a, out=t)
    t *= one(-0.5)
    np.exp(t, out=t)


_SIGN_BIT = np.uint32(1 << 31)


def _gelu_float32(x, out, slope, a, t, q):
    """out = x * Phi(x) and slope = Phi(x) + x * phi(x), GELU's derivative, kept for the backward.

    Both are built from the tail Phi(-|x|), without a mask or a select: relu(x) = (x + |x|)/2
    exactly, so out = relu(x) - |x| Phi(-|x|) is exact arithmetic on a tiny number where x << 0
    (1 + erf would cancel to 0 there); slope = 1/2 + sign(x) (1/2 - Phi(-|x|) + |x| phi(x)),
    where the bracket is >= 0 and takes x's sign bit (np.copysign has no vector loop: it took
    5 times as long).
    """
    one = x.dtype.type
    np.abs(x, out=a)
    _normal_tail(a, t, q)
    np.multiply(a, one(_INV_SQRT_2PI), out=slope)
    slope -= q
    slope *= t
    slope += one(0.5)
    q *= a
    q *= t
    np.add(x, a, out=out)
    out *= one(0.5)
    out -= q
    sign = np.bitwise_and(x.view(np.uint32), _SIGN_BIT, out=t.view(np.uint32))
    np.bitwise_or(slope.view(np.uint32), sign, out=slope.view(np.uint32))
    slope += one(0.5)


def _memory_order_flat(a):
    """A 1-D view of a's elements in memory order, or None when a is not one dense block."""
    by_stride = a.transpose(np.argsort(a.strides, kind="stable")[::-1])
    return by_stride.reshape(-1) if by_stride.flags.c_contiguous else None


# Elements per piece. Each of GELU's ~30 NumPy calls drops and retakes the GIL, so in two slices
# longer calls wait less for each other, while a piece whose six arrays leave the cache pushes
# out what the next primitives read. Measured in the training step (batch 64, medians of
# alternating runs): against 2^15, the first layer's GELU in two slices 3.0 -> 2.4 and 2.1 ->
# 1.7 ms, the step 0.95-0.995x at two threads, 0.995x at one; against 2^18, the one-thread step
# 0.96-0.97x.
_PIECE = 1 << 16


def _gelu_float32_in_pieces(x, out, slope, empty=np.empty):
    """_gelu_float32 on pieces of equally laid-out arrays, with scratch from ``empty``.

    The whole of a batch-256 first layer is 5.5 MB per array: in pieces that stay in cache the
    ~30 passes cost less than on whole arrays.
    """
    flats = [_memory_order_flat(v) for v in (x, out, slope)]
    if any(f is None for f in flats) or not x.strides == out.strides == slope.strides:
        _gelu_float32(x, out, slope, *(np.empty_like(x) for _ in range(3)))
        return
    scratch = empty((3, min(_PIECE, x.size)), x.dtype)
    for start in range(0, x.size, _PIECE):
        pieces = [f[start:start + _PIECE] for f in flats]
        _gelu_float32(*pieces, *(s[:len(pieces[0])] for s in scratch))


def _gelu_float64(x, out, slope):
    """The same two arrays with math.erfc element by element: exact, for gradient checks."""
    cdf = _erfc64(x * -math.sqrt(0.5)).astype(np.float64) * 0.5          # Phi(x)
    np.multiply(x, cdf, out=out)
    np.multiply(x, np.exp(np.square(x) * -0.5) * _INV_SQRT_2PI, out=slope)
    slope += cdf


# --- convolution through channel-last im2col ----------------------------------------------

def _channels_last(x):
    """(N,C,H,W) -> an (N,H,W,C) view; free when the memory is channel-last already."""
    return x.transpose(0, 2, 3, 1)


# Where the convolution's product is short (the first layer's 9 columns), the bias rides in it
# as one more column of im2col, all 1s: that saves a pass over the output in the forward and
# one over the gradient for the bias's (measured in the training step, one thread, thread CPU:
# the first layer's forward 1.4-1.8 -> 1.1-1.3 ms, its backward 1.1-1.5 -> 0.9-1.2 ms). On the
# longer products (288 and 576 columns) the column cost more than the passes: the second
# layer's backward 8.75 -> 9.13 ms, its pooling after the forward 0.41 -> 0.54 ms.
_BIAS_COLUMN_BELOW = 16         # columns of im2col; nothing between 9 and 288 was measured


def _im2col(x_nhwc, k, cols):
    """Fill cols from x (N,H,W,C); return it as a matrix whose row (n, r, s) holds the window
    under output (r, s) ordered (i, j, c) (runs of C numbers), then the bias's 1 if it rides."""
    n, oh, ow, width = cols.shape
    c = x_nhwc.shape[3]
    windows_part = cols[..., :k * k * c].reshape(n, oh, ow, k, k, c)     # a view: one axis split
    if c >= _SLICE_IM2COL_BELOW_CHANNELS:
        windows = sliding_window_view(x_nhwc, (k, k), axis=(1, 2))   # (N,OH,OW,C,k,k), a view
        np.copyto(windows_part, windows.transpose(0, 1, 2, 4, 5, 3))
    else:
        for i in range(k):
            for j in range(k):
                windows_part[:, :, :, i, j, :] = x_nhwc[:, i:i + oh, j:j + ow, :]
    if width > k * k * c:
        cols[..., -1] = 1
    return cols.reshape(n * oh * ow, width)


def _col2im_product(g_rows, w_rows, k, out):
    """out (N,H,W,C) = col2im(g_rows @ w_rows), the adjoint of _im2col applied to the product.

    col2im adds every window row back onto the pixels it was read from. The product is formed
    one kernel offset at a time, (rows, O) @ (O, C), and added onto its pixels while it is
    still in cache: the whole (rows, k*k*C) matrix never exists (measured: 2x faster on the
    second layer, where that matrix is 9 MB).
    """
    n, h, w, c = out.shape
    oh, ow = h - k + 1, w - k + 1
    block = np.empty((len(g_rows), c), dtype=out.dtype)
    out.fill(0)
    for offset, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):
        np.matmul(g_rows, w_rows[:, offset * c:(offset + 1) * c], out=block)
        out[:, i:i + oh, j:j + ow, :] += block.reshape(n, oh, ow, c)


def _weight_rows(w):
    """(O,C,k,k) -> (O, k*k*C), the weight in the column order of _im2col."""
    o = w.shape[0]
    return w.transpose(0, 2, 3, 1).reshape(o, -1)


def _cols_shape(x_shape, k):
    """im2col's (N,OH,OW,k*k*C) for an (N,C,H,W) input, plus the bias's column if it rides."""
    n, c, h, w = x_shape
    return (n, h - k + 1, w - k + 1, k * k * c + (k * k * c < _BIAS_COLUMN_BELOW))


# --- pooling over k*k strided views ---------------------------------------------------------

def _pool_offsets(k):
    """The window offsets in row-major order: the order that decides which maximum is first."""
    return [(i, j) for i in range(k) for j in range(k)]


def _window_part(x, i, j, k):
    """Element (i, j) of every window: x[..., i::k, j::k], and the output region it covers
    (truncated edge windows lack some elements, so that region can be smaller than y)."""
    part = x[:, :, i::k, j::k]
    return part, (slice(None), slice(None), slice(0, part.shape[2]), slice(0, part.shape[3]))


def _max_pool(x, out, k):
    first, _ = _window_part(x, 0, 0, k)
    np.copyto(out, first)
    for i, j in _pool_offsets(k)[1:]:
        part, region = _window_part(x, i, j, k)
        np.maximum(out[region], part, out=out[region])


def _max_pool_backward(x, y, g, dx, k):
    taken = None                                   # windows whose first maximum was found
    for i, j in _pool_offsets(k):
        part, region = _window_part(x, i, j, k)
        hit = part == y[region]
        if taken is None:
            taken = hit
        else:
            np.greater(hit, taken[region], out=hit)          # a maximum, and the first one
            taken[region] |= hit
        np.multiply(g[region], hit, out=dx[:, :, i::k, j::k])   # every pixel written once


class _Memo:
    """What a forward primitive computed from an input buffer, kept for its backward.

    Keyed by the input buffer's identity and forgotten as soon as that buffer is freed (a weak
    reference), so it keeps nothing alive longer than the graph does. It is safe because
    buffers are never changed in place, except parameters by an optimiser; then the engine
    recomputes the forward (the parameter's stamp changed) before any backward, which
    refreshes the entry.
    """

    def __init__(self):
        self.entries = {}

    def remember(self, key_buffer, value):
        key, entries = id(key_buffer), self.entries
        forget = lambda _dead, key=key: entries.pop(key, None)     # noqa: E731
        entries[key] = (weakref.ref(key_buffer, forget), value)

    def recall(self, key_buffer):
        entry = self.entries.get(id(key_buffer))
        return entry[1] if entry is not None and entry[0]() is key_buffer else None


# Arrays from this size on come from the pool: malloc hands smaller ones back from its heap,
# larger ones can cost page faults again (the second and third layers' activations and
# gradients: 0-440 faults a training step with 1 MB here, varying from run to run; none with
# 64 KB).
_REUSE_BYTES = 1 << 16


class _BufferPool:
    """Large arrays kept for reuse from one training step to the next.

    A fresh large array costs page faults (the kernel zeroes every page on first touch): at
    batch 256 that took twice the arithmetic's time. An array is handed out again only when
    nothing but this pool refers to it (CPython's reference count, which counts views too),
    so a buffer still held by the graph, a memo or the user is never overwritten. Callers
    must write every element of what ``empty`` returns.
    """

    def __init__(self):
        self.arrays = {}
        self.lock = threading.Lock()     # one backend may serve several threads

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        if math.prod(shape) * dtype.itemsize < _REUSE_BYTES:
            return np.empty(shape, dtype)
        with self.lock:                  # the returned reference counts before it is released
            arrays = self.arrays.setdefault((tuple(shape), dtype.str), [])
            for array in arrays:
                if sys.getrefcount(array) <= 3:  # this list, the loop name, the call's argument
                    return array
            array = np.empty(shape, dtype)
            arrays.append(array)
            return array

    def like(self, a):
        """An array shaped and laid out like a (channel-last or not)."""
        order = np.argsort(a.strides, kind="stable")[::-1]        # outermost axis first
        block = self.empty(tuple(a.shape[i] for i in order), a.dtype)
        return block.transpose(np.argsort(order))


# Below this many elements in a primitive's largest array one thread does all of it: handing a
# slice to another thread costs tens of microseconds.
_PARALLEL_MIN_ELEMENTS = 1 << 15
# A primitive made of many short NumPy calls (GELU ~30, pooling 4-14) splits only when each call
# gets at least this many elements on every thread. Each call drops and retakes the GIL, and two
# threads making short calls wait for each other at every one: on the second and third layers'
# activations (73k and 16k elements a slice) GELU in two slices took 1.3-3 times as long as
# on one thread (wall time, quiet machine), and the third layer's pooling cost 50-80% more CPU.
_MIN_CALL_ELEMENTS = 1 << 17


class _Threads:
    """Runs a primitive on contiguous slices of its batch, one slice per thread, side by side.

    As many threads as BLAS may use: one setting decides how many cores the backend takes.
    While slices run, BLAS is held to one thread, so each slice's products run on the thread
    that owns the slice: a multithreaded BLAS called from two threads at once makes them queue
    for its own pool (measured: 4x slower than two single-threaded calls). A BLAS that
    threadpoolctl cannot control cannot be held: then everything runs on the calling thread.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.running = 0            # slice runs in progress: one backend may serve many threads
        self.saved = None           # BLAS thread counts to restore when the last run ends
        self.tasks = self.workers = self.workers_pid = None
        self.blas = ThreadpoolController().select(user_api="blas").lib_controllers

    def count(self):
        with self.lock:
            if self.saved is not None:
                return self.saved[0]
            return self.blas[0].num_threads if self.blas else 1

    def map(self, fn, *arrays, call_elements=None):
        """[fn(*slices) for each slice], the arrays sliced alike along their first axis.

        ``call_elements``: for a primitive made of many short NumPy calls, the work of each
        call over the whole batch, in elements of a contiguous pass (see _MIN_CALL_ELEMENTS).
        """
        n = len(arrays[0])
        threads = min(self.count(), n)
        if threads == 1:
            return [fn(*arrays)]
        if (max(a.size for a in arrays) < _PARALLEL_MIN_ELEMENTS
                or call_elements is not None and call_elements < threads * _MIN_CALL_ELEMENTS):
            with self.blas_held():
                return [fn(*arrays)]
        bounds = [n * t // threads for t in range(threads + 1)]
        slices = [[a[lo:hi] for a in arrays] for lo, hi in zip(bounds, bounds[1:])]
        errors = np.geterr()        # NumPy's error handling is per thread: follow the caller's

        def in_caller_errstate(*part):
            with np.errstate(**errors):
                return fn(*part)

        with self.blas_held():
            tasks = self._workers(threads - 1)
            answers = queue.SimpleQueue()               # this call's own: callers may overlap
            for index, part in enumerate(slices[1:], start=1):
                tasks.put((in_caller_errstate, part, answers, index))
            others = {}                                 # slice index -> (error, result)
            try:
                first = fn(*slices[0])
            finally:
                for _ in slices[1:]:    # no slice may outlive the call, even after an error
                    index, error, result = answers.get()
                    others[index] = (error, result)
            for index in sorted(others):
                if others[index][0] is not None:
                    raise others[index][0]
            return [first] + [others[index][1] for index in sorted(others)]

    @contextlib.contextmanager
    def blas_held(self):
        """BLAS on one thread inside the block: the backend's own threads share the cores.

        Small products too: waking BLAS's threads for them cost more than they gained, and
        they kept spinning afterwards, taking a core from the slices (measured: 20-50 ms per
        training step on the linear layers alone on a busy machine).
        """
        if self.count() == 1:
            yield
            return
        with self.lock:
            if self.running == 0:
                if self.saved is None:
                    self.saved = [blas.num_threads for blas in self.blas]
                for blas in self.blas:
                    blas.set_num_threads(1)
            self.running += 1
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1
                # OpenBLAS (0.3.30) ignores a change of its thread count asked from any other
                # thread than the main one (measured: set to 2 by a worker, it stayed at 1): a
                # block ending elsewhere leaves BLAS held, its count still in saved, until the
                # main thread ends one.
                if self.running == 0 and threading.current_thread() is threading.main_thread():
                    for blas, threads in zip(self.blas, self.saved):
                        blas.set_num_threads(threads)
                    self.saved = None

    def _workers(self, count):
        """The task queue, with at least ``count`` worker threads serving it.

        Plain threads on a SimpleQueue rather than a ThreadPoolExecutor's futures: a parallel
        call costs 33 instead of 49 us (63 instead of 97 us of CPU), and a step makes ~18.
        """
        with self.lock:
            if self.workers_pid != os.getpid():               # threads do not survive fork
                self.tasks, self.workers, self.workers_pid = queue.SimpleQueue(), [], os.getpid()
            while len(self.workers) < count:
                worker = threading.Thread(target=_serve_slices, args=(self.tasks,), daemon=True,
                                          name=f"microconv-numpy-{len(self.workers) + 1}")
                worker.start()
                self.workers.append(worker)
            return self.tasks


def _serve_slices(tasks):
    """A worker thread: run each slice it is handed, answer (index, error or None, result)."""
    while True:
        fn, part, answers, index = tasks.get()
        try:
            answers.put((index, None, fn(*part)))
        except BaseException as exc:      # noqa: BLE001 -- raised again on the calling thread
            answers.put((index, exc, None))


_SHARED_THREADS = []
_SHARED_THREADS_LOCK = threading.Lock()


def _shared_threads():
    """The process's one _Threads: BLAS's thread count belongs to the process, so every backend
    object must count its holders in one place, or one could restore it while another holds it."""
    with _SHARED_THREADS_LOCK:
        if not _SHARED_THREADS:
            _SHARED_THREADS.append(_Threads())
        return _SHARED_THREADS[0]


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self):
        self._buffers = _BufferPool()
        self._threads = _shared_threads()
        self._im2col_memo = _Memo()     # conv input -> its im2col buffer, for dw and db
        self._gelu_memo = _Memo()       # GELU input -> 2 * Phi(x), for the backward

    def describe(self):
        return f"NumPy {np.__version__} on the CPU"

    def from_numpy(self, array):
        return np.array(array, order="C", copy=True)

    def to_numpy(self, buf):
        return np.array(buf, order="C", copy=True)

    def full(self, shape, value, dtype):
        return np.full(shape, value, dtype=dtype)

    # --- elementwise -------------------------------------------------------------------
    def add(self, a, b):
        return a + b

    def sub(self, a, b):
        return a - b

    def mul(self, a, b):
        return a * b

    def neg(self, a):
        return -a

    def scale(self, a, c):
        return a * a.dtype.type(c)

    # --- reductions and movement -------------------------------------------------------
    def sum(self, a):
        return np.asarray(a.sum(dtype=a.dtype))

    def broadcast_scalar(self, s, shape):
        return np.full(shape, s, dtype=s.dtype)

    def sum_rows(self, a):
        return a.sum(axis=0)

    def reshape(self, a, shape):
        return a.reshape(shape)      # a copy in C order when a's memory is channel-last

    # --- dense layers ------------------------------------------------------------------
    def matmul(self, a, b, trans_a=False, trans_b=False):
        with self._threads.blas_held():
            return (a.T if trans_a else a) @ (b.T if trans_b else b)

    def linear(self, x, w, b):
        with self._threads.blas_held():
            out = x @ w.T
        out += b
        return out

    # --- convolution -------------------------------------------------------------------
    def conv2d(self, x, w, b):
        o, _, k, _ = w.shape
        cols = self._buffers.empty(_cols_shape(x.shape, k), x.dtype)
        out = self._buffers.empty(cols.shape[:3] + (o,), x.dtype)
        w_rows = _weight_rows(w)
        bias_column = cols.shape[3] > w_rows.shape[1]
        w_rows_t = (np.concatenate([w_rows, b[:, None]], axis=1) if bias_column else w_rows).T

        def conv_slice(x_nhwc, cols, out):
            np.matmul(_im2col(x_nhwc, k, cols), w_rows_t, out=out.reshape(-1, o))
            if not bias_column:
                out += b

        self._threads.map(conv_slice, _channels_last(x), cols, out)
        self._im2col_memo.remember(x, cols)           # the weight gradient needs it again
        return out.transpose(0, 3, 1, 2)              # NCHW view, NHWC memory

    def conv2d_backward(self, x, w, g, needs):
        n, c, h, wd = x.shape
        o, _, k, _ = w.shape
        w_rows = _weight_rows(w)
        cols = self._im2col_memo.recall(x)
        fresh_cols = cols is None or cols.shape != _cols_shape(x.shape, k)
        if fresh_cols:
            cols = self._buffers.empty(_cols_shape(x.shape, k), x.dtype)
        dx = self._buffers.empty((n, h, wd, c), x.dtype) if needs[0] else None

        def backward_slice(x_nhwc, g_nhwc, cols, dx=None):
            g_rows = g_nhwc.reshape(-1, o)            # (N*OH*OW, O); free for NHWC memory
            if dx is not None:
                _col2im_product(g_rows, w_rows, k, dx)
            if not (needs[1] or needs[2]):
                return None
            rows = _im2col(x_nhwc, k, cols) if fresh_cols else cols.reshape(len(g_rows), -1)
            # cols^T @ g rather than g^T @ cols: twice as fast for the first layer's columns
            sums = rows.T @ g_rows          # (k*k*C, O), and db as a last row with the bias column
            if rows.shape[1] > k * k * c:
                return sums
            # a matrix-vector product: 10x faster than sum(axis=0) over rows of only O numbers
            return np.concatenate([sums, np.ones((1, len(g_rows)), g_rows.dtype) @ g_rows])

        arrays = (_channels_last(x), _channels_last(g), cols) + ((dx,) if needs[0] else ())
        parts = self._threads.map(backward_slice, *arrays)
        dw = db = None
        if needs[1] or needs[2]:
            dw_cols = functools.reduce(np.add, parts)
            if needs[1]:
                dw = np.ascontiguousarray(dw_cols[:-1].reshape(k, k, c, o).transpose(3, 2, 0, 1))
            if needs[2]:
                db = dw_cols[-1].copy()
        return (None if dx is None else dx.transpose(0, 3, 1, 2)), dw, db

    # --- pooling -----------------------------------------------------------------------
    def max_pool2d(self, x, k):
        out = self._buffers.like(_window_part(x, 0, 0, k)[0])   # ceil mode: ceil(H/k) rows
        # a call over a strided window part (runs of C numbers) costs about what a contiguous
        # call over all of x does, so x's size stands for the size of each call
        self._threads.map(functools.partial(_max_pool, k=k), x, out, call_elements=x.size)
        return out

    def max_pool2d_backward(self, x, y, g, k):
        dx = self._buffers.like(x)
        self._threads.map(functools.partial(_max_pool_backward, k=k), x, y, g, dx,
                          call_elements=x.size)
        return dx

    # --- activations -------------------------------------------------------------------
    def gelu(self, x):
        out, slope = self._buffers.like(x), self._buffers.like(x)
        self._gelu_into(x, out, slope)
        self._gelu_memo.remember(x, slope)   # GELU'(x), for the backward
        return out

    def gelu_backward(self, x, g):
        slope = self._gelu_memo.recall(x)
        if slope is None:
            slope = self._buffers.like(x)
            self._gelu_into(x, self._buffers.like(x), slope)
        return np.multiply(g, slope, out=self._buffers.like(x))

    def _gelu_into(self, x, out, slope):
        if x.dtype == np.float64:
            _gelu_float64(x, out, slope)
        else:
            self._threads.map(functools.partial(_gelu_float32_in_pieces, empty=self._buffers.empty),
                              x, out, slope, call_elements=x.size)

    def relu(self, x):
        return np.maximum(x, x.dtype.type(0))

    def relu_backward(self, x, g):
        return np.where(x > 0, g, g.dtype.type(0))

    def log_softmax(self, x):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def log_softmax_backward(self, y, g):
        return g - np.exp(y) * g.sum(axis=-1, keepdims=True)

    # --- optimiser updates -------------------------------------------------------------
    def sgd_update(self, p, g, v, lr, momentum, weight_decay):
        v *= momentum
        v += g
        if weight_decay:
            v += weight_decay * p
        p -= p.dtype.type(lr) * v

    def adam_update(self, p, g, m, v, lr, beta1, beta2, eps, weight_decay, step):
        d = g + weight_decay * p if weight_decay else g
        work = np.multiply(d, 1.0 - beta1)           # one temporary, reused: this runs every step
        m *= beta1
        m += work
        np.multiply(d, d, out=work)
        work *= 1.0 - beta2
        v *= beta2
        v += work
        np.multiply(v, 1.0 / (1.0 - beta2 ** step), out=work)          # v_hat
        np.sqrt(work, out=work)
        work += eps
        np.divide(m, work, out=work)
        work *= lr / (1.0 - beta1 ** step)                             # lr * m_hat / (...)
        p -= work

def unavailable_reason():
    return None


def create():
    return NumpyBackend()
