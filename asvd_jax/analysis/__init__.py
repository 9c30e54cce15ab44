"""Analysis of weights, subspaces and continual-learning runs: arrays and dicts in, numbers out.

``import asvd_jax.analysis`` needs numpy (and jax for parameter paths) only; the ``plot_*``
functions import matplotlib when called.
"""

from asvd_jax.analysis._ablation import matrix_type_paths, truncate_ranks
from asvd_jax.analysis._capacity import (
    capacity_grid,
    capacity_over_tasks,
    capacity_record,
    capacity_warnings,
    load_capacity,
    low_capacity,
    plot_capacity,
    update_capacity_file,
    write_capacity_report,
)
from asvd_jax.analysis._directions import output_norm_from_statistics, output_norm_per_direction
from asvd_jax.analysis._plots import (
    plot_accuracy_matrix,
    plot_forgetting,
    plot_layer_grid,
    plot_output_norms,
    plot_rank_ablation,
    plot_rank_plan,
    plot_rank_plans_over_tasks,
    plot_spectra,
)
from asvd_jax.analysis._protected import (
    protected_columns,
    protected_subspace_angles,
    protected_subspace_overlap,
    weight_change_in_protected,
)
from asvd_jax.analysis._runs import (
    Run,
    accuracy_matrix,
    forgetting_curves,
    load_run,
    run_summary,
    stage_records,
    zero_shot_accuracy,
)
from asvd_jax.analysis._seeds import (
    SeedGroup,
    ewc_penalty_lambda,
    expand_run_dirs,
    group_by_seed,
    seed_summary,
    seed_table,
    unread_method_fields,
)
from asvd_jax.analysis._spectra import (
    MatrixSpectrum,
    effective_rank,
    energy_rank,
    singular_spectrum,
    spectra_table,
    stable_rank,
)
from asvd_jax.analysis._subspaces import orthonormal_basis, principal_angles, subspace_overlap
from asvd_jax.analysis._tables import (
    LayerGrid,
    layer_grid,
    plan_grid,
    plan_values,
    plans_over_tasks,
    split_path,
)

__all__ = [
    "accuracy_matrix",
    "capacity_grid",
    "capacity_over_tasks",
    "capacity_warnings",
    "effective_rank",
    "energy_rank",
    "expand_run_dirs",
    "forgetting_curves",
    "group_by_seed",
    "layer_grid",
    "LayerGrid",
    "capacity_record",
    "load_capacity",
    "update_capacity_file",
    "load_run",
    "low_capacity",
    "matrix_type_paths",
    "MatrixSpectrum",
    "orthonormal_basis",
    "output_norm_from_statistics",
    "output_norm_per_direction",
    "plan_grid",
    "plan_values",
    "plans_over_tasks",
    "plot_accuracy_matrix",
    "plot_capacity",
    "plot_forgetting",
    "plot_layer_grid",
    "plot_output_norms",
    "plot_rank_ablation",
    "plot_rank_plan",
    "plot_rank_plans_over_tasks",
    "plot_spectra",
    "principal_angles",
    "protected_columns",
    "protected_subspace_angles",
    "protected_subspace_overlap",
    "Run",
    "run_summary",
    "seed_summary",
    "seed_table",
    "ewc_penalty_lambda",
    "unread_method_fields",
    "SeedGroup",
    "singular_spectrum",
    "spectra_table",
    "split_path",
    "stable_rank",
    "stage_records",
    "subspace_overlap",
    "truncate_ranks",
    "weight_change_in_protected",
    "write_capacity_report",
    "zero_shot_accuracy",
]
