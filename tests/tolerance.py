"""The one tolerance policy for comparing results across backends and dtypes.

float32 results are compared with a float64 reference. The error of a float32 sum grows with
the number and the size of the terms summed, not with the result, so the absolute tolerance
is eps32 times the reduction length times the magnitude of the terms, plus a small floor.

Two more comparisons live here so that no test carries its own magic numbers:
- ``REFERENCE_RTOL``: the acceptance bound against PyTorch's definitions (2e-4 relative in
  float32); pass it as ``rtol`` to ``assert_close``;
- ``assert_matches_finite_difference``: analytic float64 gradients against central finite
  differences with step ``FD_STEP`` (truncation error ~ step^2, rounding ~ 1e-16 / step).
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
REFERENCE_RTOL = 2e-4
FD_STEP = 1e-6
FD_RTOL, FD_ATOL = 1e-5, 1e-6


def assert_close(actual, expected, dtype="float32", terms=1, magnitude=1.0, what="", rtol=None):
    """actual ~ expected for a result made of sums of ``terms`` products of size ``magnitude``.

    ``rtol`` overrides the relative part only (the absolute floor still follows the policy).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if dtype == "float64":
        default_rtol, atol = 1e-9, 1e-9 * max(1.0, magnitude) * terms
    else:
        default_rtol, atol = 2e-5, 8 * EPS32 * max(1.0, magnitude) * max(1, terms) + 1e-6
    np.testing.assert_allclose(actual, expected, rtol=default_rtol if rtol is None else rtol,
                               atol=atol, err_msg=what)


def assert_matches_finite_difference(analytic, numeric, scale=1.0, what=""):
    """Analytic float64 gradient ~ central finite difference; ``scale`` is the size of f's terms."""
    np.testing.assert_allclose(np.asarray(analytic, dtype=np.float64),
                               np.asarray(numeric, dtype=np.float64),
                               rtol=FD_RTOL, atol=FD_ATOL * max(1.0, scale), err_msg=what)
