"""Memory plan of a sharded train step, checked by compiling it from shapes alone.

``plan_memory`` builds the training state of a model as ``jax.ShapeDtypeStruct``s (the real
model class under ``nnx.eval_shape``; float32 master weights, the compute dtype the preset
asks for), the real optimizer chain (``with_projection(adamw)``, its AdamW moments and the
protected bases in the optimizer state), places every array with the runner's sharding rule
(``asvd_jax.cl._mesh.leaf_spec``) on a (data, fsdp) mesh, lowers and compiles the step that
``asvd_jax.cl._train.make_train_step`` runs (forward, backward, update, donated state) and
reads XLA's memory analysis of the per-device program. Nothing is allocated, so a 7B plan
compiles on a CPU with fake devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
set before jax starts: ``benchmarks/memory_plan.py`` runs each plan in a subprocess).

Bases: every target matrix protects ``k = floor(protected * min(m, n))`` directions, stored
as ``compute_bases`` would (basis or complement per complete side), float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import asvd_jax as aj
from asvd_jax.cl._mesh import leaf_spec

GB = 1e9


@dataclasses.dataclass(frozen=True)
class PlanSpec:
    """What to compile: a model, its batch, the protected fraction and the mesh."""

    family: str  # "llama" or "t5"
    config: Any  # LlamaConfig or T5Config
    compute_dtype: str = "bfloat16"  # the model's compute dtype; params stay float32
    batch: int = 8  # rows per optimizer step (global, split over every device)
    seq: int = 512  # tokens per row (T5: encoder length)
    target_len: int = 64  # T5 decoder length
    protected: float = 0.8
    data: int = 1
    fsdp: int = 8
    remat: bool = False
    """Llama only: the model's ``remat`` option (``model.remat`` in a run config), the blocks
    as a scan of checkpointed steps."""


def abstract_model(spec: PlanSpec):
    """(graphdef, params, rest) of the model with ShapeDtypeStruct leaves."""
    dtype = jnp.bfloat16 if spec.compute_dtype == "bfloat16" else jnp.float32
    if spec.family == "llama":
        from asvd_jax.models.llama import Llama

        def build():
            return Llama(spec.config, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0),
                         remat=spec.remat)
    elif spec.family == "t5":
        if spec.remat:
            raise ValueError("remat: only the llama family has a rematerialised forward")
        from asvd_jax.models.t5 import T5

        def build():
            return T5(spec.config, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    else:
        raise ValueError(f"family must be 'llama' or 't5', got {spec.family!r}")
    return nnx.split(nnx.eval_shape(build), nnx.Param, ...)


def abstract_bases(params: Any, protected: float) -> Any:
    """SubspaceBasis leaves of ShapeDtypeStructs, with the widths compute_bases would store."""
    if not 0.0 <= protected <= 1.0:
        raise ValueError(f"protected must be in [0, 1], got {protected!r}")
    targets = aj.select_targets(params)
    flat = dict(aj.flatten_with_paths(params)[0])
    specs = dict(aj.list_targets(targets))

    def basis(path, spec):
        leaf = flat[path]
        spec = spec.resolve(len(leaf.shape), path)
        batch, m, n = spec.matrix_shape(leaf.shape)
        r = min(m, n)
        k = int(math.floor(protected * r))
        in_comp = m == r and (r - k) < k
        out_comp = n == r and (r - k) < k
        w_in = r - k if in_comp else k
        w_out = r - k if out_comp else k
        return aj.SubspaceBasis(jax.ShapeDtypeStruct(tuple(batch) + (m, w_in), jnp.float32),
                                jax.ShapeDtypeStruct(tuple(batch) + (n, w_out), jnp.float32),
                                spec, in_comp, out_comp)

    leaves, treedef = aj.flatten_with_paths(targets, is_leaf=lambda x: x is None or
                                            isinstance(x, aj.MatrixSpec))
    return treedef.unflatten([None if s is None else basis(p, specs[p]) for p, s in leaves])


def _mesh(spec: PlanSpec) -> jax.sharding.Mesh:
    n = spec.data * spec.fsdp
    if jax.device_count() < n:
        raise ValueError(f"mesh data={spec.data} x fsdp={spec.fsdp} needs {n} devices, jax has "
                         f"{jax.device_count()} (set XLA_FLAGS=--xla_force_host_platform_"
                         f"device_count={n} before jax starts)")
    devices = np.asarray(jax.devices()[:n]).reshape(spec.data, spec.fsdp)
    auto = jax.sharding.AxisType.Auto
    return jax.sharding.Mesh(devices, ("data", "fsdp"), axis_types=(auto, auto))


def _shardings(tree: Any, mesh, fsdp: int) -> Any:
    return jax.tree.map(
        lambda x: jax.sharding.NamedSharding(mesh, leaf_spec(tuple(x.shape), fsdp)), tree)


def _device_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of ``tree`` (largest shard per leaf)."""
    sizes = jax.tree.map(lambda x, s: int(np.prod(s.shard_shape(tuple(x.shape)), dtype=np.int64))
                         * np.dtype(x.dtype).itemsize, tree, shardings)
    return int(sum(jax.tree.leaves(sizes)))


