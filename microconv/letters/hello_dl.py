"""Import the seed's trained weights: hello-dl's parameter state files.

A hello-dl state file (seed-spec 5.1) is raw little-endian float32: the begin magic
(12345, 67890), then every tensor in model order as ``rows, cols`` (two floats) followed by
rows*cols values in column-major order, then the end magic (9876, 54321). There are no
names, counts or versions, so the layout is recognised from the sequence of tensor shapes.

Two layouts of the ConvoAlphabetModel exist:

- ``legacy`` (the sample ``tensor-convo-20230122-final-gelu.state``, 190,632 bytes): one 3x3
  kernel per output channel, applied to every input channel, plus one bias per output channel
  that is added once per input channel (seed-spec 5.2, 5.3).
- ``head`` (what hello-dl writes since February 2023, 632,744 bytes): one kernel per
  (output, input) pair, kernel index ``o * C_in + i``, bias still added once per input
  channel (seed-spec 3.1).

Both become microconv's standard layout: ``weight[o, i, r, c]`` and an effective bias
``C_in * b[o]``. The seed flattens each pooled 2x2 map column-major
(``flat[4*ch + 2*col + row]``) while microconv flattens row-major (``flat[4*ch + 2*row + col]``),
so fc1's weight columns are permuted to give identical results.
"""

from __future__ import annotations

import math
import os

import numpy as np

from microconv.errors import CheckpointError
from microconv.letters.checkpoint import check_outputs, save_checkpoint
from microconv.letters.data import file_digest
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing

BEGIN_MAGIC = (12345.0, 67890.0)
END_MAGIC = (9876.0, 54321.0)
LEGACY_BYTES = 190_632
HEAD_BYTES = 632_744

# (name, C_in, C_out) of the three convolutions and (name, in, out) of the three linears.
CONVS = (("c1", 1, 32), ("c2", 32, 64), ("c3", 64, 128))
LINEARS = (("fc1", 512, 64), ("fc2", 64, 128), ("fc3", 128, 26))
KERNEL = 3
POOLED_CHANNELS, POOLED_SIZE = 128, 2        # the (128, 2, 2) maps that fc1 reads


def _layout_shapes(per_pair_kernels):
    """The (rows, cols) of every tensor in a layout's file order."""
    shapes = []
    for _, c_in, c_out in CONVS:
        kernels = c_out * c_in if per_pair_kernels else c_out
        shapes += [(KERNEL, KERNEL)] * kernels + [(1, 1)] * c_out
    for _, n_in, n_out in LINEARS:
        shapes += [(n_out, n_in), (n_out, 1)]
    return shapes


LAYOUTS = {"legacy": _layout_shapes(per_pair_kernels=False),
           "head": _layout_shapes(per_pair_kernels=True)}
LAYOUT_BYTES = {"legacy": LEGACY_BYTES, "head": HEAD_BYTES}


