#!/usr/bin/env python
"""Train a baseline and a Correlation Loss model with the same recipe, seed and iterations,
evaluate both, and print box AP and the correlation measures side by side (the demo's driver).

    python tools/compare_correlation.py                       # the demo: embedded "shapes" data
    python tools/compare_correlation.py --seeds 0 1 2 \
        --config-file configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml
    python tools/compare_correlation.py SOLVER.MAX_ITER 50    # KEY VALUE pairs go to every run

Each run is ``train_net.py --config-file CFG SEED s MODEL.CORR_LOSS.WEIGHT w OUTPUT_DIR
<output-dir>/seed<s>_lambda<w>`` (its console output in that folder's console.txt, detectron2's
log in log.txt). Figures and the table (tools/plot_correlation.py) go to
``<output-dir>/report``.
"""

import argparse
import os
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# fvcore scripts its focal loss at import; the demo's output should show the results, not that.
warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
from corrloss_d2.config import load_corrloss_config  # noqa: E402
from corrloss_d2.data import synthetic  # noqa: E402
from corrloss_d2.evaluation.report import load_run, measures, write_figures, write_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "CPU" / "retinanet_R_18_FPN_shapes_scratch.yaml"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        default=[0.0, 0.1],
        help="MODEL.CORR_LOSS.WEIGHT of each model (0 = baseline)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--output-dir", default="output/demo")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="trainings run at once, the CPU threads shared among them (default: "
        "as many as there are runs, at most one per CPU core)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {args.opts}")
    if not Path(args.config_file).is_file():
        parser.error(f"--config-file {args.config_file} does not exist")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return args


def prepare_embedded_data(config_file: str, opts) -> None:
    """Draws the embedded dataset once here, if the runs use it, rather than in every training
    process at once."""
    cfg = load_corrloss_config(config_file, opts)  # what train_net.py will read
    if set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST) & set(synthetic.split_names()):
        print("[compare] preparing the embedded dataset (drawn once, then cached) ...", flush=True)
        synthetic.ensure_shapes_dataset()


def model_name(weight: float) -> str:
    return "baseline (λ=0)" if weight == 0 else f"corr. loss (λ={weight:g})"


def train_and_evaluate(
    config_file: str, seed: int, weight: float, output_dir: Path, opts, threads: int
) -> Path:
    """Runs train_net.py with ``threads`` CPU threads (training ends with the evaluation);
    returns the run's folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(REPO / "train_net.py"),
        "--config-file",
        config_file,
        "SEED",
        str(seed),
        "MODEL.CORR_LOSS.WEIGHT",
        str(weight),
        "OUTPUT_DIR",
        str(output_dir),
        *opts,
    ]
    log_file = output_dir / "console.txt"  # detectron2 itself writes log.txt there
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log_file, "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if result.returncode != 0:
        tail = log_file.read_text().splitlines()[-25:]
        raise RuntimeError(
            f"training failed (exit {result.returncode}): {' '.join(command)}\n"
            + "\n".join(tail)
            + f"\nfull log: {log_file}"
        )
    return output_dir


def side_by_side(runs_per_weight) -> str:
    """Rows = measures, columns = models; several seeds give mean ± standard deviation."""
    header = ["measure"] + [model_name(w) for w in runs_per_weight]
    rows = []
    for key, title in measures([run for runs in runs_per_weight.values() for run in runs]):
        cells = [title]
        for runs in runs_per_weight.values():
            values = np.array([run.metrics.get(key, np.nan) for run in runs])
            cells.append(
                f"{values[0]:.3f}"
                if len(values) == 1
                else f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
            )
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header] + rows
    ]
    return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])


def main(argv=None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir).resolve()
    plan = [(seed, weight) for seed in args.seeds for weight in args.weights]
    cores = os.cpu_count() or 1
    # Small models on few cores: separate single-threaded trainings use the cores better than one
    # multi-threaded training after the other.
    jobs = min(args.jobs or cores, len(plan))
    threads = max(1, cores // jobs)
    print(
        f"[compare] {len(plan)} trainings, {jobs} at a time with {threads} CPU thread(s) each",
        flush=True,
    )
    started = time.time()
    prepare_embedded_data(args.config_file, args.opts)

    def train_one(seed_and_weight):
        seed, weight = seed_and_weight
        folder = output_dir / f"seed{seed}_lambda{weight:g}"
        print(
            f"[compare] training and evaluating {model_name(weight)}, seed {seed} "
            f"(console: {folder / 'console.txt'})",
            flush=True,
        )
        run_started = time.time()
        train_and_evaluate(args.config_file, seed, weight, folder, args.opts, threads)
        print(
            f"[compare]   {model_name(weight)}, seed {seed}: done in "
            f"{time.time() - run_started:.0f} s",
            flush=True,
        )
        label = model_name(weight) + (f", seed {seed}" if len(args.seeds) > 1 else "")
        return weight, load_run(folder, label)

    runs_per_weight = {w: [] for w in args.weights}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for weight, evaluated in pool.map(
            train_one, plan
        ):  # in plan order, whatever finishes first
            runs_per_weight[weight].append(evaluated)
    runs = [run for seed_runs in zip(*runs_per_weight.values()) for run in seed_runs]
    report_dir = output_dir / "report"
    written = {**write_table(runs, report_dir), **write_figures(runs, report_dir, progress=False)}
    seeds = (
        f"seed {args.seeds[0]}"
        if len(args.seeds) == 1
        else f"mean ± std over seeds {', '.join(map(str, args.seeds))}"
    )
    print(f"\nCOCO AP and score-IoU correlation on {runs[0].path.parent.name} ({seeds}):\n")
    print(side_by_side(runs_per_weight))
    print(f"\nTable and figures (total {time.time() - started:.0f} s):")
    for path in written.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
