"""Every example runs as a user would run it, and prints what it promises."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args):
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def numbers_after(label, text):
    return [float(m) for m in re.findall(label + r"[^\d\-]*([-\d.e+]+)", text)]


def test_scalars_example_prints_the_right_gradients():
    out = run_example("01_scalars_and_a_matrix.py")
    assert "c = -4.0" in out
    assert "dc/da = -2.0" in out and "dc/db = 2.0" in out
    assert "after w.assign([[1], [1]]): y = 3.0" in out


def test_convolution_by_hand_matches_and_gradients_pass_finite_differences():
    out = run_example("02_convolution_by_hand.py")
    assert numbers_after("largest difference:", out)[0] < 1e-12
    diffs = numbers_after("finite differences", out)
    assert len(diffs) == 3 and max(diffs) < 1e-6


def test_backends_agree_example_shows_small_differences():
    out = run_example("03_backends_agree.py")
    diffs = numbers_after("parameter difference to numpy", out)
    assert len(diffs) >= 2 and max(diffs) < 1e-5


def test_custom_backend_example_counts_cached_forward_once():
    out = run_example("05_custom_backend.py")
    assert "'counting'" in out
    assert "'conv2d': 1" in out and "'conv2d_backward': 2" in out


@pytest.mark.skipif(not (EXAMPLES / "04_train_letters.py").exists(), reason="example not written")
def test_training_example_learns():
    out = run_example("04_train_letters.py", "--quick")
    accuracy = numbers_after("test accuracy", out)
    assert accuracy and accuracy[0] > 0.2
