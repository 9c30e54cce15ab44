"""asvd_jax: continual full fine-tuning with adaptive-SVD orthogonal subspaces.

``import asvd_jax`` needs only jax, optax and numpy. Models (flax), checkpoints (orbax), data
(datasets) and plots (matplotlib) live in subpackages that import their framework themselves.
"""

from asvd_jax._accumulate import AccumulateGradientsState, accumulate_gradients
from asvd_jax._bases import SubspaceBasis, compute_bases
from asvd_jax._diagnostics import (
    TrackAppliedUpdatesState,
    applied_updates,
    protected_leakage,
    track_applied_updates,
)
from asvd_jax._paths import flatten_with_paths, path_str
from asvd_jax._projection import MODES, PRECISIONS, project, project_tree
from asvd_jax._svd import MatrixSVD, exact_svd, randomized_svd, weight_svds
from asvd_jax._targets import DEFAULT_EXCLUDE, MatrixSpec, list_targets, select_targets
from asvd_jax._transform import (
    ProjectOutProtectedState,
    project_out_protected,
    pure_bases,
    set_bases,
    with_projection,
)

__version__ = "0.1.0"

__all__ = [
    "AccumulateGradientsState",
    "DEFAULT_EXCLUDE",
    "MODES",
    "MatrixSVD",
    "MatrixSpec",
    "PRECISIONS",
    "ProjectOutProtectedState",
    "SubspaceBasis",
    "TrackAppliedUpdatesState",
    "accumulate_gradients",
    "applied_updates",
    "compute_bases",
    "exact_svd",
    "flatten_with_paths",
    "list_targets",
    "path_str",
    "project",
    "project_out_protected",
    "project_tree",
    "protected_leakage",
    "randomized_svd",
    "select_targets",
    "pure_bases",
    "set_bases",
    "track_applied_updates",
    "weight_svds",
    "with_projection",
]
