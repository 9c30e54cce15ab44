"""Numeric tolerances for every test, in one place.

Tests compare against float64 numpy references; the tolerance depends only on the dtype the
computation under test ran in. Never loosen these to make a test pass: find the error instead.
"""

import numpy as np

# Keyed by dtype name so that bfloat16 (an ml_dtypes type, not numpy's) needs no import here.
_TOL = {
    "float64": dict(rtol=1e-10, atol=1e-12),
    "float32": dict(rtol=2e-5, atol=2e-6),
    "bfloat16": dict(rtol=2e-2, atol=2e-3),
}


def tolerance(dtype) -> dict:
    """rtol/atol for results computed in `dtype` (float64, float32 or bfloat16)."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in _TOL:
        raise KeyError(f"no tolerance defined for dtype {name!r}")
    return dict(_TOL[name])


def assert_close(actual, expected, dtype, scale=None, err_msg=""):
    """Assert `actual` ~= float64 `expected` at the tolerance of `dtype`.

    `scale`: compare relative to this magnitude (e.g. the input's norm) instead of elementwise,
    for results that are differences of large terms and are legitimately near zero.
    """
    tol = tolerance(dtype)
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if scale is None:
        np.testing.assert_allclose(actual, expected, err_msg=err_msg, **tol)
    else:
        err = np.max(np.abs(actual - expected)) if actual.size else 0.0
        bound = tol["rtol"] * float(scale) + tol["atol"]
        assert err <= bound, f"{err_msg} max abs error {err:.3e} > {bound:.3e} (scale {scale:.3e})"
