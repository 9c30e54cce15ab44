"""Rank plans: the protected rank of every target, with the numbers that justify it.

A plan is what a task boundary decided, kept as JSON beside the task's checkpoint so a run can
be audited: per matrix its importance (mean cos(x, W x) as the policy saw it), protected rank
k, protected fraction k / min(d_in, d_out) and the share of the previous task's input
activation energy that the protected input directions carry. Stacked leaves hold one value
per stack entry (tuples, flattened in row-major order).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asvd_jax.ranks._policies import (
    Override,
    PaperPolicy,
    RankPolicy,
    apply_overrides,
    importances,
    policy_params,
)
from asvd_jax.ranks._stats import MatrixStatistics

FORMAT_VERSION = 1


def _value(a: np.ndarray, cast) -> Any:
    """A 0-d array becomes a scalar, a stacked one a flat tuple."""
    a = np.asarray(a)
    return cast(a) if a.ndim == 0 else tuple(cast(v) for v in a.ravel())


def _as_list(v) -> list:
    return list(v) if isinstance(v, tuple) else [v]


@dataclasses.dataclass(frozen=True)
class RankEntry:
    """One target's decision. Scalars for a plain matrix, flat tuples for a stacked leaf."""

    path: str
    shape: tuple[int, ...]
    """Shape of the parameter leaf."""
    min_dim: int
    """min(d_in, d_out): the largest protected rank (a frozen matrix)."""
    importance: float | tuple[float, ...]
    """Mean cos(x, W x) over the previous task's tokens (clipped at 0 if the policy clips)."""
    k: int | tuple[int, ...]
    """Protected rank: the top-k singular directions are protected."""
    protected_fraction: float | tuple[float, ...]
    """k / min_dim."""
    energy_retained: float | tuple[float, ...]
    """Share of the input activation energy in the protected input directions."""

    def rows(self) -> list[tuple[str, float, int, float, float]]:
        imps, ks = _as_list(self.importance), _as_list(self.k)
        fracs, ens = _as_list(self.protected_fraction), _as_list(self.energy_retained)
        if len(ks) == 1 and not isinstance(self.k, tuple):
            return [(self.path, imps[0], ks[0], fracs[0], ens[0])]
        return [(f"{self.path}[{i}]", imps[i], ks[i], fracs[i], ens[i]) for i in range(len(ks))]


