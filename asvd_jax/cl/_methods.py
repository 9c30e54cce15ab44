"""This method (ASVD) and sequential full fine-tuning as ``Method`` plug-ins.

ASVD at task ``t >= 1`` (0-based): activation statistics of the previous task's data through
the current model -> a rank plan -> protected singular bases of the current weights -> train
with ``chain(inner optimizer, project_out_protected(bases))``: the projection is last, so
the applied update ``W_t - W_0`` of every target stays out of the protected subspaces for
any inner optimizer (AdamW's scaling and weight decay included). Task 0 is plain fine-tuning.

Sequential fine-tuning (SeqFT) is the same with ``k = 0`` everywhere: no statistics, no bases.
The ablation ``projection="none"`` computes statistics and the plan (so the record shows what
*would* have been protected) but projects nothing.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import asvd_jax as aj
from asvd_jax.cl._config import MethodConfig
from asvd_jax.cl._method import TaskContext

InnerFactory = Callable[[TaskContext], optax.GradientTransformation]


@functools.partial(jax.jit, static_argnames="mode")
def _leakage(params, params_at_start, bases, mode):
    """``aj.protected_leakage`` of this task's change, as one compiled program.

    Under jit for speed (hundreds of small per-matrix ops otherwise), and because on a CPU
    device mesh the same ops run eagerly on FSDP-sharded weights deadlock: with two virtual
    CPU devices, a few dozen eager projections of sharded (576, 1536) matrices ended in an XLA
    all-reduce rendezvous that one device never joined (process aborted after the collective
    timeout); the jitted version of the same computation ran in 2 s (jax 0.10.2, 2 cores).
    """
    delta = jax.tree.map(jnp.subtract, params, params_at_start)
    return aj.protected_leakage(delta, bases, mode)


@functools.partial(jax.jit, static_argnames="mode")
def _protected_share(total, bases, mode):
    """``aj.protected_leakage`` of the summed applied updates (jitted, as ``_leakage``)."""
    return aj.protected_leakage(total, bases, mode)


def freeze_non_targets(targets: Any) -> optax.GradientTransformation:
    """Zero the updates of every leaf that is not a target (embeddings, norms, head)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        is_leaf = lambda x: x is None or isinstance(x, aj.MatrixSpec)
        out = jax.tree.map(lambda spec, u: u if spec is not None else jnp.zeros_like(u),
                           targets, updates, is_leaf=is_leaf)
        return out, state

    return optax.GradientTransformation(init_fn, update_fn)


class SequentialFineTuning:
    """Full fine-tuning of every parameter, task after task (the lower bound, k = 0)."""

    name = "seqft"

    def __init__(self, config: MethodConfig, inner: InnerFactory):
        self.config = config
        self._inner = inner

    def start_task(self, ctx: TaskContext):
        return ctx.params, None

    def effective_params(self, trainable, frozen):
        del frozen
        return trainable

    def penalty(self, trainable, frozen):
        del trainable, frozen
        return jnp.zeros((), jnp.float32)

    def optimizer(self, ctx: TaskContext) -> optax.GradientTransformation:
        return self._inner(ctx)

    def finish_task(self, trainable, frozen, ctx: TaskContext):
        del frozen, ctx
        return trainable, {}


