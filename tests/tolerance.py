"""The one tolerance policy for comparing results across backends and dtypes.

float32 results are compared with a float64 reference. The error of a float32 sum grows with
the number and the size of the terms summed, not with the result, so the absolute tolerance
is eps32 times the reduction length times the magnitude of the terms, plus a small floor.
"""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def assert_close(actual, expected, dtype="float32", terms=1, magnitude=1.0, what=""):
    """Assert actual ~ expected for sums of ``terms`` products of size ``magnitude``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if dtype == "float64":
        rtol, atol = 1e-9, 1e-9 * max(1.0, magnitude) * terms
    else:
        rtol, atol = 2e-5, 8 * EPS32 * max(1.0, magnitude) * max(1, terms) + 1e-6
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
