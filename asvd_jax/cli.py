"""The ``asvd-jax`` command.

    asvd-jax run CONFIG.yaml [--set train.lr=3e-5 ...] [--run-dir DIR] [--resume]
    asvd-jax demo [--set ...] [--out-dir runs/demo] [--methods asvd,seqft]
    asvd-jax report RUN_DIR [RUN_DIR ...]
    asvd-jax data [CONFIG.yaml] [--set data.order=2 ...]
    asvd-jax config [CONFIG.yaml] [--set ...]        (print the resolved config)

Bad input (a misspelt key, a missing file) prints one ``error:`` line and exits with 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("config", nargs="?", default=None, help="YAML file of overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set train.lr=3e-5 (repeatable)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asvd-jax", description="Continual full fine-tuning "
                                     "with adaptive-SVD orthogonal subspaces.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a configured task sequence")
    _common(p)
    p.add_argument("--run-dir", default=None, help="run directory (default: run.out_dir/run.name)")
    p.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    p = sub.add_parser("demo", help="this method and sequential fine-tuning on the offline suite")
    _common(p, config=False)
    p.add_argument("--out-dir", default=os.path.join("runs", "demo"))
    p.add_argument("--methods", default="asvd,seqft", help="comma-separated method names")
    p = sub.add_parser("report", help="rebuild the heatmap and summary of run directories")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--capacity-floor", type=float, default=0.1, metavar="FRACTION",
                   help="warn when a matrix's free rank (now or projected at the next task) is "
                        "below this fraction of its size (ASVD runs; default 0.1)")
    p = sub.add_parser("data", help="print the task sequence's sizes and class counts")
    _common(p)
    p = sub.add_parser("config", help="print the resolved config")
    _common(p)
    return parser


def comparison_table(metrics_list: list[dict]) -> str:
    """Markdown table of several runs' headline and option-scoring metrics."""
    def pct(x):
        return "n/a" if x is None or x != x else f"{100 * x:.1f}"

    lines = ["| run | method | AA | BWT | FWT | forgetting | AA (options) | BWT (options) | LM loss delta | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in metrics_list:
        s = m.get("summary") or {}
        g = m.get("general_ability") or {}
        delta = g.get("lm_loss_delta")
        minutes = (m.get("timing") or {}).get("total", float("nan")) / 60
        lines.append(f"| {m.get('name')} | {m.get('method')} | {pct(s.get('average_accuracy'))} | "
                     f"{pct(s.get('bwt'))} | {pct(s.get('fwt'))} | {pct(s.get('forgetting'))} | "
                     f"{pct(s.get('option_average_accuracy'))} | {pct(s.get('option_bwt'))} | "
                     f"{'n/a' if delta is None else f'{delta:+.3f}'} | {minutes:.1f} |")
    return "\n".join(lines)


def _run(args) -> int:
    from asvd_jax.cl import load_config, run

    config = load_config(args.config, args.overrides)
    metrics = run(config, run_dir=args.run_dir, resume=args.resume)
    print(comparison_table([metrics]))
    return 0


def _demo(args) -> int:
    from asvd_jax.cl import DEMO_OVERRIDES, load_config, run
    from asvd_jax.cl._config import apply_overrides

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = []
    start = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for name in methods:
        config = apply_overrides(load_config(None, []), DEMO_OVERRIDES)
        config = load_config(None, [*args.overrides, f"method.name={name}",
                                    f"run.out_dir={args.out_dir}", f"run.name={stamp}-{name}"],
                             base=config)
        print(f"== {name} ==", file=sys.stderr, flush=True)
        # Every method starts from the same model on the same data: evaluate it once.
        initial = {k: results[0][k] for k in ("zero_shot", "general_ability") if results and k in results[0]}
        results.append(run(config, initial=initial))
    print(comparison_table(results))
    print(f"\ntotal {time.perf_counter() - start:.0f} s; run directories under {args.out_dir}/")
    return 0


def _report(args) -> int:
    from asvd_jax.cl._report import load_metrics, summary_markdown, write_report

    all_metrics = []
    for d in args.run_dirs:
        m = load_metrics(d)
        write_report(d, m)
        all_metrics.append(m)
        if len(args.run_dirs) == 1:
            print(summary_markdown(m))
        from asvd_jax.analysis._capacity import write_capacity_report

        png, warnings = write_capacity_report(d, args.capacity_floor)
        if png:
            print(f"capacity heatmap: {png}")
        for line in warnings:
            print(line)
    if len(all_metrics) > 1:
        print(comparison_table(all_metrics))
    return 0


def _data(args) -> int:
    from asvd_jax.cl import load_config
    from asvd_jax.cl._sequence import load_sequence
    from asvd_jax.data.__main__ import describe

    config = load_config(args.config, args.overrides)
    print(describe(load_sequence(config.data)))
    return 0


def _config(args) -> int:
    from asvd_jax.cl import load_config
    from asvd_jax.cl._config import to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _run, "demo": _demo, "report": _report, "data": _data, "config": _config}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input and stopped runs end with one readable line, not a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
