"""Rank selection from activation statistics (method sections 3 and 4).

``import asvd_jax.ranks`` needs jax and numpy only; the nnx helpers import flax when called.

Typical task boundary::

    svds = aj.weight_svds(params, targets)                # one float32 SVD per matrix
    stats = collect_statistics(capture_fn, params, batches, targets, svds=svds)
    plan = plan_ranks(stats, PaperPolicy(mrr=0.1, trr=0.8))
    print(plan.table()); plan.save(checkpoint_dir / "rank_plan.json")
    bases = aj.compute_bases(params, plan.ranks(), targets, svds=svds)  # no second SVD
"""

from asvd_jax.ranks._nnx import collect_statistics_nnx, nnx_capture_fn, set_optimizer_bases
from asvd_jax.ranks._plan import RankEntry, RankPlan, plan_ranks
from asvd_jax.ranks._policies import (
    POLICIES,
    BudgetPolicy,
    EnergyPolicy,
    Override,
    PaperPolicy,
    ProgressivePolicy,
    RankPolicy,
    UniformPolicy,
    fraction_to_k,
    importances,
)
from asvd_jax.ranks._stats import MatrixStatistics, collect_statistics

__all__ = [
    "BudgetPolicy",
    "EnergyPolicy",
    "MatrixStatistics",
    "Override",
    "POLICIES",
    "PaperPolicy",
    "ProgressivePolicy",
    "RankEntry",
    "RankPlan",
    "RankPolicy",
    "UniformPolicy",
    "collect_statistics",
    "collect_statistics_nnx",
    "fraction_to_k",
    "importances",
    "nnx_capture_fn",
    "set_optimizer_bases",
    "plan_ranks",
]
