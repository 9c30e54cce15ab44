"""The ``asvd-jax`` command.

    asvd-jax run CONFIG.yaml [--set train.lr=3e-5 ...] [--run-dir DIR] [--resume] [--seeds 0,1,2]
    asvd-jax demo [--set ...] [--out-dir runs/demo] [--methods asvd,seqft]
    asvd-jax report RUN_DIR [RUN_DIR ...] [--write] [--format csv] [--out TABLE.md|.csv]
    asvd-jax data [CONFIG.yaml] [--suite standard4 | --custom SEQUENCE.yaml] [--set data.order=2 ...]
    asvd-jax config [CONFIG.yaml] [--set ...]        (the resolved config, every field documented)

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
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="one run per seed in RUN_DIR/seed<k> (same as --set run.seeds=[0,1,2])")
    p = sub.add_parser("demo", help="this method and sequential fine-tuning where sequential "
                       "fine-tuning forgets (MiniLM, disjoint-label sequence, one seed)")
    _common(p, config=False)
    p.add_argument("--out-dir", default=os.path.join("runs", "demo"))
    p.add_argument("--methods", default="asvd,seqft", help="comma-separated method names")
    p = sub.add_parser("report", help="summary of one run, or a comparison table of several "
                       "(finished or not); reads only, unless --write")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--write", action="store_true",
                   help="also (re)write summary.md and the heatmaps inside each run directory")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                   help="format of the comparison table (default markdown)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="save the comparison table to FILE (.csv: CSV) instead of printing it")
    p.add_argument("--capacity-floor", type=float, default=0.1, metavar="FRACTION",
                   help="warn when a matrix's free rank (now or projected at the next task) is "
                        "below this fraction of its size (ASVD runs; default 0.1); the heatmap "
                         "capacity.png is drawn with --write")
    p = sub.add_parser("data", help="print the task sequence's sizes and class counts")
    _common(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--suite", metavar="NAME", default=None,
                        help="a built-in sequence: offline, offline_disjoint, standard4, long, ... "
                             "(= --set data.suite=NAME)")
    source.add_argument("--custom", metavar="YAML", default=None,
                        help="a custom sequence YAML (= --set data.suite=custom --set data.path=YAML)")
    p = sub.add_parser("config", help="print the resolved config, each field with its documentation")
    _common(p)
    return parser


def comparison_table(metrics_list: list[dict]) -> str:
    """Markdown table of several runs' headline and option-scoring metrics (partial runs marked)."""
    from asvd_jax.cl import comparison_rows, markdown_table

    return markdown_table(comparison_rows(metrics_list))


def _run(args) -> int:
    from asvd_jax.cl import load_config, run

    seeds = [f"run.seeds=[{args.seeds}]"] if args.seeds else []
    config = load_config(args.config, [*args.overrides, *seeds])
    if config.run.seeds:
        from asvd_jax.cl import comparison_output, run_seeds, seed_dir, seeds_parent

        parent = seeds_parent(config, args.run_dir)
        results = run_seeds(config, run_dir=parent, resume=args.resume,
                            log=lambda s: print(s, file=sys.stderr, flush=True))
        dirs = [seed_dir(parent, k) for k in config.run.seeds]
        print(comparison_output(dirs, results, "markdown"), end="")  # as `asvd-jax report` prints it
        return 0
    metrics = run(config, run_dir=args.run_dir, resume=args.resume)
    print(comparison_table([metrics]))
    return 0


def _demo(args) -> int:
    from asvd_jax.cl import DEMO_OVERRIDES, apply_overrides, load_config, run

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = []
    start = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dirs = []
    for name in methods:
        config = apply_overrides(load_config(None, []), DEMO_OVERRIDES)
        config = load_config(None, [*args.overrides, f"method.name={name}",
                                    f"run.out_dir={args.out_dir}", f"run.name={stamp}-{name}"],
                             base=config)
        print(f"== {name} ==", file=sys.stderr, flush=True)
        # Every method starts from the same model on the same data: evaluate it once.
        initial = {k: results[0][k] for k in ("zero_shot", "general_ability") if results and k in results[0]}
        results.append(run(config, initial=initial))
        run_dirs.append(os.path.join(config.run.out_dir, config.run.name))
    # The same tables as `asvd-jax report` on these run directories (one seed per group and a
    # SeqFT run: the paired interval over test examples is the one to read).
    from asvd_jax.cl import comparison_output

    print(comparison_output(run_dirs, results, "markdown"), end="")
    print(f"\ntotal {time.perf_counter() - start:.0f} s; run directories under {args.out_dir}/")
    return 0


def _report(args) -> int:
    from asvd_jax.analysis import (
        capacity_warnings,
        expand_run_dirs,
        load_capacity,
        write_capacity_report,
    )
    from asvd_jax.cl import (
        comparison_output,
        load_metrics,
        summary_markdown,
        write_report,
        write_text_atomic,
    )

    run_dirs = expand_run_dirs(args.run_dirs)  # a multi-seed parent stands for its seed<k>/
    all_metrics = [load_metrics(d) for d in run_dirs]  # every directory read before any output
    if args.write:
        for d, m in zip(run_dirs, all_metrics):
            write_report(d, m)
            png, _ = write_capacity_report(d, args.capacity_floor)
            if png:
                print(f"capacity heatmap: {png}", file=sys.stderr)
    for d in run_dirs:  # free capacity running out, now or at the next task (ASVD runs)
        for line in capacity_warnings(load_capacity(d), args.capacity_floor):
            print(f"{d}: {line}" if len(run_dirs) > 1 else line)
    fmt = "csv" if args.out and args.out.lower().endswith(".csv") else args.format
    if len(all_metrics) == 1 and not args.out and fmt == "markdown":
        print(summary_markdown(all_metrics[0]))
        return 0
    text = comparison_output(run_dirs, all_metrics, fmt)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(text, end="")
    return 0


def _data(args) -> int:
    from asvd_jax.cl import load_config, load_sequence
    from asvd_jax.data import describe

    extra = ["data.suite=custom", f"data.path={args.custom}"] if args.custom else []
    if args.suite:
        extra = [f"data.suite={args.suite}"]
    config = load_config(args.config, [*extra, *args.overrides])
    print(describe(load_sequence(config.data)))
    return 0


def _config(args) -> int:
    from asvd_jax.cl import documented_yaml, load_config

    print(documented_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _run, "demo": _demo, "report": _report, "data": _data, "config": _config}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input and stopped runs end with one readable line, not a traceback.
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, always
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
