"""What some tests need and a machine may lack, and what a test does without it.

The material in ../shared (next to the checkout, on the project's own machines only): tests
that need it skip where it is absent. Optional software (OpenCL, Oclgrind, MPI, the web extra
and a browser): tests that need it skip where it is missing, except where CI installs it and
sets the variable that says so (MICROCONV_REQUIRE_OPENCL=1 and the like, .ci/run): there a
missing piece is a failure.
"""

import importlib
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
LETTERS_DATA = SHARED / "data" / "handwritten-letters"
SEED_STATE = SHARED / "seed-artifacts" / "tensor-convo-20230122-final-gelu.state"
SEED_PHOTO = SHARED / "seed-artifacts" / "test1.jpg"

# the variables .ci/run sets, as it installs each thing
REQUIRE_OPENCL = "MICROCONV_REQUIRE_OPENCL"
REQUIRE_OCLGRIND = "MICROCONV_REQUIRE_OCLGRIND"
REQUIRE_MPI = "MICROCONV_REQUIRE_MPI"
REQUIRE_BROWSER = "MICROCONV_REQUIRE_BROWSER"     # the web extra, Chromium and its driver


def _not_present(path):
    return f"{path} not present"


def needs(*paths):
    """A mark that skips the test where any of ``paths`` (in ../shared) is absent."""
    absent = [path for path in paths if not path.exists()]
    return pytest.mark.skipif(bool(absent), reason=", ".join(map(_not_present, absent)))


def shared_or_skip(path):
    """``path`` (in ../shared), or a skip where it is absent: for fixtures and parameters."""
    __tracebackhide__ = True          # a skip names the test's line, not this one
    if not path.exists():
        pytest.skip(_not_present(path))
    return path


def skip_unless_required(variable, reason, module=False):
    """Skip with ``reason``; where CI sets ``variable`` to 1, fail with it instead (None: a
    thing CI does not install). ``module``: called while a module is imported, so the skip
    covers the whole module."""
    __tracebackhide__ = True
    if variable is not None and os.environ.get(variable) == "1":
        pytest.fail(f"{variable}=1 but {reason}")
    pytest.skip(reason, allow_module_level=module)


def import_or_skip(module, variable):
    """The module ``module``, or skip_unless_required's skip (a failure where CI installs it)."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        skip_unless_required(variable, f"{module} cannot be imported: {exc}")
