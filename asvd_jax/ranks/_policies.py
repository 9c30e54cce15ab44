"""Policies that turn activation statistics into a protected rank k per target matrix.

Every policy gives, per matrix (per stack entry), the *protected fraction* k / min(d_in, d_out):
the share of singular directions whose subspace the update may not touch. 0 is plain
fine-tuning, 1 a frozen matrix. This is the only direction the word is used in.

* ``PaperPolicy(mrr, trr)``: importance I = max(mean cos(x, W x), 0) per matrix, normalised
  over all targets to mean 1 (I_n = I / mean I), fraction r = mrr + I_n (trr - mrr), and
  k = floor(r min_dim) clamped to [0, min_dim]. Without clamping mean(r) = trr exactly.
  Clamping at 1 lowers the realised mean: on SmolLM2 (trr 0.8) it was ~0.4, with 43-48 of
  210 matrices fully frozen (issue 12); ``RankPlan.budget()`` reports the realised mean.
* ``BudgetPolicy(mrr, trr, max_fraction)``: the paper's shape with a realised mean equal to
  the budget: r_i(s) = clip(mrr + s I_n,i (trr - mrr), 0, max_fraction) with the scale s >= 0
  solved (bisection) so that mean_i r_i(s) = trr; s = 1 when nothing clamps (then it is the
  paper policy). ``max_fraction < 1`` keeps every matrix partly trainable. k = floor(r
  min_dim), so the realised mean of k / min_dim is trr minus at most 1 / min_dim.
* ``ProgressivePolicy(task, num_tasks)``: k = floor((t - 1) / T * min_dim) in every matrix
  (``ProgressivePolicy()`` in a run config: the runner sets both at every task boundary).
* ``UniformPolicy(fraction)``: k = floor(fraction * min_dim) in every matrix.
* ``EnergyPolicy(tau)``: the smallest k whose top-k input directions carry a share tau of the
  previous task's input activation energy (min_dim when even all of them carry less).
* ``Override(pattern, protected_fraction=... | k=...)``: applied after any policy; the first
  override whose pattern matches a path (``re.search``, case-insensitive) wins.

The dataclasses are also the run config's ``method.rank_policy`` (``POLICIES`` by name): their
fields are declared and validated here only.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from asvd_jax.ranks._stats import MatrixStatistics


def fraction_to_k(fraction: np.ndarray, min_dim: int) -> np.ndarray:
    # A tiny slack keeps exact products such as 0.8 * 10 from flooring to 7 in binary floats.
    k = np.floor(np.asarray(fraction, np.float64) * min_dim + 1e-9)
    return np.clip(k, 0, min_dim).astype(np.int64)


def _check_fraction(name: str, value: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)  # a plain float, so the plan's JSON takes numpy scalars too


def _set_fraction(obj, field: str) -> None:
    object.__setattr__(obj, field, _check_fraction(f"{type(obj).__name__}.{field}", getattr(obj, field)))


class RankPolicy(Protocol):
    name: str

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        """{path: k array of the matrix's stack shape (0-d for a plain matrix)}."""
        ...


def importances(stats: Mapping[str, MatrixStatistics], nonsquare: str = "truncate",
                clip_negative: bool = True) -> dict[str, np.ndarray]:
    """{path: mean cos(x, W x) per stack entry}, negative values clipped to 0 if asked."""
    out = {}
    for path, st in stats.items():
        cos = np.asarray(st.mean_cosine(nonsquare), np.float64)
        out[path] = np.maximum(cos, 0.0) if clip_negative else cos
    return out


@dataclasses.dataclass(frozen=True)
class PaperPolicy:
    """The paper's importance-weighted ranks (Nayak et al. 2025, section 3.2)."""

    mrr: float = 0.1
    """Minimum protected fraction, reached by a matrix of importance 0."""
    trr: float = 0.8
    """Target protected fraction, the mean over all matrices before clamping."""
    nonsquare: str = "truncate"
    """Cosine of a non-square W: "truncate" (paper: first min(d_in, d_out) coordinates of x and
    W x) or "polar" (cos(x, P x), P the input-side polar factor; docs/ranks.md)."""
    clip_negative: bool = True
    """Clip negative mean cosines to 0 before normalising (the paper's later version)."""
    name: str = dataclasses.field(default="paper", init=False)

    def __post_init__(self):
        _set_fraction(self, "mrr")
        _set_fraction(self, "trr")
        if not self.mrr <= self.trr:
            raise ValueError(f"PaperPolicy: need mrr <= trr, got {self.mrr}, {self.trr}")
        if self.nonsquare not in ("truncate", "polar"):
            raise ValueError(f"PaperPolicy.nonsquare must be 'truncate' or 'polar', got {self.nonsquare!r}")

    def fractions(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        """Unclamped protected fractions r = mrr + I_n (trr - mrr); their mean over all
        matrices (every stack entry counts once) is trr."""
        imp = importances(stats, self.nonsquare, self.clip_negative)
        flat = np.concatenate([v.ravel() for v in imp.values()])
        mean = float(flat.mean()) if flat.size else 0.0
        if not mean > 0:
            raise ValueError(
                f"PaperPolicy: mean importance over all targets is {mean:.3g}; it cannot be "
                "normalised (every mean cosine is <= 0). Use another policy or overrides."
            )
        return {p: self.mrr + (v / mean) * (self.trr - self.mrr) for p, v in imp.items()}

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        return {p: fraction_to_k(f, stats[p].min_dim) for p, f in self.fractions(stats).items()}


@dataclasses.dataclass(frozen=True)
class BudgetPolicy:
    """Importance-shaped ranks whose mean protected fraction is the budget ``trr`` after
    clamping (the paper policy's mean falls short of trr when matrices clamp at 1)."""

    mrr: float = 0.1
    """Protected fraction of a matrix of importance 0."""
    trr: float = 0.8
    """Budget: the mean protected fraction over all matrices (every stack entry once)."""
    max_fraction: float = 1.0
    """Cap on any matrix's protected fraction (< 1: no matrix is frozen)."""
    nonsquare: str = "truncate"
    """As ``PaperPolicy.nonsquare``."""
    clip_negative: bool = True
    """As ``PaperPolicy.clip_negative``."""
    name: str = dataclasses.field(default="budget", init=False)

    def __post_init__(self):
        for field in ("mrr", "trr", "max_fraction"):
            _set_fraction(self, field)
        if not self.mrr <= self.trr <= self.max_fraction:
            raise ValueError(f"BudgetPolicy: need mrr <= trr <= max_fraction, got {self.mrr}, "
                             f"{self.trr}, {self.max_fraction}")
        if self.nonsquare not in ("truncate", "polar"):
            raise ValueError(f"BudgetPolicy.nonsquare must be 'truncate' or 'polar', got {self.nonsquare!r}")

    def fractions(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        """Clamped fractions r_i(s) with mean exactly trr (up to 1e-12)."""
        paper = PaperPolicy(self.mrr, self.trr, self.nonsquare, self.clip_negative).fractions(stats)
        slope = {p: v - self.mrr for p, v in paper.items()}  # I_n (trr - mrr) >= 0
        flat = np.concatenate([v.ravel() for v in slope.values()])

        def mean_at(scale: float) -> float:
            return float(np.clip(self.mrr + scale * flat, 0.0, self.max_fraction).mean())

        # The scale's limit: every matrix with importance > 0 at the cap, the rest at mrr.
        reachable = float(np.where(flat > 0, self.max_fraction, self.mrr).mean())
        if reachable < self.trr - 1e-12:
            raise ValueError(f"BudgetPolicy: trr {self.trr} is out of reach: with every important "
                             f"matrix at max_fraction {self.max_fraction} the mean is {reachable:.4f}")
        target = self.trr - 1e-12  # reachable may equal trr up to rounding
        lo, hi = 0.0, 1.0
        while mean_at(hi) < target:
            hi *= 2.0
        for _ in range(200):  # bisection: mean_at is continuous and non-decreasing in the scale
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mean_at(mid) < target else (lo, mid)
        return {p: np.clip(self.mrr + hi * v, 0.0, self.max_fraction) for p, v in slope.items()}

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        return {p: fraction_to_k(f, stats[p].min_dim) for p, f in self.fractions(stats).items()}


@dataclasses.dataclass(frozen=True)
class ProgressivePolicy:
    """The released scripts' budget: task t of T protects floor((t - 1) / T * min_dim)."""

    task: int | None = None
    """1-based index of the task about to be trained (task 1 protects nothing); None in a run
    config: the runner gives each task its own."""
    num_tasks: int | None = None
    """Number of tasks T in the sequence; None in a run config: the sequence's length."""
    name: str = dataclasses.field(default="progressive", init=False)

    def __post_init__(self):
        if self.task is None and self.num_tasks is None:
            return  # set per task by whoever runs the sequence (the runner)
        if not isinstance(self.num_tasks, int) or self.num_tasks < 1:
            raise ValueError(f"ProgressivePolicy.num_tasks must be an int >= 1, got {self.num_tasks!r}")
        if not isinstance(self.task, int) or not 1 <= self.task <= self.num_tasks:
            raise ValueError(f"ProgressivePolicy.task must be an int in [1, {self.num_tasks}], got {self.task!r}")

    def at_task(self, task: int, num_tasks: int) -> "ProgressivePolicy":
        """This policy for task ``task`` of ``num_tasks`` unless both are already fixed."""
        return self if self.task is not None else dataclasses.replace(
            self, task=task, num_tasks=num_tasks)

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        if self.task is None:
            raise ValueError("ProgressivePolicy: task and num_tasks are unset (give them, or "
                             "call at_task(task, num_tasks) at the task boundary)")
        # Integer arithmetic: floor((t-1) * d / T) exactly, no float rounding.
        return {p: np.full(st.stack_shape, (self.task - 1) * st.min_dim // self.num_tasks, np.int64)
                for p, st in stats.items()}


@dataclasses.dataclass(frozen=True)
class UniformPolicy:
    """The same protected fraction in every matrix."""

    fraction: float = 0.5
    """Protected fraction, k = floor(fraction * min_dim)."""
    name: str = dataclasses.field(default="uniform", init=False)

    def __post_init__(self):
        _set_fraction(self, "fraction")

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        return {p: fraction_to_k(np.full(st.stack_shape, self.fraction), st.min_dim)
                for p, st in stats.items()}


@dataclasses.dataclass(frozen=True)
class EnergyPolicy:
    """GPM-style threshold: smallest k with energy_retained(k) >= tau, along the weight's own
    singular order (the directions that would be protected), not the activations' PCA."""

    tau: float = 0.95
    """Share of the previous task's input activation energy to protect, in [0, 1]."""
    name: str = dataclasses.field(default="energy", init=False)

    def __post_init__(self):
        _set_fraction(self, "tau")

    def protected_ranks(self, stats: Mapping[str, MatrixStatistics]) -> dict[str, np.ndarray]:
        out = {}
        for p, st in stats.items():
            frac = st.energy_retained()  # (*stack, r + 1), non-decreasing in k
            reached = frac >= self.tau - 1e-12
            # First k that reaches tau; min_dim when none does (all directions protected).
            k = np.where(reached.any(-1), reached.argmax(-1), st.min_dim)
            out[p] = k.astype(np.int64)
        return out


@dataclasses.dataclass(frozen=True)
class Override:
    """Force the protected rank of every target whose path matches ``pattern``.

    Give exactly one of ``protected_fraction`` (k = floor(f * min_dim)) or ``k`` (clamped to
    min_dim, so a large k means frozen).
    """

    pattern: str
    """Regular expression, ``re.search`` on the path, case-insensitive."""
    protected_fraction: float | None = None
    k: int | None = None

    def __post_init__(self):
        if (self.protected_fraction is None) == (self.k is None):
            raise ValueError(f"Override({self.pattern!r}): give exactly one of protected_fraction or k")
        if self.protected_fraction is not None:
            object.__setattr__(self, "protected_fraction", _check_fraction(
                f"Override({self.pattern!r}).protected_fraction", self.protected_fraction))
        if self.k is not None and (not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool)
                                   or self.k < 0):
            raise ValueError(f"Override({self.pattern!r}).k must be an int >= 0, got {self.k!r}")
        if self.k is not None:  # numpy ints would not survive the plan's JSON
            object.__setattr__(self, "k", int(self.k))
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(f"Override pattern {self.pattern!r} is not a valid regex: {err}") from None

    def matches(self, path: str) -> bool:
        return re.search(self.pattern, path, re.IGNORECASE) is not None

    def rank(self, min_dim: int) -> int:
        if self.k is not None:
            return min(int(self.k), min_dim)
        return int(fraction_to_k(self.protected_fraction, min_dim))


def apply_overrides(ranks: Mapping[str, np.ndarray], stats: Mapping[str, MatrixStatistics],
                    overrides: tuple[Override, ...]) -> dict[str, np.ndarray]:
    """Ranks with the first matching override applied; ValueError for an override that
    matches no target (a typo must not silently leave a matrix unprotected or frozen)."""
    out = dict(ranks)
    used = [False] * len(overrides)
    for path, st in stats.items():
        hits = [i for i, ov in enumerate(overrides) if ov.matches(path)]
        for i in hits:
            used[i] = True
        if hits:
            out[path] = np.full(st.stack_shape, overrides[hits[0]].rank(st.min_dim), np.int64)
    unused = [ov.pattern for ov, u in zip(overrides, used) if not u]
    if unused:
        raise ValueError(f"override pattern(s) {unused} match no target path")
    return out


def policy_params(policy: RankPolicy) -> dict:
    """The policy's settings as a JSON-ready dict (everything but its name)."""
    return {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.name != "name"}


POLICIES: dict[str, type] = {cls.name: cls for cls in (
    PaperPolicy, BudgetPolicy, ProgressivePolicy, UniformPolicy, EnergyPolicy)}
"""Every policy by its ``name``: the choices of a run config's ``method.rank_policy``."""
