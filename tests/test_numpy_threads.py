"""The NumPy backend's threads: a primitive split into batch slices gives the serial numbers.

The backend uses as many threads as BLAS may (set here through threadpoolctl, as ``microconv
bench --threads`` does). Small arrays, and primitives whose many NumPy calls would each get few
elements, stay on one thread, so the per-op cases lower both bounds to zero to send every drawn
shape through the slices: uneven slices, and batches smaller than the thread count. Only the
order of the sums over the batch (weight and bias gradients) may differ from the serial path,
so every comparison is float32-tight.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, conv_case, distinct_values
from tolerance import assert_close

import microconv as mc
from microconv.backends import ops_numpy
from microconv.engine.optim import SGD
from microconv.letters.model import ConvoAlphabetModel, LetterGraph

threadpoolctl = pytest.importorskip("threadpoolctl")

THREAD_COUNTS = (2, 3)


def blas_threads(count):
    return threadpoolctl.threadpool_limits(limits=count, user_api="blas")


def blas_thread_count():
    """The first BLAS's thread count (other thread pools, e.g. PyTorch's OpenMP, are listed too)."""
    return next(lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas")


def values_and_gradients(threads, build, inputs, seed=0):
    """Forward value and every input's gradient on a fresh NumPy backend, with ``threads``."""
    be = ops_numpy.create()
    with blas_threads(threads):
        leaves = [mc.tensor(a, backend=be, requires_grad=True) for a in inputs]
        out = build(*leaves)
        weights = np.random.default_rng(seed).uniform(-1, 1, out.shape).astype(np.float32)
        (out * mc.tensor(weights, backend=be)).sum().backward()
        return out.numpy(), [leaf.grad for leaf in leaves]


@contextlib.contextmanager
def slices_for_every_size():
    """Every primitive split into slices, however small its arrays or its NumPy calls."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ops_numpy, "_PARALLEL_MIN_ELEMENTS", 0)
        patch.setattr(ops_numpy, "_MIN_CALL_ELEMENTS", 0)
        yield


def check_threads_agree(build, inputs, terms=1, magnitude=4.0):
    """Serial against 2 and 3 threads, with slices for every size, however small."""
    serial = values_and_gradients(1, build, inputs)
    for threads in THREAD_COUNTS:
        with slices_for_every_size():
            out, grads = values_and_gradients(threads, build, inputs)
        assert_close(out, serial[0], terms=terms, magnitude=magnitude,
                     what=f"forward, {threads} threads")
        for i, (grad, reference) in enumerate(zip(grads, serial[1])):
            assert_close(grad, reference, terms=terms, magnitude=magnitude,
                         what=f"gradient of input {i}, {threads} threads")


@given(conv_case(max_batch=5, max_channels=3))
def test_conv_in_slices(case):
    x, w, b = case
    check_threads_agree(mc.conv2d, [x, w, b], terms=x.size)


@given(st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 7))
       .flatmap(lambda s: distinct_values((s[0], s[1], s[2], s[2]))), st.integers(1, 3))
def test_pool_and_gelu_in_slices(x, k):
    check_threads_agree(lambda a: mc.gelu(mc.max_pool2d(a, k)), [x])


@given(st.integers(1, 6).flatmap(lambda n: st.tuples(arrays((n, 5)), arrays((3, 5)),
                                                     arrays((3,)))))
def test_linear_layers_with_threads(case):
    check_threads_agree(mc.linear, list(case), terms=5)


def training_steps(be, steps=2, batch=16, seed=0):
    """Loss, gradients and weights after ``steps`` SGD steps of the letter model on ``be``."""
    model = ConvoAlphabetModel(be, seed=seed)
    graph = LetterGraph(model, batch, train=True)
    optimizer = SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        graph.feed(rng.uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32),
                   rng.integers(0, 26, batch))
        graph.loss.backward()
        losses.append(graph.loss.item())
        grads = {name: p.grad for name, p in model.named_parameters()}
        optimizer.step()
    return losses, grads, model.state_dict()


def assert_same_training(result, reference, what):
    losses, grads, weights = result
    assert_close(losses, reference[0], terms=1000, what=f"losses, {what}")
    for name in reference[1]:
        assert_close(grads[name], reference[1][name], terms=1000, what=f"grad {name}, {what}")
        assert_close(weights[name], reference[2][name], terms=1000, what=f"{name}, {what}")


def test_the_letter_model_trains_alike_on_one_two_and_three_threads():
    """The letter model's real shapes, every conv, pool and GELU in slices."""
    with blas_threads(1):
        serial = training_steps(ops_numpy.create())
    for threads in THREAD_COUNTS:
        with blas_threads(threads), slices_for_every_size():
            assert_same_training(training_steps(ops_numpy.create()), serial, f"{threads} threads")
            assert blas_thread_count() == threads          # held to 1 only inside the slices


