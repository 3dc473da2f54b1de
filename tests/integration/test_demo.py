"""The demo's path, shortened: tools/compare_correlation.py trains baseline and Correlation Loss
on the embedded dataset (a few iterations, a small held-out subset registered from the
environment), and tools/plot_correlation.py; their tables hold the evaluator's numbers."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from corrloss_d2.data.datasets import COCO_DATASETS_ENV
from corrloss_d2.evaluation.report import MEASURES
from tests.tiny import shapes_heads

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A briefly trained model scores near its prior (0.01): a low threshold and few candidates per
# level keep it returning detections, quickly.
SHORT = [
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATASETS.TEST",
    "('shapes_val_head',)",
    "MODEL.RETINANET.SCORE_THRESH_TEST",
    "0.005",
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
    "100",
]


def run_tool(script, *args, env):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", script), *args],
        capture_output=True,
        text=True,
        timeout=900,  # a hang guard: 2 runs of 4 iterations, under 2 min on 2 busy cores
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's driver on the heads of the embedded dataset's splits: drawn by its generator
    with the splits' seeds, so they are the first images of shapes_train / shapes_val (prefix
    stable), without drawing the 2100 images of the whole dataset."""
    folder = tmp_path_factory.mktemp("demo")
    env = {
        **os.environ,
        COCO_DATASETS_ENV: shapes_heads(folder / "shapes", {"train": 16, "val": 12}),
    }
    output = run_tool(
        "compare_correlation.py",
        "--output-dir",
        str(folder / "out"),
        *SHORT,
        "DATASETS.TRAIN",
        "('shapes_train_head',)",
        env=env,
    )
    return folder / "out", output, env


def evaluator_metrics(run_folder):
    with open(run_folder / "inference" / "shapes_val_head" / "correlation_evaluation.json") as f:
        return json.load(f)["metrics"]


def test_demo_prints_both_models_side_by_side_and_writes_the_report(demo):
    out, output, _ = demo
    assert "baseline (λ=0)" in output and "corr. loss (λ=0.1)" in output
    for _, title in MEASURES:
        assert title in output
    report = out / "report"
    for name in (
        "score_vs_iou_density.png",
        "class_level_rho.png",
        "ap_bounds.png",
        "comparison.md",
        "comparison.csv",
    ):
        assert (report / name).stat().st_size > 0 and str(report / name) in output
    with open(report / "comparison.csv") as f:
        rows = list(csv.reader(f))
    for row, run in zip(rows[1:], ("seed0_lambda0", "seed0_lambda0.1")):
        metrics = evaluator_metrics(out / run)
        for (key, _), value in zip(MEASURES, row[1:]):
            expected = metrics[key] if metrics[key] is not None else math.nan
            assert float(value) == pytest.approx(expected, nan_ok=True)


def test_correlation_measures_reach_metrics_json_and_ap_equals_box_ap(demo):
    out, _, _ = demo
    for run in ("seed0_lambda0", "seed0_lambda0.1"):
        final = [json.loads(line) for line in open(out / run / "metrics.json")][-1]
        assert final["correlation/ap"] == pytest.approx(final["bbox/AP"], abs=1e-6)
        assert set(f"correlation/{key}" for key, _ in MEASURES) <= set(final)


def test_plot_tool_on_evaluated_runs(demo, tmp_path):
    out, _, env = demo
    output = run_tool(
        "plot_correlation.py",
        str(out / "seed0_lambda0"),
        str(out / "seed0_lambda0.1"),
        "--labels",
        "base",
        "corr",
        "--output-dir",
        str(tmp_path),
        env=env,
    )
    assert "| base |" in output and "| corr |" in output
    for name in ("score_vs_iou_density.png", "class_level_rho.png", "ap_bounds.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
