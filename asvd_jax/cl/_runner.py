"""The continual-learning runner: one ``run(config)`` for every method and model family.

For each stage (a task; for MTL one joint stage over all tasks):

1. ``method.start_task(ctx)``: ASVD collects statistics on the previous task's data, plans
   ranks and computes bases from the current weights; baselines set up their factors.
2. Training: the run's one jitted step over deterministic micro-batches, gradient accumulation
   through ``asvd_jax.accumulate_gradients``; a non-finite loss stops the run (the last checkpoint stays).
   One optax chain serves the whole run: at each boundary its state is re-initialised (fresh
   AdamW moments and schedule, as a per-task chain) and ASVD's bases are swapped in with
   ``aj.set_bases``, so the step retraces only when shapes change (new ranks).
3. ``method.finish_task``: the new params and a record (rank plan, leakage, Fisher summary).
4. Evaluation of every task of the sequence -> one row of the accuracy matrix.
5. A task-end checkpoint (params, carry state, AdamW moments when carried) and metrics.json,
   both committed atomically, so ``resume=True`` continues a killed run exactly.

After the sequence: metrics (AA, BWT, FWT, forgetting), general-ability LM loss, heatmap,
summary.md and the model in the HF safetensors layout.

This module orchestrates; a stage's set-up and end are ``_stage``, its loop ``_loop``,
task-end checkpoints and the resume point ``_resume``, evaluation ``_evaluate``.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any

import jax

from asvd_jax.cl import _evaluate, _resume, _stage
from asvd_jax.cl._checkpoint import Checkpointer, write_json_atomic
from asvd_jax.cl._config import ExperimentConfig, to_dict, to_yaml, validate
from asvd_jax.cl._early_stop import hold_out
from asvd_jax.cl._errors import RunError
from asvd_jax.cl._method import TaskContext
from asvd_jax.cl._progress import Progress
from asvd_jax.cl._stage import release_freed_memory
from asvd_jax.cl._sequence import check_eval_split, load_sequence, statistics_items
from asvd_jax.cl._status import recording_end
from asvd_jax.cl._train import check_freeze, inner_optimizer, make_train_step, with_accumulation


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
        self.opt = None  # the run's one optax chain and jitted step (_train_step)
        self.step_fn = None

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
            from asvd_jax.cl._config_load import apply_overrides

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
        from asvd_jax.cl._families import build_adapter, select_run_targets

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
        from asvd_jax.cl._option_pool import option_pool, training_tasks

        try:
            self.option_pool = option_pool(c.eval.option_pool, self.tasks, self.adapter)
            # What training and early stopping see (train.option_pool); evaluation: self.tasks.
            self.train_tasks = training_tasks(c.train.option_pool, self.tasks, self.adapter,
                                              joint=c.method.name == "mtl")
        except ValueError as e:
            raise RunError(str(e)) from None
        self.params0 = shard_tree(self.adapter.params, self.mesh)
        self.targets = select_run_targets(c.method, self.params0, default_targets)
        self._timed("model", time.perf_counter() - t)
        self.method = self._build_method()
        if c.method.name == "mtl":
            joint = [(task, ex) for task in self.train_tasks for ex in task.train]
            self.stages = [("joint", joint)]
        else:
            self.stages = [(task.name, [(task, ex) for ex in task.train]) for task in self.train_tasks]
        self.ckpt = Checkpointer(self.run_dir, keep_tasks=c.checkpoint.keep_tasks,
                                 keep_steps=max(c.checkpoint.keep_steps, 1))
        from asvd_jax.cl._trackers import Trackers

        self.trackers = Trackers(c.run.trackers, self.run_dir, to_dict(c))

    def _build_method(self):
        from asvd_jax.cl._methods import build_method

        if self._given["method"] is not None:
            return self._given["method"]

        def inner(ctx: TaskContext):
            # One chain for every task: the schedule's length is set per task in the state.
            del ctx
            return inner_optimizer(self.config.train)

        return build_method(self.config.method, inner)

    def _train_step(self, ctx: TaskContext):
        """The run's one optax chain and jitted step, built at the first stage this process
        trains (``method.optimizer`` is asked once per run)."""
        if self.opt is None:
            freeze = self.config.train.freeze
            check_freeze(freeze, ctx.params)
            self.opt = with_accumulation(self.method.optimizer(ctx), self.config.train.grad_accum)
            self.step_fn = make_train_step(self.adapter, self.method, self.opt, freeze)
        return self.opt, self.step_fn

    # ------------------------------------------------------------------------- batches
    def _device_batch(self, items):
        from asvd_jax.cl._mesh import shard_batch

        return shard_batch(self.adapter.train_batch(items), self.mesh)

    def _method_batches(self, stage: int, stream):
        """A stage's training batches as the method sees them (``TaskContext.current_batches``:
        EWC's Fisher), each padded to the stage's largest batch shapes when the adapter can
        (``widen_batch``; same loss): one compiled shape per stage for a program jitted over
        them, shared by every stage of the same shapes. Not to the run's largest: a short
        task would then pay a long task's width (measured: docs/baselines.md)."""
        from asvd_jax.cl._compact import largest_shapes
        from asvd_jax.cl._mesh import shard_batch

        shapes = largest_shapes(self.adapter, [self.stages[stage]], self.config.train.batch_size)
        for chunk in stream.chunks():
            batch = self.adapter.train_batch(chunk)
            if shapes:
                batch = self.adapter.widen_batch(batch, shapes)
            yield shard_batch(batch, self.mesh)

    def _stats_batches(self, stage: int):
        """Batches of the previous stage's training data for rank statistics (with a bar)."""
        c = self.config
        task = self.train_tasks[stage - 1]  # the batches as the previous stage trained on them
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
        return _evaluate.evaluate_all(self, params, label)

    def general_lm_loss(self, params) -> float | None:
        return _evaluate.general_lm_loss(self, params)

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
        try:
            return self._run()
        finally:  # event files complete (and closed) however the run ends
            trackers = getattr(self, "trackers", None)
            if trackers is not None:
                trackers.close()

    def _run(self) -> dict:
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
        params, start_stage, step_meta, moments = _resume.resume_point(self)
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
            _evaluate.finish_run(self, params, metrics)
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
        return _stage.run_stage(self, stage, params, metrics, step_meta, moments)


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
    metrics = runner.run()  # closes its trackers however it ends
    release_freed_memory()  # the model and states of this run, before another in this process
    return metrics
