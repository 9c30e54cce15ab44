"""`import asvd_jax` pulls in jax, optax and numpy only, and exports the core API."""

import subprocess
import sys

HEAVY = ("flax", "orbax", "transformers", "datasets", "matplotlib", "torch", "safetensors")


def test_import_is_light():
    code = ("import sys, asvd_jax; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"import asvd_jax loaded {proc.stdout.strip()}"


def test_public_api():
    import asvd_jax as aj

    for name in ("MatrixSpec", "select_targets", "list_targets", "compute_bases", "SubspaceBasis",
                 "project", "project_tree", "project_out_protected", "ProjectOutProtectedState",
                 "set_bases", "with_projection", "protected_leakage", "path_str",
                 "flatten_with_paths"):
        assert name in aj.__all__ and hasattr(aj, name), name
    assert aj.MODES == ("strict", "paper", "input", "output")