@dataclasses.dataclass(frozen=True)
class RankPlan:
    """Protected ranks for every target of one task boundary, with policy and provenance."""

    entries: tuple[RankEntry, ...]
    policy: str
    """Policy name: "paper", "budget", "progressive", "uniform" or "energy"."""
    policy_params: Mapping[str, Any]
    overrides: tuple[Mapping[str, Any], ...] = ()
    nonsquare: str = "truncate"
    """How the importance of a non-square matrix was measured ("truncate" or "polar")."""
    tokens: int = 0
    """Unmasked tokens the statistics were taken over."""

    def ranks(self) -> dict[str, int | tuple[int, ...]]:
        """{path: k}, the ``ranks`` argument of ``compute_bases``."""
        return {e.path: e.k for e in self.entries}

    def table(self) -> str:
        """Fixed-width text table, one row per matrix (per stack entry)."""
        rows = [r for e in self.entries for r in e.rows()]
        width = max([len("path")] + [len(r[0]) for r in rows])
        head = f"{'path':<{width}}  {'importance':>10}  {'k':>6}  {'protected':>9}  {'energy':>7}"
        lines = [f"rank plan: policy {self.policy} {dict(self.policy_params)}"
                 + (f", overrides {list(self.overrides)}" if self.overrides else "")
                 + f", nonsquare {self.nonsquare}, {self.tokens} tokens; " + self._budget_line(),
                 head, "-" * len(head)]
        lines += [f"{p:<{width}}  {i:>10.4f}  {k:>6d}  {f:>9.3f}  {en:>7.3f}" for p, i, k, f, en in rows]
        return "\n".join(lines)

    def _budget_line(self) -> str:
        b = self.budget()
        req = "" if b["requested"] is None else f" (requested trr {b['requested']:.3f})"
        return (f"realised mean protected fraction {b['realised']:.3f}{req}; "
                f"{b['frozen']} of {b['matrices']} matrices fully protected")

    def budget(self) -> dict[str, Any]:
        """Requested vs realised protection: ``{"requested"}`` (the policy's trr for the paper
        and budget policies, else None), ``"realised"`` (mean of k / min_dim over every matrix,
        each stack entry once), ``"frozen"`` (matrices with k = min_dim) and ``"matrices"``.
        The paper policy's realised mean falls below trr when matrices clamp at 1."""
        fr = [f for e in self.entries for f in _as_list(e.protected_fraction)]
        return {"requested": self.policy_params.get("trr") if self.policy in ("paper", "budget") else None,
                "realised": float(np.mean(fr)) if fr else float("nan"),
                "frozen": int(sum(f >= 1.0 for f in fr)), "matrices": len(fr)}

    def summary(self, group: int = -2) -> dict[str, dict[str, float]]:
        """Protected fraction by layer type: {path component ``group`` (e.g. "q_proj"):
        {"min", "mean", "max", "count"}} over every matrix (stack entry)."""
        groups: dict[str, list[float]] = {}
        for e in self.entries:
            parts = e.path.split("/")
            name = parts[group] if -len(parts) <= group < len(parts) else e.path
            groups.setdefault(name, []).extend(_as_list(e.protected_fraction))
        return {g: {"min": min(v), "mean": float(np.mean(v)), "max": max(v), "count": len(v)}
                for g, v in groups.items()}

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "policy": self.policy,
            "policy_params": dict(self.policy_params),
            "overrides": [dict(o) for o in self.overrides],
            "nonsquare": self.nonsquare,
            "tokens": self.tokens,
            "entries": [
                {f.name: (list(v) if isinstance(v := getattr(e, f.name), tuple) else v)
                 for f in dataclasses.fields(e)} for e in self.entries
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "rank plan") -> "RankPlan":
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{source}: format_version {data.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}")
        try:
            entries = []
            for i, e in enumerate(data["entries"]):
                fields = {}
                for f in dataclasses.fields(RankEntry):
                    if f.name not in e:
                        raise ValueError(f"{source}: entries[{i}] has no key {f.name!r}")
                    v = e[f.name]
                    fields[f.name] = tuple(v) if isinstance(v, list) else v
                entries.append(RankEntry(**fields))
            return cls(entries=tuple(entries), policy=data["policy"],
                       policy_params=dict(data["policy_params"]),
                       overrides=tuple(dict(o) for o in data.get("overrides", ())),
                       nonsquare=data.get("nonsquare", "truncate"), tokens=int(data.get("tokens", 0)))
        except KeyError as err:
            raise ValueError(f"{source}: missing key {err.args[0]!r}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "rank plan") -> "RankPlan":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: not valid JSON: {err}") from None
        return cls.from_dict(data, source)

    def save(self, path: str | os.PathLike) -> None:
        """Write the JSON atomically (temporary file in the same folder, then rename), so a
        crash never leaves a half-written plan beside a checkpoint."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".rank_plan.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(self.to_json())
                fh.flush()
                os.fsync(fh.fileno())
            _as_umask_allows(tmp)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RankPlan":
        with open(path) as fh:
            return cls.from_json(fh.read(), source=os.fspath(path))


def plan_ranks(
    stats: Mapping[str, MatrixStatistics],
    policy: RankPolicy,
    overrides: Sequence[Override] = (),
    *,
    nonsquare: str | None = None,
) -> RankPlan:
    """Apply ``policy`` (then ``overrides``, first match wins) to the statistics of every target.

    ``nonsquare`` picks the cosine reported as importance for non-square matrices; it defaults
    to the paper policy's own setting, else "truncate".
    """
    if not stats:
        raise ValueError("plan_ranks: no statistics (no targets)")
    overrides = tuple(overrides)
    for ov in overrides:
        if not isinstance(ov, Override):
            raise TypeError(f"overrides: expected Override, got {type(ov).__name__}")
    if nonsquare is None:
        nonsquare = policy.nonsquare if isinstance(policy, PaperPolicy) else "truncate"
    clip = policy.clip_negative if isinstance(policy, PaperPolicy) else False
    imp = importances(stats, nonsquare, clip)
    ranks = apply_overrides(policy.protected_ranks(stats), stats, overrides)
    entries = []
    for path, st in stats.items():
        k = np.asarray(ranks[path], np.int64)
        if k.shape != tuple(st.stack_shape) or k.min(initial=0) < 0 or k.max(initial=0) > st.min_dim:
            raise ValueError(f"{path}: policy {policy.name!r} gave k {k.tolist()} outside "
                             f"[0, {st.min_dim}] or of the wrong shape (stack {st.stack_shape})")
        energy = np.take_along_axis(st.energy_retained(), k[..., None], axis=-1)[..., 0]
        entries.append(RankEntry(
            path=path,
            shape=tuple(st.shape),
            min_dim=st.min_dim,
            importance=_value(imp[path], float),
            k=_value(k, int),
            protected_fraction=_value(k / st.min_dim, float),
            energy_retained=_value(energy, float),
        ))
    return RankPlan(
        entries=tuple(entries),
        policy=policy.name,
        policy_params=policy_params(policy),
        overrides=tuple({f.name: getattr(o, f.name) for f in dataclasses.fields(o)} for o in overrides),
        nonsquare=nonsquare,
        tokens=int(next(iter(stats.values())).tokens),
    )


def _as_umask_allows(path: str) -> None:
    """chmod ``path`` to 0666 minus the umask: what ``open()`` would have given it (the
    temporary-file writes create 0600 files, unreadable to the others on a shared machine)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