@pytest.mark.parametrize("shared", [True, False], ids=["one backend object", "two objects"])
def test_two_threads_training_at_once(shared):
    """Two threads train two models at once, through one backend object or two: each gets
    exactly the numbers it gets alone, and BLAS's thread count is restored when both are done."""
    with blas_threads(2):
        objects = [ops_numpy.create()] * 2 if shared else [ops_numpy.create(), ops_numpy.create()]
        alone = [training_steps(be, steps=3, seed=seed) for be, seed in zip(objects, (1, 2))]
        together = [None, None]
        errors = []

        def train(index):
            try:
                together[index] = training_steps(objects[index], steps=3, seed=index + 1)
            except Exception as exc:  # noqa: BLE001 - reported by the main thread below
                errors.append(exc)

        workers = [threading.Thread(target=train, args=(i,)) for i in (0, 1)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, errors
        for index in (0, 1):
            assert_same_training(together[index], alone[index], f"model {index + 1}")
        assert blas_thread_count() == 2


@pytest.mark.parametrize("pooled_side, threads_used", [(13, 2), (6, 1)],
                         ids=["first layer: in slices", "second layer: one thread"])
def test_gelu_splits_only_where_each_call_is_long(monkeypatch, pooled_side, threads_used):
    """GELU makes ~30 NumPy calls: on the second layer's activations (64x64x6x6, 74k elements a
    thread) two threads would wait for each other at every call; on the first layer's
    (64x32x13x13) each call still gets 173k elements a thread."""
    names = set()

    def recording(x, *rest):
        names.add(threading.current_thread().name)
        return gelu_float32(x, *rest)

    gelu_float32 = ops_numpy._gelu_float32
    monkeypatch.setattr(ops_numpy, "_gelu_float32", recording)
    channels = {13: 32, 6: 64}[pooled_side]
    x = np.ones((64, channels, pooled_side, pooled_side), dtype=np.float32)
    with blas_threads(2):
        ops_numpy.create().gelu(x)
    assert len(names) == threads_used


def test_an_error_in_a_slice_reaches_the_caller_and_restores_blas():
    threads = ops_numpy.create()._threads
    with blas_threads(2):
        def fail_on_the_second_half(rows):
            if rows[0, 0] >= 50:
                raise ValueError("second half")
            return rows.sum()

        row_numbers = np.arange(100.0)[:, None] * np.ones(1000)
        with pytest.raises(ValueError, match="second half"):
            threads.map(fail_on_the_second_half, row_numbers)
        assert blas_thread_count() == 2
        halves = threads.map(lambda part: part.sum(), np.ones((100, 1000)))
        assert halves == [50_000.0, 50_000.0]


def test_slices_follow_the_callers_floating_point_error_handling():
    """np.errstate is per thread; the slices running on other threads must do as the caller
    says (the engine silences overflow around every computation and checks values itself)."""
    huge = np.full((64, 32, 13, 13), 3e38, dtype=np.float32)     # x * 2Phi(x) overflows
    be = ops_numpy.create()
    with blas_threads(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(over="ignore"):
                assert np.isinf(be.to_numpy(be.gelu(be.from_numpy(huge)))).all()
        with np.errstate(over="raise"), pytest.raises(FloatingPointError):
            be.gelu(be.from_numpy(huge))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="this platform has no fork")
def test_slices_still_run_in_a_forked_child():
    threads = ops_numpy.create()._threads
    halves = lambda: threads.map(lambda part: part.sum(), np.ones((100, 1000)))   # noqa: E731
    with blas_threads(2):
        assert halves() == [50_000.0, 50_000.0]        # the parent's workers are running
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:                     # the child: the parent's worker threads did not follow
            try:
                os.write(write, b"ok" if halves() == [50_000.0, 50_000.0] else b"wrong")
            finally:
                os._exit(0)
        os.close(write)
        answered = select.select([read], [], [], 60)[0]
        answer = os.read(read, 16) if answered else b"no answer in 60 s"
        if not answered:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)
    assert answer == b"ok"


def test_a_block_ending_on_another_thread_leaves_the_backend_its_threads():
    """The main thread holds BLAS first, a worker's block ends last: OpenBLAS takes a thread
    count from the main thread only, so the worker must not be the one to restore it, or the
    backend would run every later primitive on one thread."""
    with blas_threads(2):
        threads = ops_numpy._shared_threads()
        inside, release = threading.Event(), threading.Event()

        def hold_until_released():
            with threads.blas_held():
                inside.set()
                release.wait()

        with threads.blas_held():
            worker = threading.Thread(target=hold_until_released)
            worker.start()
            inside.wait()
        release.set()
        worker.join()
        assert threads.count() == 2
        with threads.blas_held():
            assert blas_thread_count() == 1         # held again by the next block
        assert blas_thread_count() == 2 and threads.count() == 2
