"""The README's quickstart runs and keeps the second task's change out of the protected subspace."""

import importlib.util
import os

import numpy as np
from _helpers.linalg import reference_leakage

from asvd_jax import flatten_with_paths


def test_quickstart_runs_and_protects():
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main()
    leakage = out["leakage"]
    assert set(leakage) == set(out["ranks"]) == {"mlp/up/kernel", "mlp/down/kernel"}
    start, end = dict(flatten_with_paths(out["start"])[0]), dict(flatten_with_paths(out["end"])[0])
    for name, k in out["ranks"].items():
        # Measured against a float64 SVD of the task's starting weight, not with the projection
        # under test; what the script prints must agree with it.
        w0 = np.asarray(start[name], np.float64)
        ref = reference_leakage(w0, np.asarray(end[name], np.float64) - w0, k)
        assert 0.0 <= ref < 1e-5, (name, ref)
        assert abs(float(leakage[name]) - ref) < 1e-5, (name, float(leakage[name]), ref)
