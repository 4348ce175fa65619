"""The Python API refuses every bad argument with a MicroconvError, and never warns.

Hypothesis hands each public entry point values of every wrong type (numbers too large for a
float, complex numbers, text, ragged lists, objects, NaN); the answer is a result or a
MicroconvError subclass, never a raw TypeError, ValueError or OverflowError, and never a NumPy
warning on stderr.
"""

import warnings

import numpy as np
import pytest
from clitools import assert_one_line_exception
from hypothesis import given
from hypothesis import strategies as st

import microconv as mc
from microconv.errors import MicroconvError
from microconv.letters.checkpoint import Classifier
from microconv.letters.model import ConvoAlphabetModel
from microconv.letters.preprocess import Preprocessing

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**80, 2**80), st.sampled_from([10**400, -10**400]),
    st.floats(allow_nan=True, allow_infinity=True), st.complex_numbers(max_magnitude=1e3),
    st.text(max_size=5), st.binary(max_size=5),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(-1, 1), st.text(max_size=1)), max_size=3),
    st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=3),
    st.sampled_from([object(), {"a": 1}, (2, "x"), np.complex64(1j), np.array(["a"]),
                     np.ones(3, np.complex128), np.array([1, None], dtype=object), slice(2)]))


def answers(call):
    """The call's result, or the MicroconvError it raised; anything else, or any warning,
    fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return call()
        except MicroconvError as exc:
            assert_one_line_exception(exc)
            return exc


def vector():
    return mc.tensor([1.0, 2.0, 3.0, 4.0])


@given(data=HOSTILE, dtype=st.sampled_from(["float32", "float64", "int8", None, 3]))
def test_tensor_takes_real_numbers_or_says_why_not(data, dtype):
    answer = answers(lambda: mc.tensor(data, dtype=dtype))
    if isinstance(answer, mc.Tensor):
        assert np.isfinite(answer.numpy()).all()


@given(other=HOSTILE, op=st.sampled_from(["add", "sub", "mul", "radd", "rmul"]))
def test_arithmetic_with_anything(other, op):
    x = vector()
    calls = {"add": lambda: (x + other).numpy(), "sub": lambda: (x - other).numpy(),
             "mul": lambda: (x * other).numpy(), "radd": lambda: (other + x).numpy(),
             "rmul": lambda: (other * x).numpy()}
    try:
        answers(calls[op])
    except TypeError as exc:          # Python's own answer for types that define no operator
        assert "unsupported operand" in str(exc) or "can't multiply" in str(exc), str(exc)


@given(shape=HOSTILE)
def test_reshape_to_anything(shape):
    answers(lambda: mc.reshape(vector(), shape))


@given(k=HOSTILE, side=st.integers(1, 5))
def test_max_pool_with_any_window(k, side):
    x = mc.tensor(np.arange(side * side, dtype=np.float32).reshape(1, 1, side, side))
    answer = answers(lambda: mc.max_pool2d(x, k).numpy())
    if isinstance(answer, np.ndarray) and isinstance(k, int) and k >= side:
        assert answer.reshape(-1).tolist() == [side * side - 1]


@given(labels=HOSTILE, classes=HOSTILE)
def test_one_hot_and_nll_loss_with_anything(labels, classes):
    answers(lambda: mc.one_hot(labels, classes))
    logp = mc.log_softmax(mc.tensor(np.zeros((2, 3))))
    answers(lambda: mc.nll_loss(logp, labels).numpy())


@given(backend=HOSTILE)
def test_a_backend_is_a_name_or_a_backend_object(backend):
    answer = answers(lambda: mc.tensor([1.0], backend=backend))
    assert isinstance(answer, mc.BackendError)
    answers(lambda: ConvoAlphabetModel(backend))


@given(field=st.sampled_from(sorted(mc.TrainConfig.__dataclass_fields__)), value=HOSTILE)
def test_train_config_fields_of_any_type(field, value):
    answer = answers(lambda: mc.TrainConfig(**{field: value}).checked())
    if not isinstance(answer, MicroconvError):
        assert isinstance(answer, mc.TrainConfig)


@given(images=HOSTILE)
def test_classifier_and_evaluate_with_anything(images):
    classifier = Classifier(ConvoAlphabetModel("numpy"), Preprocessing())
    answers(lambda: classifier.predict(images))
    answers(lambda: mc.evaluate(classifier, images, [0]))


@given(count=HOSTILE, seed=HOSTILE)
def test_generated_letters_and_perturb_with_anything(count, seed):
    answer = answers(lambda: mc.generated_letters(count, seed) if count is None or
                     not isinstance(count, int) or count < 50 else None)
    if isinstance(answer, tuple):
        answers(lambda: mc.perturb(answer[0], seed))


def test_train_needs_a_train_config():
    with pytest.raises(mc.TrainingError, match="train needs a TrainConfig, not dict"):
        mc.train({"epochs": 1})


@pytest.mark.parametrize("setting, fragment", [
    ({"max_minutes": float("nan")}, "max_minutes must be a finite number"),
    ({"seed": -1}, "seed must be at least 0"),
    ({"batch_size": "64"}, "batch_size must be int, not '64'"),
    ({"epochs": 2.5}, "epochs must be int or None, not 2.5"),
    ({"augment": "yes"}, "augment must be bool"),
    ({"lr": 10**400}, "lr must be a finite number or None"),
])
def test_train_config_names_what_is_wrong(setting, fragment):
    with pytest.raises(mc.TrainingError, match=fragment.replace("(", r"\(")):
        mc.TrainConfig(**setting).checked()


def test_overflow_gives_inf_without_a_numpy_warning():
    x = mc.tensor([1e30, -1e30, 2.0], requires_grad=True)
    y = mc.tensor([1e30, 1e30, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        product = x * y
        total = product.sum()
        total.backward()
        assert product.numpy().tolist()[:2] == [np.inf, -np.inf]
        assert np.isnan(total.numpy())


def test_images_of_huge_values_are_refused_without_a_warning():
    classifier = Classifier(ConvoAlphabetModel("numpy"), Preprocessing())
    images = np.full((1, 28, 28), 1e300)
    answer = answers(lambda: classifier.predict(images))
    assert isinstance(answer, mc.DataError) and "not finite pixels" in str(answer)
