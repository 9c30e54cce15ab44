"""The README's quickstart runs and keeps the second task's change out of the protected subspace."""

import importlib.util
import os


def test_quickstart_runs_and_protects():
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", "quickstart.py")
    spec = importlib.util.spec_from_file_location("quickstart", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    leakage = module.main()
    assert set(leakage) == {"mlp/up/kernel", "mlp/down/kernel"}
    assert all(0.0 <= float(v) < 1e-5 for v in leakage.values())
