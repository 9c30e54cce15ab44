"""asvd_jax: continual full fine-tuning with adaptive-SVD orthogonal subspaces.

``import asvd_jax`` needs only jax, optax and numpy. Models (flax), checkpoints (orbax), data
(datasets) and plots (matplotlib) live in subpackages that import their framework themselves.
"""

from asvd_jax._paths import flatten_with_paths, path_str

__version__ = "0.1.0"
