"""The pieces of the benchmark scripts that compute numbers the README quotes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from memory_plan import parse_mesh  # noqa: E402
from vs_peft import protected_share  # noqa: E402


def _orthonormal(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def test_protected_share_against_a_constructed_svd():
    rng = np.random.default_rng()
    m, n, k = 12, 9, 4
    u, v = _orthonormal(rng, m)[:, :n], _orthonormal(rng, n)
    w0 = (u * np.linspace(10, 1, n)) @ v.T  # known singular vectors, distinct values
    up, vp = u[:, :k], v[:, :k]
    ua, va = u[:, k:], v[:, k:]
    allowed = ua @ rng.standard_normal((n - k, n - k)) @ va.T
    touching = up @ rng.standard_normal((k, n))  # lies in the protected input directions
    assert protected_share(w0, w0 + allowed, k) < 1e-12
    assert protected_share(w0, w0 + touching, k) == pytest.approx(1.0, abs=1e-12)
    mixed = allowed / np.linalg.norm(allowed) + touching / np.linalg.norm(touching)
    # The two parts are orthogonal in the Frobenius inner product: share = 1 / sqrt(2).
    assert protected_share(w0, w0 + mixed, k) == pytest.approx(2 ** -0.5, abs=1e-12)
    # A change in the allowed input directions that maps onto protected output directions
    # touches the protected subspace too (strict mode protects both sides).
    cross = ua @ rng.standard_normal((n - k, k)) @ vp.T
    assert protected_share(w0, w0 + cross, k) == pytest.approx(1.0, abs=1e-12)
    assert protected_share(w0, w0, k) == 0.0 and protected_share(w0, w0 + touching, 0) == 0.0


def test_parse_mesh():
    assert parse_mesh("fsdp=8") == {"data": 1, "fsdp": 8}
    assert parse_mesh("data=2:fsdp=4") == {"data": 2, "fsdp": 4}
    for bad in ("fsdp8", "model=2", "data=x"):
        with pytest.raises(ValueError, match="--mesh"):
            parse_mesh(bad)
