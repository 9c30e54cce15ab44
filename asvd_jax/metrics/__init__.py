"""Metrics of continual-learning runs (pure numpy), shared by the trainer and the analysis.

``asvd_jax.cl`` computes them for every run and ``asvd_jax.analysis`` recomputes them from run
directories; both import them from here (below both), so neither reaches into the other.
"""

from asvd_jax.metrics._accuracy import (
    GAP_KEYS,
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    gaps,
    general_ability_retention,
    paired_bootstrap,
    plasticity,
    summarize,
)
from asvd_jax.metrics._predictions import (
    COLLAPSE_SHARE,
    ZERO_SHOT_ANSWER_SHARE,
    choose_fwt,
    collapsed_tasks,
    prediction_stats,
    zero_shot_answer_share,
)

__all__ = [
    "COLLAPSE_SHARE", "GAP_KEYS", "ZERO_SHOT_ANSWER_SHARE", "average_accuracy", "backward_transfer",
    "choose_fwt", "collapsed_tasks", "forgetting", "forward_transfer", "gaps",
    "general_ability_retention", "paired_bootstrap", "plasticity", "prediction_stats", "summarize",
    "zero_shot_answer_share",
]