def read_state_tensors(path):
    """Every tensor of a hello-dl state file as a (rows, cols) float32 array, in file order.

    Checks both magics and every header; a file that stops inside a tensor or before the end
    magic is reported as truncated.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise CheckpointError(f"cannot read seed state {path}: {exc.strerror or exc}") from None
    return _parse_tensors(path, data)


def _parse_tensors(path, data):
    if len(data) < 8 or tuple(np.frombuffer(data[:8], dtype="<f4")) != BEGIN_MAGIC:
        raise CheckpointError(f"{path}: not a hello-dl state file (no begin magic 12345, 67890)")
    if len(data) % 4 != 0:
        raise CheckpointError(f"{path}: {len(data)} bytes is not a whole number of float32 "
                              "values; a damaged hello-dl state file")
    values = np.frombuffer(data, dtype="<f4")
    tensors = []
    pos = 2
    while True:
        remaining = len(values) - pos
        if remaining == 2 and tuple(values[pos:]) == END_MAGIC:
            return tensors
        where = f"tensor {len(tensors) + 1} at byte {4 * pos}"
        if remaining < 2:
            raise CheckpointError(f"{path}: truncated: the file ends at byte {len(data)} "
                                  f"without the end magic 9876, 54321")
        rows, cols = (float(v) for v in values[pos:pos + 2])
        if not all(v.is_integer() and 1 <= v <= 1_000_000 for v in (rows, cols)):
            if remaining == 2:
                raise CheckpointError(f"{path}: bad end magic ({rows:g}, {cols:g}); "
                                      "expected 9876, 54321")
            raise CheckpointError(f"{path}: damaged or unknown layout: {where} has an impossible "
                                  f"size header ({rows:g} x {cols:g})")
        rows, cols = int(rows), int(cols)
        count = rows * cols
        if count > remaining - 2:
            raise CheckpointError(f"{path}: truncated: {where} ({rows}x{cols}) needs "
                                  f"{4 * count} bytes but only {4 * (remaining - 2)} remain")
        flat = values[pos + 2:pos + 2 + count]
        tensors.append(flat.reshape(cols, rows).T.astype(np.float32))   # column-major storage
        pos += 2 + count


def identify_layout(path, tensors):
    """'legacy' or 'head' from the sequence of tensor shapes; CheckpointError otherwise."""
    shapes = [t.shape for t in tensors]
    for name, expected in LAYOUTS.items():
        if shapes == expected:
            return name
    total = sum(t.size for t in tensors)
    raise CheckpointError(
        f"{path}: unknown layout: {len(tensors)} tensors, {total} parameters; known layouts are "
        f"legacy ({len(LAYOUTS['legacy'])} tensors, {LEGACY_BYTES} bytes) and head "
        f"({len(LAYOUTS['head'])} tensors, {HEAD_BYTES} bytes) of the ConvoAlphabetModel")


def read_seed_state(path):
    """(layout name, {microconv parameter name: array}) from a hello-dl state file.

    The arrays are in microconv's standard layout and names (``c1.weight`` ... ``fc3.bias``,
    as in ``ConvoAlphabetModel``), ready for ``load_state_dict``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"seed state {path} does not exist or is not a file")
    size = os.path.getsize(path)
    if size not in LAYOUT_BYTES.values():
        if size <= 2 * HEAD_BYTES:
            # Parse anyway so the message says what is wrong (truncated, damaged, other model).
            read_state_tensors(path)
        raise CheckpointError(f"{path}: unknown layout: {size} bytes; a ConvoAlphabetModel state "
                              f"file has {LEGACY_BYTES} (legacy) or {HEAD_BYTES} (head) bytes")
    tensors = read_state_tensors(path)
    layout = identify_layout(path, tensors)
    bad = [i + 1 for i, t in enumerate(tensors) if not np.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} tensors hold NaN or infinite values "
                              f"(first: tensor {bad[0]}); the weights are unusable")
    return layout, convert(layout, tensors)


def convert(layout, tensors):
    """Seed tensors in file order -> microconv's named arrays (standard layout)."""
    params = {}
    it = iter(tensors)
    for name, c_in, c_out in CONVS:
        if layout == "legacy":
            kernels = np.stack([next(it) for _ in range(c_out)])            # (C_out, 3, 3)
            weight = np.repeat(kernels[:, None], c_in, axis=1)              # same kernel per input
        else:
            kernels = np.stack([next(it) for _ in range(c_out * c_in)])     # index o * C_in + i
            weight = kernels.reshape(c_out, c_in, KERNEL, KERNEL)
        bias = np.array([next(it)[0, 0] for _ in range(c_out)], dtype=np.float32)
        params[f"{name}.weight"] = np.ascontiguousarray(weight, dtype=np.float32)
        params[f"{name}.bias"] = (bias * np.float32(c_in)).astype(np.float32)   # added C_in times
    for name, _, _ in LINEARS:
        params[f"{name}.weight"] = np.ascontiguousarray(next(it), dtype=np.float32)
        params[f"{name}.bias"] = next(it)[:, 0].astype(np.float32)
    params["fc1.weight"] = params["fc1.weight"][:, seed_flatten_order()]
    return params


def seed_flatten_order():
    """perm with microconv_flat == seed_flat[perm], for the (128, 2, 2) pooled maps.

    The seed reads each map column-major, so map[ch, row, col] sits at 4*ch + 2*col + row;
    microconv reads it row-major. Taking fc1's weight columns in this order makes
    ``fc1(mc.flatten(x))`` equal to the seed's ``fc1(flatten(x))``.
    """
    ch, row, col = np.meshgrid(np.arange(POOLED_CHANNELS), np.arange(POOLED_SIZE),
                               np.arange(POOLED_SIZE), indexing="ij")
    seed_index = POOLED_SIZE * POOLED_SIZE * ch + POOLED_SIZE * col + row
    return seed_index.reshape(-1)            # listed in microconv (row-major) order