def _loss_fn(spec: PlanSpec, graphdef, rest):
    if spec.family == "llama":
        def loss(p, batch):
            logits = nnx.merge(graphdef, p, rest)(batch["tokens"][:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, batch["tokens"][:, 1:]).mean()
    else:
        def loss(p, batch):
            ids = batch["input_ids"]
            logits = nnx.merge(graphdef, p, rest)(ids, jnp.ones_like(ids), batch["labels"][:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, batch["labels"][:, 1:]).mean()
    return loss


def _abstract_batch(spec: PlanSpec) -> dict:
    i32 = jnp.int32
    if spec.family == "llama":
        return {"tokens": jax.ShapeDtypeStruct((spec.batch, spec.seq + 1), i32)}
    return {"input_ids": jax.ShapeDtypeStruct((spec.batch, spec.seq), i32),
            "labels": jax.ShapeDtypeStruct((spec.batch, spec.target_len + 1), i32)}


def plan_memory(spec: PlanSpec) -> dict:
    """Compile the sharded train step from shapes; per-device bytes by part, and XLA's totals."""
    if spec.batch % (spec.data * spec.fsdp):
        raise ValueError(f"batch {spec.batch} does not split over {spec.data * spec.fsdp} devices")
    graphdef, params, rest = abstract_model(spec)
    bases = abstract_bases(params, spec.protected)
    adamw = optax.adamw(1e-5, weight_decay=0.01)
    # The real chain's init, traced on abstract params and bases: the state's structure is
    # exactly what a run holds (AdamW moments, then the bases in ProjectOutProtectedState).
    opt_state = jax.eval_shape(lambda p, b: aj.with_projection(adamw, b).init(p), params, bases)
    # The update reads the bases from the state, so the chain is built without constants.
    tx = aj.with_projection(adamw, None)
    loss_fn = _loss_fn(spec, graphdef, rest)

    def step(p, s, batch):  # as asvd_jax.cl._train.make_train_step
        loss, g = jax.value_and_grad(loss_fn)(p, batch)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    mesh = _mesh(spec)
    p_sh = _shardings(params, mesh, spec.fsdp)
    s_sh = _shardings(opt_state, mesh, spec.fsdp)
    batch = _abstract_batch(spec)
    b_sh = jax.tree.map(lambda _: jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(("data", "fsdp"))), batch)
    jitted = jax.jit(step, in_shardings=(p_sh, s_sh, b_sh),
                     out_shardings=(p_sh, s_sh, jax.sharding.NamedSharding(
                         mesh, jax.sharding.PartitionSpec())),
                     donate_argnums=(0, 1))
    compiled = jitted.lower(params, opt_state, batch).compile()
    mem = compiled.memory_analysis()

    b_state = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
        x, aj.ProjectOutProtectedState)) if isinstance(x, aj.ProjectOutProtectedState)]
    bases_bytes = _device_bytes(b_state[0].bases, _shardings(b_state[0].bases, mesh, spec.fsdp))
    state_bytes = _device_bytes(opt_state, s_sh)
    params_bytes = _device_bytes(params, p_sh)
    n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
    out = dict(
        family=spec.family, compute_dtype=spec.compute_dtype, remat=spec.remat, batch=spec.batch, seq=spec.seq,
        target_len=spec.target_len if spec.family == "t5" else None, protected=spec.protected,
        mesh=dict(data=spec.data, fsdp=spec.fsdp), params=n_params,
        per_device=dict(
            params=params_bytes, adam=state_bytes - bases_bytes, bases=bases_bytes,
            batch=_device_bytes(batch, b_sh),
            # XLA's numbers for the per-device program:
            arguments=int(mem.argument_size_in_bytes), outputs=int(mem.output_size_in_bytes),
            aliased=int(mem.alias_size_in_bytes), temp=int(mem.temp_size_in_bytes),
            code=int(mem.generated_code_size_in_bytes)))
    d = out["per_device"]
    # Donated state aliases its outputs, so the peak is the arguments, the temporaries
    # (gradients, activations kept for the backward pass, collective buffers) and whatever
    # output does not alias an argument (the loss).
    d["peak"] = d["arguments"] + d["temp"] + d["outputs"] - d["aliased"]
    # Gradients are float32 and sharded like the params; the rest of temp is activations and
    # workspace.
    d["activations_and_workspace"] = max(d["temp"] - params_bytes, 0)
    return out