class ASVD(SequentialFineTuning):
    """Adaptive-SVD orthogonal-subspace fine-tuning (this method)."""

    name = "asvd"

    def __init__(self, config: MethodConfig, inner: InnerFactory):
        super().__init__(config, inner)
        # This boundary's bases, from start_task until init_task_state hands them to the
        # optimizer state (the only copy from then on; leakage reads them there).
        self._boundary_bases = None
        self._plan = None

    def policy(self, ctx: TaskContext):
        """The configured rank policy (``method.rank_policy``) for this task; the progressive
        policy is the one whose ranks depend on the task's position in the sequence."""
        from asvd_jax import ranks

        policy = self.config.rank_policy
        if isinstance(policy, ranks.ProgressivePolicy):
            return policy.at_task(ctx.index + 1, ctx.num_tasks)
        return policy

    def start_task(self, ctx: TaskContext):
        from asvd_jax import ranks

        self._boundary_bases, self._plan = None, None
        self.singular_values = None  # {path: (*stack, r)} of this boundary's SVDs (capacity report)
        if ctx.index == 0 or ctx.previous_batches is None:
            return ctx.params, None
        svds = aj.weight_svds(ctx.params, ctx.targets)
        specs = dict(aj.list_targets(ctx.targets))
        paths = list(specs)
        # Models whose targets see several token streams (T5: encoder and decoder states)
        # give one capture function per stream, each with its own padding mask.
        groups_fn = getattr(ctx.adapter, "capture_groups", None)
        groups = groups_fn(paths) if groups_fn is not None else [(ctx.adapter.capture_fn, paths)]
        stats = {}
        for capture_fn, group in groups:
            stats.update(ranks.collect_statistics(capture_fn, ctx.params, ctx.previous_batches(),
                                                  {p: specs[p] for p in group},
                                                  svds=svds))
        stats = {p: stats[p] for p in paths}  # target order, whatever the grouping
        self._plan = ranks.plan_ranks(stats, self.policy(ctx))
        self.singular_values = {p: np.asarray(svds[p].singular_values) for p in paths}
        # Bases also for the "none" ablation: nothing is projected, but the leakage record
        # then shows how much of the update lands in what would have been protected.
        layout = tuple(self.config.fixed_layout) or None
        self._boundary_bases = aj.compute_bases(ctx.params, self._plan.ranks(), ctx.targets,
                                                svds=svds, fixed_layout=layout)
        return ctx.params, None

    @property
    def _mode(self) -> str:
        return "strict" if self.config.projection == "none" else self.config.projection

    def optimizer(self, ctx: TaskContext) -> optax.GradientTransformation:
        """The run's one chain; the bases start empty and come with ``init_task_state``."""
        from asvd_jax.cl._task_state import empty_bases, hold_bases

        parts = [self._inner(ctx)]
        if not self.config.train_non_targets:
            parts.append(freeze_non_targets(ctx.targets))
        if self.config.projection != "none":
            parts.append(aj.project_out_protected(
                empty_bases(ctx.targets), self.config.projection,
                precision=self.config.projection_precision,
                group_shapes=self.config.group_shapes))
        else:  # the ablation projects nothing but keeps the bases for the leakage record
            parts.append(hold_bases(ctx.targets))
        if self.config.leakage_from == "updates":
            # Bases exist at exactly the targets, so tracking the targets tracks the bases' leaves.
            parts.append(aj.track_applied_updates(ctx.targets))
        return optax.chain(*parts)

    def init_task_state(self, opt_state, ctx: TaskContext):
        """The chain's fresh state for this task with this boundary's bases swapped in
        (``aj.set_bases``). Before the first boundary nothing is protected: the bases stay
        empty and the applied-update sum, which nothing reads then, is dropped."""
        from asvd_jax.cl._task_state import untracked

        del ctx
        bases, self._boundary_bases = self._boundary_bases, None
        if bases is None:
            return untracked(opt_state)
        return aj.set_bases(opt_state, bases)

    def leakage(self, trainable, ctx: TaskContext, opt_state=None) -> dict[str, float]:
        """Protected share of this task's change so far: max / mean over targets, worst path.

        The change is the float32 sum of the applied updates when the optimizer state tracks
        it (``method.leakage_from: updates``), else ``W_t - W_0`` (whose float32 rounding
        reads as ~1e-3 leakage on nearly frozen matrices).
        """
        from asvd_jax.cl._task_state import state_bases

        bases = None if opt_state is None else state_bases(opt_state)
        if bases is None:
            return {}
        total = aj.applied_updates(opt_state)
        if total is not None:
            values = _protected_share(total, bases, self._mode)
        else:
            values = _leakage(trainable, ctx.params, bases, self._mode)
        leak = {p: float(np.max(np.asarray(v))) for p, v in values.items()}
        if not leak:
            return {}
        return {"max": max(leak.values()), "mean": float(np.mean(list(leak.values()))),
                "worst": max(leak, key=leak.get)}

    def finish_task(self, trainable, frozen, ctx: TaskContext):
        record: dict[str, Any] = {}
        if self._plan is not None:
            record["rank_plan"] = json.loads(self._plan.to_json())
            record["rank_summary"] = self._plan.summary()
            # Realised vs requested protection (the paper policy realises less than trr).
            record["protected_budget"] = self._plan.budget()
        # The leakage is added by the runner, which holds the optimizer state (see leakage).
        return trainable, record


class ASVDWithEWC(ASVD):
    """ASVD plus EWC's quadratic penalty (``method.add_ewc``).

    The EWC baseline object keeps the Fisher and anchors and gives the penalty; ASVD gives the
    bases and the chain, whose projection is last, so the penalty's gradient is projected like
    the task's and the protected subspaces stay exact. The two act on different things: the
    projection keeps the previous weights' top singular directions, the penalty holds every
    parameter in proportion to its Fisher, inside the free subspace and on the non-targets
    (embeddings, norms) that the projection never constrains.
    """

    def __init__(self, config: MethodConfig, inner: InnerFactory):
        from asvd_jax.analysis import ewc_penalty_lambda
        from asvd_jax.cl import baselines
        from asvd_jax.cl._config import to_dict

        super().__init__(config, inner)
        # The same rule the model card and the grouping of runs by seed read a saved config with.
        lam = ewc_penalty_lambda(to_dict(config))
        self._ewc = baselines.ewc(baselines.EWCConfig(ewc_lambda=lam))

    def start_task(self, ctx: TaskContext):
        params, _ = super().start_task(ctx)
        return params, self._ewc.start_task(ctx)[1]

    def penalty(self, trainable, frozen):
        return self._ewc.penalty(trainable, frozen)

    def finish_task(self, trainable, frozen, ctx: TaskContext):
        params, record = super().finish_task(trainable, frozen, ctx)
        record["ewc"] = self._ewc.finish_task(trainable, frozen, ctx)[1]
        return params, record

    def carry_state(self):
        return self._ewc.carry_state()

    def restore_carry_state(self, tree) -> None:
        self._ewc.restore_carry_state(tree)


def build_method(config: MethodConfig, inner: InnerFactory):
    """The Method object for ``config.name`` (``mtl`` trains like SeqFT on the joint data)."""
    if config.name in ("seqft", "mtl"):
        method = SequentialFineTuning(config, inner)
        method.name = config.name
        return method
    if config.name == "asvd":
        return ASVDWithEWC(config, inner) if config.add_ewc else ASVD(config, inner)
    from asvd_jax.cl import _baselines_glue

    return _baselines_glue.build(config, inner)
