"""Training and inference throughput of the ConvoAlphabetModel: NumPy vs OpenCL, side by side.

Run it the way the benchmarks are meant to be run (the machine presets OpenBLAS variables):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/opencl_vs_numpy.py

A training step is forward + backward + one Adam update on a batch of 64 random images, with
the loss read back (as a training loop does); inference is the forward pass with the
log-probabilities read back. Each number is the median of 5 timed runs after 2 warm-up runs
(the first OpenCL run compiles kernels). Options: --batch N, --runs N, --backends a,b.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import microconv as mc
from microconv import backends
from microconv.nn import ConvoAlphabetModel
from microconv.optim import Adam


def median_seconds(step, runs, warmup=2):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(backend, batch, runs):
    rng = np.random.default_rng(0)
    be = backends.get(backend)
    model = ConvoAlphabetModel(backend=be, seed=1)
    images = rng.random((batch, 1, 28, 28)).astype(np.float32)
    labels = mc.tensor(mc.one_hot(rng.integers(0, 26, batch), 26), backend=be)
    x = mc.tensor(images, backend=be)
    loss = mc.nll_loss(model(x, train=True), labels)
    optimizer = Adam(model.named_parameters(), lr=1e-3)

    def train_step():
        x.assign(rng.random((batch, 1, 28, 28)).astype(np.float32))
        loss.backward()
        loss.item()           # read after backward, before the update changes the weights
        optimizer.step()

    x_eval = mc.tensor(images, backend=be)
    logp = model(x_eval)

    def inference():
        x_eval.assign(rng.random((batch, 1, 28, 28)).astype(np.float32))
        logp.numpy()

    return be.describe(), median_seconds(train_step, runs), median_seconds(inference, runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="numpy,opencl")
    args = parser.parse_args()
    rows = []
    for name in args.backends.split(","):
        reason = backends.unavailable_reason(name)
        if reason is not None:
            print(f"{name}: skipped ({reason})")
            continue
        rows.append((name, *measure(name, args.batch, args.runs)))
    print(f"ConvoAlphabetModel, batch {args.batch}, median of {args.runs} runs")
    print(f"{'backend':8} {'train ms':>9} {'train img/s':>12} {'infer ms':>9} {'infer img/s':>12}")
    for name, _, train, infer in rows:
        print(f"{name:8} {train * 1e3:9.1f} {args.batch / train:12.0f} {infer * 1e3:9.1f} "
              f"{args.batch / infer:12.0f}")
    if len(rows) > 1:
        base = rows[0]
        for name, _, train, infer in rows[1:]:
            print(f"{name} / {base[0]}: train {base[2] / train:.2f}x, inference "
                  f"{base[3] / infer:.2f}x")
    for name, described, _, _ in rows:
        print(f"  {name}: {described}")


if __name__ == "__main__":
    main()
