"""Damaged checkpoints and seed state files: one CheckpointError line, or exactly the same weights.

A checkpoint is a zip of .npy members whose CRCs are checked, so a flipped byte is either
caught or sits in zip metadata that does not change the arrays. A hello-dl state file has no
checksum: a flipped weight cannot be noticed, but it can never crash the reader either.
"""

import json
import re
import warnings
import zipfile

import numpy as np
import pytest
from clitools import (assert_one_line_exception, no_emnist_env, set_env, small_train_config,
                      with_peak_memory)
from hypothesis import given
from hypothesis import strategies as st

from microconv.errors import CheckpointError, MicroconvError
from microconv.letters import distributed, hello_dl, training
from microconv.letters.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from microconv.letters.training import resume_config, train
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """(bytes, header, params) of a valid checkpoint written the normal way."""
    path = tmp_path_factory.mktemp("good") / "good.npz"
    save_checkpoint(path, ConvoAlphabetModel("numpy", seed=0), Preprocessing(),
                    header={"class_names": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
    header, params, _ = read_checkpoint(path)
    return path.read_bytes(), header, params


def load_or_checkpoint_error(path):
    """load_checkpoint's answer: the classifier, or a CheckpointError naming the file."""
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
        return exc


def write(folder, name, content):
    path = folder / name
    path.write_bytes(content)
    return path


# --- checkpoints: arbitrary bytes, truncation, flipped bytes -------------------------------------

@given(content=st.binary(max_size=400),
       prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY\x01\x00"]))
def test_random_bytes_are_not_a_checkpoint(tmp_path_factory, content, prefix):
    path = write(tmp_path_factory.mktemp("fuzz"), "junk.npz", prefix + content)
    answer = load_or_checkpoint_error(path)
    assert isinstance(answer, CheckpointError)
    assert "junk.npz" in str(answer)


@given(cut=st.one_of(st.integers(0, 600), st.integers(0, 560_000)))
def test_truncated_checkpoints(tmp_path_factory, good, cut):
    content, _, _ = good
    cut = min(cut, len(content) - 1)
    path = write(tmp_path_factory.mktemp("cut"), "cut.npz", content[:cut])
    assert isinstance(load_or_checkpoint_error(path), CheckpointError)


def same_weights(classifier, header, params):
    state = classifier.model.state_dict()
    return (classifier.header == header and set(state) == set(params)
            and all(np.array_equal(state[name], params[name]) for name in params))


@given(data=st.data())
def test_a_flipped_byte_is_caught_or_changes_nothing(tmp_path_factory, good, data):
    content, header, params = good
    # Half the flips land in the last 4 kB: the JSON header member and the zip directory.
    position = data.draw(st.one_of(st.integers(0, len(content) - 1),
                                   st.integers(len(content) - 4096, len(content) - 1)))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(content)
    damaged[position] ^= 1 << bit
    path = write(tmp_path_factory.mktemp("flip"), "flip.npz", bytes(damaged))
    answer = load_or_checkpoint_error(path)
    if not isinstance(answer, CheckpointError):
        assert same_weights(answer, header, params), f"byte {position} changed the weights"


def test_a_lone_numpy_array_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="weights.npy is not a microconv checkpoint"):
        load_checkpoint(path)


# --- checkpoints that read but do not fit ---------------------------------------------------

def rewritten(tmp_path, good, header_change=None, **array_changes):
    """The good checkpoint with some arrays replaced (None: removed) and the header edited."""
    content, _, _ = good
    source = write(tmp_path, "source.npz", content)
    with np.load(source) as stored:
        arrays = {key: stored[key] for key in stored.files}
    header = json.loads(arrays["header"].tobytes())
    if header_change:
        header_change(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    for key, value in array_changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path = tmp_path / "changed.npz"
    np.savez(path, **arrays)
    return path


def test_another_architecture_reports_every_problem_in_one_message(tmp_path, good):
    path = rewritten(tmp_path, good, **{
        "param/fc1.bias": None,                                          # missing
        "param/fc2.bias": None,                                          # missing
        "param/fc4.weight": np.zeros((26, 26), np.float32),              # unexpected
        "param/c1.weight": np.zeros((16, 1, 5, 5), np.float32),          # mis-shaped
        "param/fc3.weight": np.zeros((10, 128), np.float32),             # mis-shaped
    })
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message
    for part in ("missing fc1.bias (64,)", "missing fc2.bias (128,)", "unexpected fc4.weight",
                 "c1.weight has shape (16, 1, 5, 5), the model needs (32, 1, 3, 3)",
                 "fc3.weight has shape (10, 128), the model needs (26, 128)"):
        assert part in message, message


@pytest.mark.parametrize("change, message", [
    ({"param/fc1.weight": np.full((64, 512), np.nan, np.float32)}, "fc1.weight are not finite"),
    ({"param/fc1.bias": np.array(["x"] * 64)}, "fc1.bias are not finite real numbers"),
    ({"param/fc1.bias": np.ones(64, np.complex64)}, "fc1.bias are not finite real numbers"),
])
def test_unusable_parameter_values(tmp_path, good, change, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(rewritten(tmp_path, good, **change))


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(architecture=["ConvoAlphabetModel"]), "header.architecture must be"),
    (lambda h: h.update(architecture="ResNet50"),
     "header.architecture must be one of ConvoAlphabetModel, not 'ResNet50'"),
    (lambda h: h.update(format="something-else"), "not a microconv checkpoint"),
    (lambda h: h.update(model_options=[1, 2]), "header.model_options must be a record"),
    (lambda h: h.update(model_options={"dropout": "lots"}),
     "header.model_options.dropout must be a finite number"),
    (lambda h: h.update(model_options={"layers": 50}), "unknown field 'layers'"),
    (lambda h: h.update(preprocessing={"scale": "x"}), "header.preprocessing.scale must be"),
    (lambda h: h.update(preprocessing={"std": 0}), "header.preprocessing.std must be"),
    (lambda h: h.update(preprocessing={"std": 1e300}), "header.preprocessing.std must be"),
    (lambda h: h.update(preprocessing={"normalize": "yes"}), "header.preprocessing.normalize"),
    (lambda h: h.update(class_names=12), "header.class_names must be"),
    (lambda h: h.update(class_names="ABCA"), "header.class_names must be distinct characters"),
    (lambda h: h.update(class_names="A" * 27), "header.class_names must be"),
    (lambda h: h.update(progress={"step": -3}), "header.progress.step must be an integer >= 0"),
    (lambda h: h.update(config={"batch_size": [64]}), "header.config.batch_size must be a single"),
    (lambda h: h.update(version=2), "header.version must be an integer in 1..1"),
    (lambda h: h.update(optimizer_steps=40, progress={"step": 39}),
     "the optimiser took 40 steps but the run is at step 39"),
])
def test_damaged_headers(tmp_path, good, edit, message):
    with pytest.raises(CheckpointError, match=message) as caught:
        load_checkpoint(rewritten(tmp_path, good, header_change=edit))
    assert "\n" not in str(caught.value)


def test_a_header_that_is_not_json(tmp_path, good):
    path = rewritten(tmp_path, good, header=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(CheckpointError, match="no valid microconv header"):
        load_checkpoint(path)
    path = rewritten(tmp_path, good, header=None)
    with pytest.raises(CheckpointError, match="no valid microconv header"):
        load_checkpoint(path)


# --- hello-dl state files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def state_bytes(tmp_path_factory):
    rng = np.random.default_rng(0)
    tensors = [rng.normal(0, 0.1, size=shape).astype(np.float32)
               for shape in hello_dl.LAYOUTS["legacy"]]
    path = tmp_path_factory.mktemp("state") / "good.state"
    hello_dl.write_seed_state(path, "legacy", tensors)
    layout, params = hello_dl.read_seed_state(path)
    assert layout == "legacy"
    return path.read_bytes(), params


def state_or_checkpoint_error(path):
    try:
        return hello_dl.read_seed_state(path)
    except CheckpointError as exc:
        assert_one_line_exception(exc, str(path))
        return exc


@given(content=st.binary(max_size=300),
       magic=st.sampled_from([b"", np.array(hello_dl.BEGIN_MAGIC, "<f4").tobytes()]))
def test_random_bytes_are_not_a_seed_state(tmp_path_factory, content, magic):
    path = write(tmp_path_factory.mktemp("fuzz"), "junk.state", magic + content)
    assert isinstance(state_or_checkpoint_error(path), CheckpointError)


def test_seed_state_truncated_near_either_end(tmp_path, state_bytes):
    content, _ = state_bytes
    for cut in [*range(0, 80), *range(len(content) - 80, len(content))]:
        path = write(tmp_path, "cut.state", content[:cut])
        assert isinstance(state_or_checkpoint_error(path), CheckpointError), cut


@given(cut=st.integers(0, hello_dl.LEGACY_BYTES - 1))
def test_seed_state_truncated_anywhere(tmp_path_factory, state_bytes, cut):
    content, _ = state_bytes
    path = write(tmp_path_factory.mktemp("cut"), "cut.state", content[:cut])
    assert isinstance(state_or_checkpoint_error(path), CheckpointError)


@given(data=st.data())
def test_seed_state_with_a_flipped_byte(tmp_path_factory, state_bytes, data):
    content, params = state_bytes
    # Half the flips hit the first tensors' size headers and the magics.
    position = data.draw(st.one_of(st.integers(0, len(content) - 1),
                                   st.sampled_from([*range(0, 24), *range(len(content) - 8,
                                                                          len(content))])))
    damaged = bytearray(content)
    damaged[position] ^= 1 << data.draw(st.integers(0, 7))
    path = write(tmp_path_factory.mktemp("flip"), "flip.state", bytes(damaged))
    answer = state_or_checkpoint_error(path)
    if not isinstance(answer, CheckpointError):
        # No checksum in the format: a changed weight reads as a (finite) weight.
        layout, got = answer
        assert layout == "legacy" and set(got) == set(params)
        assert all(np.isfinite(v).all() for v in got.values())
        changed = [n for n in params if not np.array_equal(got[n], params[n])]
        assert len(changed) <= 1


def test_a_seed_state_that_is_a_folder(tmp_path):
    (tmp_path / "dir.state").mkdir()
    with pytest.raises(CheckpointError, match="does not exist or is not a file"):
        hello_dl.read_seed_state(tmp_path / "dir.state")


# --- every header field, any value -----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, no_emnist_module):
    """The bytes of a checkpoint a two-step training run wrote (optimiser, progress, config)."""
    folder = tmp_path_factory.mktemp("trained")
    train(small_train_config(folder, limit=32, epochs=1))
    return (folder / "run.npz").read_bytes()


@pytest.fixture(scope="module")
def no_emnist_module(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    set_env(patch, no_emnist_env(tmp_path_factory.mktemp("env")))
    yield
    patch.undo()


FIELDS = ["version", "architecture", "model_options", "model_options.dropout",
          "model_options.pool_gelu", "preprocessing", "preprocessing.std", "preprocessing.mean",
          "preprocessing.scale", "class_names", "config", "config.batch_size", "config.seed",
          "config.epochs", "config.lr", "config.optimizer", "config.max_minutes",
          "config.validation_size", "config.dropout", "config.data_dir", "config.backend",
          "dataset", "dataset.description", "optimizer", "optimizer.name", "optimizer.betas",
          "optimizer_steps", "progress", "progress.step", "progress.epoch",
          "progress.batch_in_epoch", "progress.elapsed_s", "progress.best_accuracy",
          "progress.time_to_target_s", "rng", "metrics"]

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
              st.sampled_from([1e300, -1, 0, 1, 2**31, "64", "adam", "sgd", "", "0123456789"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


def set_dotted(field, value):
    """A header change setting one field (a dotted path) to value; a parent that is not a
    dictionary (or is missing) has the field set one level up instead."""
    def change(header):
        *parents, last = field.split(".")
        node = header
        for name in parents:
            node = node.setdefault(name, {}) if isinstance(node.get(name), dict) else node
        node[last] = value
    return change


def with_header_value(content, folder, field, value):
    """The checkpoint bytes with one header field (a dotted path) set to value."""
    return rewritten(folder, (content, None, None), header_change=set_dotted(field, value))


@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_value_in_any_header_field(tmp_path_factory, trained, field, value):
    path = with_header_value(trained, tmp_path_factory.mktemp("field"), field, value)
    try:
        classifier = load_checkpoint(path)
    except CheckpointError as exc:
        assert_one_line_exception(exc, str(path))
    else:
        images = np.zeros((2, 28, 28), np.uint8)
        images[:, 8:20, 12:16] = 255
        assert np.isfinite(classifier.predict(images)).all()
    try:
        config = resume_config(path, limit=32, epochs=1)
        run = training._Run(config.checked(), None, training._Signals(),
                             distributed.SingleProcess())
        run.setup()
    except CheckpointError as exc:
        assert_one_line_exception(exc, str(path))
    except MicroconvError as exc:                # a saved setting this machine cannot use
        assert "\n" not in str(exc), str(exc)
    else:
        assert 0 <= run.step and run.batch_in_epoch >= 0 and run.epoch >= 1


# --- members: only the ones used are read, each bounded before reading ------------------------

def with_member(content, folder, name, size, header=None):
    """The checkpoint bytes plus a deflated member of ``size`` zero bytes (after an optional
    .npy header), written in pieces so the test itself never holds it."""
    path = write(folder, "extra.npz", content)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # a second member of the same name
        with z.open(name, "w", force_zip64=True) as member:
            if header is not None:
                member.write(header)
            for _ in range(size >> 20):
                member.write(bytes(1 << 20))
    return path


def test_a_junk_member_is_never_decompressed(tmp_path, good):
    content, header, params = good
    path = with_member(content, tmp_path, "junk.bin", 300 << 20)
    classifier, peak = with_peak_memory(lambda: load_checkpoint(path))
    assert same_weights(classifier, header, params)
    assert peak < 20_000_000, peak


def npy_header(shape, dtype="<f4"):
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("name, size, header, fragment", [
    ("param/fc1.weight.npy", 300 << 20, None, "its arrays would take 3"),
    ("param/fc1.weight.npy", 1 << 20, npy_header((10**12,)),
     "claims shape (1000000000000,) of float32, which does not match its size"),
    ("optim/fc1.weight/m.npy", 1 << 20, npy_header((4,), "|O"), "are not finite real numbers"),
    ("header.npy", 2 << 20, npy_header((2 << 20,), "|u1"), "the header takes 2.1 MB"),
])
def test_members_that_would_inflate_or_lie_about_their_size(tmp_path, good, name, size, header,
                                                            fragment):
    content, _, _ = good
    path = with_member(content, tmp_path, name, size, header)

    def refused():
        with pytest.raises(CheckpointError, match=re.escape(fragment)) as caught:
            load_checkpoint(path)
        return caught.value

    error, peak = with_peak_memory(refused)
    assert_one_line_exception(error, str(path))
    assert peak < 20_000_000, peak
