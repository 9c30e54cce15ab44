"""float64 numpy references for the projection: matrices with a known spectrum, the projected
update, and the protected share of an update. None of them calls asvd_jax, so a check written
with them does not lean on the code it checks."""

import numpy as np


def matrix_with_spectrum(rng, m, n, decay=None):
    """(m, n) float64 matrix with orthogonal factors and singular values r, r-1, ..., 1
    (gaps of 1 keep float32 subspaces accurate), or decay**i when ``decay`` is given."""
    r = min(m, n)
    a, _ = np.linalg.qr(rng.normal(size=(m, r)))
    b, _ = np.linalg.qr(rng.normal(size=(n, r)))
    s = decay ** np.arange(r) if decay is not None else np.arange(r, 0, -1, dtype=np.float64)
    return (a * s) @ b.T


def reference_projection(w, g, k, mode):
    """float64 projection of update g (m, n) for weight w (m, n) with protected rank k."""
    a, _, bt = np.linalg.svd(w, full_matrices=False)
    p_in = a[:, :k] @ a[:, :k].T
    p_out = bt[:k].T @ bt[:k]
    eye_in, eye_out = np.eye(w.shape[0]), np.eye(w.shape[1])
    if mode == "strict":
        return (eye_in - p_in) @ g @ (eye_out - p_out)
    if mode == "paper":
        return g - p_in @ g @ p_out
    if mode == "input":
        return (eye_in - p_in) @ g
    if mode == "output":
        return g @ (eye_out - p_out)
    raise ValueError(mode)


def reference_leakage(w0, delta, k, mode="strict"):
    """||protected part of delta|| / ||delta||, with the subspaces of float64 SVD(w0)."""
    w0, delta = np.asarray(w0, np.float64), np.asarray(delta, np.float64)
    protected = delta - reference_projection(w0, delta, k, mode)
    return float(np.linalg.norm(protected) / np.linalg.norm(delta))
