"""The comparison report's figures, whatever the measured values."""

from pathlib import Path

import numpy as np

from corrloss_d2.evaluation.report import FIGURES, EvaluatedRun, write_figures


def run(label, ap, low, high):
    rng = np.random.default_rng(0)
    return EvaluatedRun(
        label=label,
        path=Path(label),
        metrics={
            "ap": ap,
            "ap_lower_bound": low,
            "ap_upper_bound": high,
            "image_level_rho": 0.4,
            "class_level_rho": 0.45,
        },
        per_class=[{"class": "a", "rho": 0.4, "num_true_positives": 30}],
        tp_scores=rng.random(30),
        tp_ious=0.5 + 0.5 * rng.random(30),
        tp_classes=np.zeros(30, dtype=np.int64),
    )


def test_figures_are_written_when_ap_lies_outside_its_permutation_bounds(tmp_path):
    """COCO AP can fall below the AP of the worst permutation (seen with CorrDINO on the demo's
    data: 21.88 against 21.98): the figure draws it instead of failing."""
    runs = [run("baseline", 21.88, 21.98, 32.33), run("corr", 19.56, 20.68, 29.74)]
    paths = write_figures(runs, tmp_path, progress=False)
    assert set(paths) == set(FIGURES)
    assert all(p.stat().st_size > 0 for p in paths.values())
