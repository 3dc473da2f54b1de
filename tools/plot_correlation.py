#!/usr/bin/env python
"""Figures and a table from one or more evaluated runs (CorrelationEvaluator's JSON files).

    python tools/plot_correlation.py output/demo/baseline output/demo/corr_loss \
        --labels baseline corr
    python tools/plot_correlation.py run_a/inference/shapes_val/correlation_evaluation.json ...

Each RUN is a training output folder (searched for its one correlation_evaluation.json) or the
file itself. Writes into --output-dir: score_vs_iou_density.png (true positives, one panel per
run), class_level_rho.png (per-class ρ bars), ap_bounds.png (AP with its lower/upper bounds),
comparison.md and comparison.csv (the evaluator's numbers).
"""

import argparse
import sys

from corrloss_d2.evaluation.report import default_labels, load_run, write_figures, write_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="evaluated run folders or JSON files"
    )
    parser.add_argument("--labels", nargs="+", help="one name per RUN (default: folder names)")
    parser.add_argument("--output-dir", default="output/correlation_report")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.runs):
        parser.error(f"--labels gives {len(args.labels)} names for {len(args.runs)} runs")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    labels = args.labels or default_labels(args.runs)
    runs = [load_run(path, label) for path, label in zip(args.runs, labels)]
    written = {**write_table(runs, args.output_dir), **write_figures(runs, args.output_dir)}
    print(written["markdown"].read_text(), end="")
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