def write_seed_state(path, layout, tensors):
    """Write tensors (file order) in hello-dl's byte layout; used by tests and for round trips."""
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown layout {layout!r}")
    parts = [np.array(BEGIN_MAGIC, dtype="<f4")]
    for t in tensors:
        t = np.asarray(t, dtype="<f4")
        parts += [np.array(t.shape, dtype="<f4"), t.T.reshape(-1)]       # column-major values
    parts.append(np.array(END_MAGIC, dtype="<f4"))
    with open(path, "wb") as f:
        f.write(np.concatenate(parts).tobytes())


def inference_options(layout):
    """(model options, preprocessing) the network of this layout was trained with."""
    if layout == "legacy":
        # January 2023: GELU on fc3, raw pixels / 256, no per-image normalisation (5.3).
        return {"output_gelu": True}, Preprocessing(scale=1.0 / 256.0, normalize=False)
    # HEAD: no GELU after the pools nor on fc3, pixels / 256 then normalize(0.172575, 0.25)
    # (3.2, 3.4).
    return {"output_gelu": False, "pool_gelu": False}, Preprocessing()


def import_seed(state_path, out_path, backend="numpy"):
    """Convert a hello-dl state file into a microconv checkpoint; returns a summary dict.

    The summary (JSON-ready) holds the source file, its sha256, the layout, the output path,
    the parameter count, and the model options and preprocessing recorded (docs/seed.md).
    """
    state_path = os.fspath(state_path)
    check_outputs([("--out", out_path)], [("STATE", state_path)])
    layout, params = read_seed_state(state_path)
    digest = file_digest(state_path)
    options, preprocessing = inference_options(layout)
    model = ConvoAlphabetModel(backend=backend, **options)
    model.load_state_dict(params)
    source = {"file": os.path.basename(state_path), "sha256": digest, "layout": layout,
              "bytes": os.path.getsize(state_path)}
    header = {"imported_from": "hello-dl", "seed_state": source}
    save_checkpoint(out_path, model, preprocessing, header=header)
    summary = dict(source)
    summary.update(out=os.fspath(out_path), parameters=model.parameter_count(),
                   model_options=model.options, preprocessing=preprocessing.to_json())
    return summary


def reference_forward(layout, tensors, image, post_pool_gelu=True, output_gelu=None):
    """The seed's forward pass written directly from seed-spec 2 and 5.3, in float64 NumPy.

    ``tensors`` are in file order, ``image`` is one (28, 28) network input. It follows the
    seed's own data layout (per-kernel loops, column-major flatten), so it checks the
    conversion independently of microconv's engine. Returns the 26 log-probabilities.
    """
    if output_gelu is None:
        output_gelu = layout == "legacy"
    it = iter([np.asarray(t, dtype=np.float64) for t in tensors])
    maps = [np.asarray(image, dtype=np.float64)]
    for _, c_in, c_out in CONVS:
        n_kernels = c_out if layout == "legacy" else c_out * c_in
        kernels = [next(it) for _ in range(n_kernels)]
        biases = [next(it)[0, 0] for _ in range(c_out)]
        out = []
        for o in range(c_out):
            total = 0.0
            for i in range(c_in):
                kernel = kernels[o] if layout == "legacy" else kernels[o * c_in + i]
                total = total + _correlate(maps[i], kernel) + biases[o]    # bias on every input
            pooled = _max_pool_ceil(total)
            out.append(_gelu(pooled) if post_pool_gelu else pooled)
        maps = out
    x = np.concatenate([m.T.reshape(-1) for m in maps])                    # column-major flatten
    for index, _ in enumerate(LINEARS):
        w, b = next(it), next(it)[:, 0]
        x = w @ x + b
        if index < 2 or output_gelu:
            x = _gelu(x)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def _correlate(x, k):
    kh, kw = k.shape
    oh, ow = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += k[i, j] * x[i:i + oh, j:j + ow]
    return out


def _max_pool_ceil(x, k=2):
    h, w = x.shape
    out = np.empty((-(-h // k), -(-w // k)))
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[r, c] = x[r * k:(r + 1) * k, c * k:(c + 1) * k].max()       # edge windows truncated
    return out


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
