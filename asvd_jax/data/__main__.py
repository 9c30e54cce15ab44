"""``python -m asvd_jax.data``: build (or load) a task sequence and print its sizes.

    python -m asvd_jax.data [--suite offline] [--order 1] [--per-class-train 40 ...] [--data-dir DIR]
    python -m asvd_jax.data --suite standard4      (also offline_disjoint, long; per-class
                                                     sizes default to the suite's own)
    python -m asvd_jax.data --custom my_sequence.yaml
    python -m asvd_jax.data --olora ROOT --order 4      python -m asvd_jax.data --trace ROOT
"""

from __future__ import annotations

import argparse
import sys
import time

from asvd_jax.data._disjoint import disjoint_sequence
from asvd_jax.data._paper_suites import PAPER_SUITES, PaperSuiteConfig, paper_sequence
from asvd_jax.data._suite import SuiteConfig, offline_sequence
from asvd_jax.data._tasks import describe

SETTINGS = ("per_class_train", "per_class_dev", "per_class_test", "seed", "max_chars")
BUILT_IN = ("offline", "offline_disjoint", *PAPER_SUITES)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asvd_jax.data", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--suite", choices=BUILT_IN, default=None,
                        help="a built-in offline sequence (default offline)")
    source.add_argument("--custom", metavar="YAML", help="a custom sequence config")
    source.add_argument("--olora", metavar="ROOT", help="a local O-LoRA CL_Benchmark folder")
    source.add_argument("--trace", metavar="ROOT", help="a local TRACE benchmark folder")
    parser.add_argument("--order", type=int, default=1,
                        help="task order (offline, offline_disjoint, standard4 1-3; long 1; O-LoRA 1-6)")
    parser.add_argument("--data-dir", default=None, help="cache folder of the offline suites")
    for field in SETTINGS:
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=None,
                            help=f"default {getattr(SuiteConfig(), field)} (offline, offline_disjoint), "
                                 f"{getattr(PaperSuiteConfig(), field)} (standard4, long)")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: one line, no traceback
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


def _main(args) -> int:
    start = time.perf_counter()
    if args.custom:
        from asvd_jax.data._custom import load_custom_sequence

        sequence = load_custom_sequence(args.custom)
    elif args.olora:
        from asvd_jax.data._benchmarks import load_olora_sequence

        sequence = load_olora_sequence(args.olora, args.order)
    elif args.trace:
        from asvd_jax.data._benchmarks import load_trace_sequence

        sequence = load_trace_sequence(args.trace)
    else:
        defaults = PaperSuiteConfig() if args.suite in PAPER_SUITES else SuiteConfig()
        settings = {f: getattr(defaults, f) if getattr(args, f) is None else getattr(args, f) for f in SETTINGS}
        if args.suite in PAPER_SUITES:
            sequence = paper_sequence(args.suite, args.order, args.data_dir, **settings)
        elif args.suite == "offline_disjoint":
            sequence = disjoint_sequence(args.order, args.data_dir, **settings)
        else:
            sequence = offline_sequence(args.order, args.data_dir, **settings)
    print(describe(sequence))
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
