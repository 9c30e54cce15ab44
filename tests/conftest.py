"""Session-wide settings. tests/ is on the import path through pyproject's pytest
configuration (``pythonpath``), so the shared helpers import as ``_helpers`` and
``tolerances``."""

import functools
import os

# Tests never touch a network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402  (after the environment above)
import optax  # noqa: E402

# Strict dtype promotion: a silent bf16 -> float32 or int -> float mix in our code is an error,
# not a quiet upcast.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def _standard_promotion(owner, name: str) -> None:
    """Run the third-party function ``owner.name`` under standard promotion (it is not written
    for strict promotion and we cannot change it); our code around it stays strict."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.numpy_dtype_promotion("standard"):
            return fn(*args, **kwargs)

    setattr(owner, name, wrapped)


# optax 0.2.8: Adam's bias correction computes `decay ** count` (a Python float to the power of
# the int32 step count), which strict promotion refuses.
_standard_promotion(optax.tree, "bias_correction")

# optax 0.2.8: MultiSteps mixes its int32 step counters with floats and bools throughout its
# update (the transformation it wraps runs inside, so under standard promotion too).
_standard_promotion(optax.MultiSteps, "update")
