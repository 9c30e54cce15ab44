"""The model card (README.md) of a run's exported HF folder, in the Hub's format.

YAML front matter (``base_model``, ``tags``, ``library_name``, ``pipeline_tag``) that the Hub
reads into the model page's metadata, then Markdown: the base model, the task sequence, the
method and its rank settings (with the last rank plan's protected share per matrix type),
the accuracy matrix and the continual-learning metrics of the run.
"""

from __future__ import annotations

import math
import os
from typing import Any

from asvd_jax.models import find_family


def base_model(config: Any) -> str | None:
    """Hub id (or local path) of the model the run started from; None for a random init."""
    m = config.model
    family = find_family(m.family)
    packaged = dict(family.packaged) if family is not None else {}
    if m.source in packaged:  # the Hub id the shipped weights were made from
        return packaged[m.source]
    if m.source == "random":
        return None
    return m.path or None


def _pipeline(config: Any) -> str:
    family = find_family(config.model.family)
    return family.pipeline_tag if family is not None else "text-generation"


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}"


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def model_card(metrics: dict, config: Any) -> str:
    """README.md text for the exported model of a finished run."""
    c = config
    base = base_model(c)
    tags = ["asvd-jax", "continual-learning", c.method.name]
    if c.method.name == "asvd":
        tags.append("orthogonal-subspace-fine-tuning")
    front = ["---", "library_name: transformers",  # the export is the HF safetensors layout
             f"pipeline_tag: {_pipeline(c)}"]
    if base is not None and not os.path.isabs(base):  # a Hub id; a local path is no base_model
        front.append(f"base_model: {_yaml_str(base)}")
    front += ["tags:"] + [f"- {t}" for t in tags] + ["---", ""]

    tasks = metrics["tasks"]
    lines = [f"# {metrics.get('name', 'asvd-jax run')}", "",
             f"Continually fine-tuned with asvd_jax (method `{c.method.name}`) on "
             f"{len(tasks)} tasks in sequence.", "",
             "## Base model", "",
             f"- {base or f'randomly initialised {c.model.family} (no pretrained weights)'} "
             f"(family `{c.model.family}`, source `{c.model.source}`, dtype `{c.model.dtype}`)", "",
             "## Task sequence", "",
             f"Sequence `{metrics.get('sequence')}` (suite `{c.data.suite}`, order {c.data.order}):", ""]
    lines += [f"{i + 1}. {t}" for i, t in enumerate(tasks)] + [""]

    lines += ["## Method and ranks", "", f"- method: `{c.method.name}`"]
    if c.method.name == "asvd":
        from asvd_jax.cl._config import policy_dict

        p = c.method
        (policy, fields), = policy_dict(p.rank_policy).items()
        params = ("task t protects (t-1)/T" if policy == "progressive" and not fields
                  else ", ".join(f"{k} {v}" for k, v in fields.items()))
        lines += [f"- rank policy: `{policy}` ({params}), projection `{p.projection}`, "
                  f"statistics over {p.stats_examples} examples of the previous task"]
        last = next((r["record"]["rank_summary"] for r in reversed(metrics["rows"])
                     if (r.get("record") or {}).get("rank_summary")), None)
        if last:
            lines += ["", "Protected share of each matrix type at the last task (k / min dim):", "",
                      "| matrix type | min | mean | max |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['min']:.3f} | {v['mean']:.3f} | {v['max']:.3f} |"
                      for k, v in last.items()]
            lines.append("")
    from asvd_jax.analysis import ewc_penalty_lambda, unread_method_fields
    from asvd_jax.cl._config import to_dict

    method = to_dict(c.method)
    unread = unread_method_fields(method)  # the fields this method ignores: no line
    if (lam := ewc_penalty_lambda(method)) is not None:
        lines.append(f"- EWC penalty, lambda {lam:g}")
    if "lora_rank" not in unread:
        lines.append(f"- adapter rank {c.method.lora_rank}, alpha {c.method.lora_alpha}")
    t = c.train
    lines += [f"- training: lr {t.lr} ({t.schedule}), batch {t.batch_size} x {t.grad_accum}, "
              f"{t.epochs} epoch(s), seed {t.seed}", ""]

    lines += ["## Results", "", f"Scoring: {metrics.get('protocol')}; split `{c.eval.split}`.", ""]
    acc = metrics.get("accuracy_matrix") or []
    if acc:
        lines += ["Accuracy matrix (%; row: after training on, column: evaluated on):", "",
                  "| after \\ on | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        lines += [f"| {row['stage']} | " + " | ".join(_pct(a) for a in r) + " |"
                  for row, r in zip(metrics["rows"], acc)]
        lines.append("")
    s = metrics.get("summary") or {}
    if s:
        lines += ["| metric | value |", "|---|---|"]
        for key, label in (("average_accuracy", "average accuracy (%)"), ("bwt", "BWT (pts)"),
                           ("fwt", "FWT (pts)"), ("forgetting", "forgetting (pts)")):
            if key in s:
                lines.append(f"| {label} | {_pct(s[key])} |")
        g = metrics.get("general_ability") or {}
        if "lm_loss_after" in g:
            lines.append(f"| general-ability LM loss (nats/token) | {g['lm_loss_before']:.3f} -> "
                         f"{g['lm_loss_after']:.3f} |")
        lines.append("")
    lines += ["Produced by `asvd-jax run`; the run directory's `config.yaml` reproduces it.", ""]
    return "\n".join(front + lines)


def write_model_card(folder: str, metrics: dict, config: Any) -> str:
    path = os.path.join(folder, "README.md")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(model_card(metrics, config))
    os.replace(tmp, path)
    return path
