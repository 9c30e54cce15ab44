"""The continual-learning runner: one ``run(config)`` for every method and model family.

For each stage (a task; for MTL one joint stage over all tasks):

1. ``method.start_task(ctx)``: ASVD collects statistics on the previous task's data, plans
   ranks and computes bases from the current weights; baselines set up their factors.
2. Training: the generic jitted step over deterministic micro-batches, gradient accumulation
   through ``asvd_jax.accumulate_gradients``; a non-finite loss stops the run (the last checkpoint stays).
3. ``method.finish_task``: the new params and a record (rank plan, leakage, Fisher summary).
4. Evaluation of every task of the sequence -> one row of the accuracy matrix.
5. A task-end checkpoint (params, carry state, AdamW moments when carried) and metrics.json,
   both committed atomically, so ``resume=True`` continues a killed run exactly.

After the sequence: metrics (AA, BWT, FWT, forgetting), general-ability LM loss, heatmap,
summary.md and the model in the HF safetensors layout.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import gc
import math
import os
import sys
import time
from typing import Any

import jax
import numpy as np

import asvd_jax as aj
from asvd_jax.cl import _metrics
from asvd_jax.cl._checkpoint import Checkpointer, write_json_atomic
from asvd_jax.cl._config import ExperimentConfig, to_dict, to_yaml, validate
from asvd_jax.cl._early_stop import dev_accuracy, hold_out, make_stopper
from asvd_jax.cl._method import TaskContext
from asvd_jax.cl._progress import Progress, counter
from asvd_jax.cl._sequence import TaskStream, check_eval_split, derive_seed, load_sequence, statistics_items
from asvd_jax.cl._status import recording_end
from asvd_jax.cl._train import (
    adam_states,
    inner_optimizer,
    make_train_step,
    transplant_adam,
    with_accumulation,
)


class RunError(RuntimeError):
    """A run cannot continue (non-finite loss, mismatched resume); the message says why."""


# Config fields that may differ between a run and its resumption.
_RESUME_FREE = {("run", "stop_after_task"), ("run", "progress"), ("run", "trackers")}


def default_run_name(config: ExperimentConfig) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{config.method.name}-{config.data.suite}{config.data.order}-{stamp}"


def _enable_compile_cache() -> None:
    # Identical steps (SeqFT's tasks, reruns) then reuse compiled programs across processes.
    folder = os.environ.get("ASVD_JAX_COMPILE_CACHE",
                            os.path.join(os.path.expanduser("~"), ".cache", "asvd_jax", "xla"))
    if folder and folder != "0":
        try:
            jax.config.update("jax_compilation_cache_dir", folder)
        except Exception:  # an older jax without the option: run uncached
            pass


def release_freed_memory() -> None:
    """Return memory freed by the last stage to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    After a large free glibc raises its mmap threshold (up to 32 MB), so later arrays of a few
    MB -- most weight matrices, their gradients and AdamW moments -- come from the heap, and
    what a finished stage frees there stays resident. Measured on SmolLM2-135M (5 tasks, asvd,
    2 cores): resident memory grew ~1.9 GB per task to a 13.3 GB peak although each task's live
    arrays are the same size; with the mmap threshold pinned the same run peaked at 7.4 GB.
    """
    gc.collect()  # closures of the last stage's jitted step and optimizer can sit in cycles
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return
    trim(0)


def _comparable(config: ExperimentConfig) -> dict:
    d = to_dict(config)
    for section, key in _RESUME_FREE:
        d[section].pop(key, None)
    return d


class Runner:
    """State of one run; ``run()`` below is the entry point."""

    def __init__(self, config: ExperimentConfig, run_dir: str | None = None, resume: bool = False,
                 initial: dict | None = None, *, model: Any = None, tokenizer: Any = None,
                 sequence: Any = None, method: Any = None):
        self.config = validate(config)
        # Objects from research code that replace what the config would build (see run()).
        self._given = {"model": model, "tokenizer": tokenizer, "sequence": sequence, "method": method}
        # Evaluations of the initial model from another run with the same model, data and eval
        # settings (the demo's second method): {"zero_shot": ..., "general_ability": ...}.
        self.initial = initial or {}
        c = self.config
        self.resume = resume
        self.run_dir = os.path.abspath(run_dir or os.path.join(c.run.out_dir, c.run.name or default_run_name(c)))
        self.progress = Progress(c.run.progress)
        self.timing: dict[str, float] = {}
        self._t_start: float | None = None  # set by run(): "total" = earlier segments + this one
        self._total_before = 0.0

    # ------------------------------------------------------------------------- set-up
    def _prepare_dir(self) -> dict | None:
        import yaml

        cfg_path = os.path.join(self.run_dir, "config.yaml")
        metrics_path = os.path.join(self.run_dir, "metrics.json")
        if self.resume:
            if not os.path.isfile(cfg_path):
                raise RunError(f"--resume: {cfg_path} missing (not a run directory)")
            with open(cfg_path) as f:
                saved = yaml.safe_load(f)
            from asvd_jax.cl._config import apply_overrides

            saved_cfg = apply_overrides(ExperimentConfig(), saved)
            if _comparable(saved_cfg) != _comparable(self.config):
                diff = [f"{s}.{k}" for s, sec in _comparable(self.config).items()
                        for k, v in sec.items() if _comparable(saved_cfg)[s].get(k) != v]
                raise RunError(f"--resume: the config differs from {cfg_path} in {diff}")
            if os.path.isfile(metrics_path):
                from asvd_jax.cl._report import load_metrics

                return load_metrics(self.run_dir)
            return None
        if os.path.isfile(metrics_path):
            raise RunError(f"{self.run_dir} already holds a run; use resume (--resume) or another run.name")
        os.makedirs(self.run_dir, exist_ok=True)
        tmp = cfg_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(to_yaml(self.config))
        os.replace(tmp, cfg_path)
        return None

    def _timed(self, key: str, seconds: float) -> None:
        self.timing[key] = self.timing.get(key, 0.0) + seconds

    def setup(self) -> None:
        from asvd_jax.cl._mesh import make_mesh, shard_tree
        from asvd_jax.cl._families import build_adapter

        c = self.config
        if c.mesh.distributed:
            jax.distributed.initialize()
        _enable_compile_cache()
        if c.run.blas_threads > 0:
            # jax's CPU SVD calls scipy's OpenBLAS, loaded at the first SVD: the variable
            # still takes effect here (an explicit user setting wins).
            os.environ.setdefault("OPENBLAS_NUM_THREADS", str(c.run.blas_threads))
        self.saved_metrics = self._prepare_dir()
        t = time.perf_counter()
        self.progress.log(f"[asvd-jax] run directory {self.run_dir}")
        self.progress.log(f"[asvd-jax] building data ({c.data.suite}, order {c.data.order})")
        self.sequence = load_sequence(c.data, self.progress.bar, sequence=self._given["sequence"])
        check_eval_split(self.sequence, c.eval.split)  # before minutes of model loading
        # train.stop_holdout: early stopping on held-out training examples, not on dev.
        self.tasks, self.stop_sets = hold_out(self.sequence.tasks, c.train.stop_holdout if
                                              c.train.patience > 0 else 0, c.data.seed)
        self._timed("data", time.perf_counter() - t)
        t = time.perf_counter()
        self.progress.log(f"[asvd-jax] loading model ({c.model.family}, {c.model.source})")
        self.family, self.adapter, default_targets = build_adapter(c, self._given["model"], self._given["tokenizer"])
        self.mesh = make_mesh(c.mesh)
        if self.mesh is not None and c.train.batch_size % (self.mesh.size) != 0:
            raise RunError(f"train.batch_size={c.train.batch_size} must be a multiple of the "
                           f"mesh size {self.mesh.size}")
        from asvd_jax.cl._data_checks import data_warnings

        # Token budgets that silently hurt: max_len truncating most inputs, long labels.
        self.warnings = data_warnings(self.family, self.adapter, self.tasks, c.data.max_len,
                                      c.eval.max_new_tokens, c.eval.split)
        for w in self.warnings:  # shown even without progress output
            print(f"[asvd-jax] warning: {w}", file=sys.stderr, flush=True)
        from asvd_jax.cl._option_pool import option_pool

        try:
            self.option_pool = option_pool(c.eval.option_pool, self.tasks, self.adapter)
        except ValueError as e:
            raise RunError(str(e)) from None
        self.params0 = shard_tree(self.adapter.params, self.mesh)
        include = list(c.method.targets_include) or list(default_targets)
        exclude = list(c.method.targets_exclude) or aj.DEFAULT_EXCLUDE
        self.targets = aj.select_targets(self.params0, include=include, exclude=exclude)
        self._timed("model", time.perf_counter() - t)
        self.method = self._build_method()
        if c.method.name == "mtl":
            joint = [(task, ex) for task in self.tasks for ex in task.train]
            self.stages = [("joint", joint)]
        else:
            self.stages = [(task.name, [(task, ex) for ex in task.train]) for task in self.tasks]
        self.ckpt = Checkpointer(self.run_dir, keep_tasks=c.checkpoint.keep_tasks,
                                 keep_steps=max(c.checkpoint.keep_steps, 1))
        from asvd_jax.cl._trackers import Trackers

        self.trackers = Trackers(c.run.trackers, self.run_dir, to_dict(c))

    def _build_method(self):
        from asvd_jax.cl._methods import build_method

        if self._given["method"] is not None:
            return self._given["method"]

        def inner(ctx: TaskContext):
            stream = TaskStream(self.stages[ctx.index][1], self.config.train, ctx.index)
            return inner_optimizer(self.config.train, stream.optimizer_steps)

        return build_method(self.config.method, inner)

    # ------------------------------------------------------------------------- batches
    def _device_batch(self, items):
        from asvd_jax.cl._mesh import shard_batch

        return shard_batch(self.adapter.train_batch(items), self.mesh)

    def _stats_batches(self, stage: int):
        """Batches of the previous stage's training data for rank statistics (with a bar)."""
        c = self.config
        task = self.tasks[stage - 1]
        items = statistics_items(task, c.method.stats_examples, c.data.seed)
        bs = c.train.batch_size
        chunks = [items[s:s + bs] for s in range(0, len(items), bs)]

        def gen():
            # One token width for the whole pass: the statistics step compiles once.
            from asvd_jax.cl._compact import compact, same_width
            from asvd_jax.cl._mesh import shard_batch

            batches = [self.adapter.train_batch(ch) for ch in chunks]
            if compact(self.family, self.adapter):  # batches padded to their own widths
                batches = same_width(batches, self.adapter.tokenizer.pad_id)
            for batch in self.progress.bar(batches, len(batches), f"statistics ({task.name})"):
                yield shard_batch(batch, self.mesh)

        return gen

    # ---------------------------------------------------------------------- evaluation
    def evaluate_all(self, params, label: str) -> list[dict]:
        t = time.perf_counter()
        out = []
        for task in self.progress.bar(self.tasks, len(self.tasks), f"evaluate ({label})"):
            examples = task.split(self.config.eval.split)
            from asvd_jax.cl._option_pool import evaluate

            res = _metrics.annotate_evaluation(
                task, examples, evaluate(self.adapter, params, task, examples, self.option_pool))
            out.append({"task": task.name, **res})
        self._timed("evaluation", time.perf_counter() - t)
        return out

    def general_lm_loss(self, params) -> float | None:
        if not self.config.eval.lm_loss:
            return None
        if self.config.data.general_text:
            path = self.config.data.general_text
            if not os.path.isfile(path):
                raise RunError(f"data.general_text: {path!r} does not exist")
            with open(path) as f:
                texts = [p for p in f.read().split("\n\n") if p.strip()]
        else:
            from asvd_jax.cl._general_text import PARAGRAPHS

            texts = list(PARAGRAPHS)
        return self.adapter.lm_loss(params, texts)

    # --------------------------------------------------------------------- checkpoints
    def _carry(self) -> dict | None:
        fn = getattr(self.method, "carry_state", None)
        return fn() if fn is not None else None

    def _restore_task_end(self, name: str) -> Any:
        groups = {"params": self.params0}
        restored = self.ckpt.restore(name, groups)
        carry = self.ckpt.restore_raw(name, "carry")
        fn = getattr(self.method, "restore_carry_state", None)
        if carry is not None and fn is not None:
            fn(carry)
        return restored["params"]

    def _save_task_end(self, stage: int, params, moments, record: dict) -> None:
        groups = {"params": params}
        if moments is not None:
            groups["adam"] = moments
        # meta.json holds the method's record (rank plan included) beside the arrays.
        self.ckpt.save(f"task-{stage:04d}", groups,
                       {"kind": "task", "stage": stage, "task_index": stage,
                        "rng_seed": self.config.train.seed, "record": record},
                       raw={"carry": self._carry()})
        self.ckpt.remove("step-")  # mid-task checkpoints of a finished task are spent
        self.ckpt.prune("task-", keep=self.config.checkpoint.keep_tasks)

    # --------------------------------------------------------------------------- main
    def _metrics_base(self) -> dict:
        c = self.config
        return {
            "name": os.path.basename(self.run_dir),
            "method": getattr(self._given["method"], "name", None) or c.method.name,
            "model": f"{c.model.family}:{c.model.source}" if self._given["model"] is None
            else f"{c.model.family}:{type(self._given['model']).__name__} (passed to run)",
            "sequence": self.sequence.name,
            "tasks": [t.name for t in self.tasks],
            "protocol": self._protocol_label(),
            "rows": [],
            "warnings": list(self.warnings),
            "status": "running",
        }

    def _protocol_label(self) -> str:
        label = self.family.describe_protocol(self.config.eval.protocol, self.tasks)
        if self.option_pool is not None:  # eval.option_pool=sequence
            label += f"; options scored over all {len(self.option_pool)} answers of the sequence"
        return label

    def write_metrics(self, metrics: dict) -> None:
        metrics["timing"] = dict(self.timing)
        if self._t_start is not None:
            metrics["timing"]["total"] = self._total_before + time.perf_counter() - self._t_start
        write_json_atomic(os.path.join(self.run_dir, "metrics.json"), metrics)

    def run(self) -> dict:
        t_start = time.perf_counter()
        self.setup()
        c = self.config
        metrics = self._metrics_base()
        saved = self.saved_metrics or {}
        # A resumed run adds its times to the killed runs' (up to their last metrics write);
        # "total" is wall time over all segments, kept current by write_metrics.
        saved_timing = dict(saved.get("timing") or {})
        self._total_before = float(saved_timing.pop("total", 0.0))
        self._t_start = t_start
        for key, seconds in saved_timing.items():
            self._timed(key, float(seconds))
        params = self.params0
        start_stage, step_meta, moments = 0, None, None
        latest = self.ckpt.latest() if self.resume else None
        if latest is not None:
            stage = latest["stage"]
            if latest["kind"] == "task":
                params = self._restore_task_end(latest["name"])
                start_stage = stage + 1
                if "adam" in latest["leaf_counts"]:
                    moments = latest["name"]
            else:
                if stage > 0:
                    params = self._restore_task_end(f"task-{stage - 1:04d}")
                start_stage, step_meta = stage, latest
            self.progress.log(f"[asvd-jax] resuming from checkpoint {latest['name']}")
        metrics["rows"] = list(saved.get("rows", []))[:start_stage]
        for key in ("zero_shot", "general_ability"):
            if key in saved:
                metrics[key] = saved[key]
            elif key in self.initial:
                metrics[key] = {"lm_loss_before": self.initial[key]["lm_loss_before"]} \
                    if key == "general_ability" else self.initial[key]
        with recording_end(metrics, self._write_ended):  # interrupted / failed runs say so
            if c.eval.zero_shot and "zero_shot" not in metrics:
                ev = self.evaluate_all(params, "zero-shot")
                metrics["zero_shot"] = {"accuracy": [e["accuracy"] for e in ev],
                                        "option_accuracy": [e.get("option_accuracy") for e in ev],
                                        "eval": ev}
            if "general_ability" not in metrics:
                before = self.general_lm_loss(params)
                if before is not None:
                    metrics["general_ability"] = {"lm_loss_before": before}
            self.write_metrics(metrics)
            for stage in range(start_stage, len(self.stages)):
                params, moments = self._run_stage(stage, params, metrics, step_meta, moments)
                step_meta = None
                release_freed_memory()
                if c.run.stop_after_task == stage and stage < len(self.stages) - 1:
                    metrics["status"] = "stopped_after_task"
                    metrics["status_detail"] = f"stopped after stage {stage} (run.stop_after_task)"
                    self._write_ended(metrics)
                    self.params = params
                    return metrics
            self._finish(params, metrics)
            metrics["status"] = "complete"
            metrics.pop("status_detail", None)  # a resumed run's earlier stop
            self._write_ended(metrics)
        self.params = params
        return metrics

    def _write_ended(self, metrics: dict) -> None:
        from asvd_jax.cl._report import write_report

        self.write_metrics(metrics)
        write_report(self.run_dir, metrics)

    def _run_stage(self, stage: int, params, metrics: dict, step_meta: dict | None, moments):
        from asvd_jax.cl._mesh import shard_tree

        c = self.config
        name, items = self.stages[stage]
        stream = TaskStream(items, c.train, stage)
        from asvd_jax.cl._compact import stage_width

        self.adapter.min_width = stage_width(self.family, self.adapter, list(stream.chunks()))  # short stage: one shape
        prev = self._stats_batches(stage) if stage > 0 and c.method.name != "mtl" else None
        ctx = TaskContext(
            index=stage, num_tasks=len(self.stages), params=params, targets=self.targets,
            adapter=self.adapter, previous_batches=prev,
            current_batches=lambda: (self._device_batch(ch) for ch in stream.chunks()),
            rng=jax.random.fold_in(jax.random.key(c.train.seed), stage),
        )
        t = time.perf_counter()
        trainable, frozen = self.method.start_task(ctx)
        release_freed_memory()  # the float64 SVDs and statistics of start_task
        start_seconds = time.perf_counter() - t
        self._timed("start_task", start_seconds)
        # The step donates its input buffers; ctx.params must survive (leakage, methods).
        trainable = shard_tree(jax.tree.map(lambda x: x.copy(), trainable), self.mesh)
        frozen = shard_tree(frozen, self.mesh)
        opt = with_accumulation(self.method.optimizer(ctx), c.train.grad_accum)
        # Copied for the same reason: the state may hold the method's own arrays (bases).
        opt_state = shard_tree(jax.tree.map(lambda x: x.copy(), opt.init(trainable)), self.mesh)
        if not c.train.fresh_optimizer and moments is not None:
            if isinstance(moments, str):  # a checkpoint name: restore against this task's moments
                moments = self.ckpt.restore(moments, {"adam": adam_states(opt_state)})["adam"]
            opt_state = transplant_adam(opt_state, moments)
        start, losses = 0, []
        # Early stopping (train.patience): dev evaluations of this stage's own task(s).
        stop = make_stopper(c.train, stream.per_epoch // c.train.grad_accum, stream.optimizer_steps)
        stage_tasks = self.tasks if c.method.name == "mtl" else [self.tasks[stage]]
        if step_meta is not None:
            es = step_meta.get("early_stop")
            templates = {"trainable": trainable, "frozen": frozen, "opt_state": opt_state}
            if es and es.get("best") is not None:
                templates["best"] = trainable
            restored = self.ckpt.restore(step_meta["name"], templates)
            trainable, frozen, opt_state = restored["trainable"], restored["frozen"], restored["opt_state"]
            start, losses = step_meta["micro_step"], list(step_meta["losses"])
            if stop is not None and es:
                stop.load_state(es, restored.get("best"))
        step_fn = make_train_step(self.adapter, self.method, opt)
        every = c.checkpoint.every_steps * c.train.grad_accum
        t = time.perf_counter()
        leakage_log = []
        from asvd_jax.cl._trackers import step_lr

        step0 = sum(r["train"]["micro_steps"] for r in metrics["rows"])  # earlier stages' steps
        with counter(self.progress, stream.micro_steps, f"train {stage + 1}/{len(self.stages)} ({name})", start) as bar:
            micro = start
            for chunk in stream.chunks(start):
                t_step = time.perf_counter()
                trainable, opt_state, loss, pen, gnorm = step_fn(trainable, frozen, opt_state,
                                                                 self._device_batch(chunk))
                loss = float(loss)
                self.trackers.step(step0 + micro + 1, loss=loss, grad_norm=float(gnorm),
                                   lr=step_lr(c.train, c.method, stream.optimizer_steps, micro // c.train.grad_accum),
                                   seconds=time.perf_counter() - t_step, stage=stage)
                if not math.isfinite(loss) or not math.isfinite(float(pen)):
                    latest = self.ckpt.latest()
                    metrics["status"] = "failed"
                    metrics["status_detail"] = f"non-finite loss at stage {stage} micro-batch {micro}"
                    raise RunError(
                        f"stage {stage} ({name}), micro-batch {micro}: loss is {loss} (penalty "
                        f"{float(pen)}); the run stopped. Last good checkpoint: "
                        f"{latest['name'] if latest else 'none (nothing finished yet)'} in "
                        f"{self.ckpt.root}. Lower train.lr or enable train.max_grad_norm."
                    )
                losses.append(loss)
                micro += 1
                bar.update(1, loss=loss)
                if (stop is not None and micro % c.train.grad_accum == 0
                        and stop.due(micro // c.train.grad_accum)):
                    score = dev_accuracy(self.adapter, self.method, trainable, frozen, stage_tasks,
                                         self.stop_sets)
                    if stop.update(micro // c.train.grad_accum, score, trainable):
                        break
                if every and micro % every == 0 and micro < stream.micro_steps:
                    groups = {"trainable": trainable, "frozen": frozen, "opt_state": opt_state}
                    meta = {"kind": "step", "stage": stage, "micro_step": micro, "losses": losses}
                    if stop is not None:
                        meta["early_stop"] = stop.state()
                        if stop.best_trainable is not None:
                            groups["best"] = stop.best_trainable
                    self.ckpt.save(f"step-{stage:04d}-{micro:06d}", groups, meta)
                    self.ckpt.prune("step-", keep=max(c.checkpoint.keep_steps, 1))
                leak_fn = getattr(self.method, "leakage", None)
                if (leak_fn is not None and c.train.leakage_every
                        and (micro // c.train.grad_accum) % c.train.leakage_every == 0
                        and micro % c.train.grad_accum == 0):
                    leakage_log.append({"optimizer_step": micro // c.train.grad_accum,
                                        **leak_fn(trainable, ctx, opt_state)})
        train_seconds = time.perf_counter() - t
        self._timed("train", train_seconds)
        if stop is not None:
            trainable = stop.restore(trainable)  # the best dev evaluation's weights
        new_moments = None if c.train.fresh_optimizer else adam_states(opt_state)
        params, record = self.method.finish_task(trainable, frozen, ctx)
        leak_fn = getattr(self.method, "leakage", None)
        leak = leak_fn(trainable, ctx, opt_state) if leak_fn is not None else None
        if leak:
            record["leakage"] = leak
        params = shard_tree(params, self.mesh)
        full_record = dict(record)
        if "rank_plan" in record:
            os.makedirs(os.path.join(self.run_dir, "rank_plans"), exist_ok=True)
            write_json_atomic(os.path.join(self.run_dir, "rank_plans", f"task-{stage:04d}-{name}.json"),
                              record.pop("rank_plan"))
        if leakage_log:
            record["leakage_log"] = leakage_log
        ev = self.evaluate_all(params, f"after {name}")
        metrics["rows"].append({
            "stage": name, "index": stage,
            "train": {"micro_steps": len(losses), "optimizer_steps": len(losses) // c.train.grad_accum,
                      "mean_loss": float(np.mean(losses)) if losses else float("nan"),
                      "last_loss": losses[-1] if losses else float("nan"),
                      "losses": losses, "seconds": train_seconds,
                      **({"early_stopping": stop.record()} if stop is not None else {})},
            "record": record,
            "eval": ev,
        })
        capacity = self._capacity(stage, name, params, full_record)
        self.trackers.task(step0 + len(losses), stage, metrics["rows"],
                           start_task_seconds=start_seconds, capacity=capacity)
        self._save_task_end(stage, params, new_moments, full_record)
        self.write_metrics(metrics)
        return params, new_moments

    def _capacity(self, stage: int, name: str, params, record: dict) -> dict | None:
        """ASVD only: the capacity report of this stage into capacity.json (analysis._capacity)."""
        if self.config.method.name != "asvd":
            return None
        from asvd_jax.analysis._capacity import capacity_record, update_capacity_file

        t = time.perf_counter()
        plan = record.get("rank_plan")
        protected = None if plan is None else {e["path"]: e["k"] for e in plan["entries"]}
        policy = to_dict(self.config.method)
        rec = capacity_record(params, self.targets, protected, policy, stage, len(self.stages), name,
                              getattr(self.method, "singular_values", None))
        update_capacity_file(self.run_dir, rec, policy)
        self._timed("capacity", time.perf_counter() - t)
        return rec

    def _finish(self, params, metrics: dict) -> None:
        c = self.config
        rows = metrics["rows"]
        acc = [[e["accuracy"] for e in row["eval"]] for row in rows]
        metrics["accuracy_matrix"] = acc
        opt_acc = [[e.get("option_accuracy") for e in row["eval"]] for row in rows]
        if all(a is not None for r in opt_acc for a in r):
            metrics["option_accuracy_matrix"] = opt_acc
        zero = metrics.get("zero_shot")
        summary: dict[str, Any] = {}
        for prefix, mat, z in (("", acc, zero and zero["accuracy"]),
                               ("option_", metrics.get("option_accuracy_matrix"),
                                zero and zero.get("option_accuracy"))):
            if not mat:
                continue
            if len(mat) == len(mat[0]):
                zs = z if z and all(v is not None for v in z) else None
                s = _metrics.summarize(mat, zs)
            else:  # MTL: one joint stage, only the final row exists
                s = {"average_accuracy": float(np.mean(mat[-1]))}
            summary.update({prefix + k: v for k, v in s.items()})
            # Label collapse in the final row (one answer > 80% of a task's predictions).
            summary[prefix + "collapsed_tasks"] = _metrics.collapsed_tasks(rows[-1]["eval"], prefix)
        metrics["summary"] = summary
        g = metrics.get("general_ability")
        if g is not None:
            after = self.general_lm_loss(params)
            metrics["general_ability"] = _metrics.general_ability_retention(g["lm_loss_before"], after)
        if c.checkpoint.export_hf:
            t = time.perf_counter()
            self.adapter.export(params, os.path.join(self.run_dir, "model"))
            from asvd_jax.cl._model_card import write_model_card

            write_model_card(os.path.join(self.run_dir, "model"), metrics, c)
            self._timed("export", time.perf_counter() - t)


def run(config: ExperimentConfig, *, run_dir: str | None = None, resume: bool = False,
        initial: dict | None = None, model: Any = None, tokenizer: Any = None,
        sequence: Any = None, method: Any = None) -> dict:
    """Run ``config`` end to end (or continue it with ``resume=True``); returns metrics.

    ``initial``: zero-shot / LM-loss results of the same initial model from another run with
    the same model, data and eval settings, reused instead of evaluated again.

    Research code can hand in its own objects instead of what the config builds:

    * ``model``, ``tokenizer``: an nnx model of family ``config.model.family`` (a built-in
      one, or one added with ``register_family``) and its tokenizer; ``config.model`` is then
      not loaded.
    * ``sequence``: an ``asvd_jax.data.TaskSequence`` (``data.tasks`` and the size caps of
      ``config.data`` still apply; ``data.suite`` and ``data.path`` are not read).
    * ``method``: an object with the ``asvd_jax.cl.Method`` protocol (it builds its own
      optimizer; ``config.method`` is not read, ``config.train`` still sets the batches).

    A resumed run must be given the same objects again.
    """
    runner = Runner(config, run_dir=run_dir, resume=resume, initial=initial, model=model,
                    tokenizer=tokenizer, sequence=sequence, method=method)
    try:
        metrics = runner.run()
    finally:
        trackers = getattr(runner, "trackers", None)
        if trackers is not None:  # event files complete even when the run failed
            trackers.close()
    release_freed_memory()  # the model and states of this run, before another in this process
    return metrics
