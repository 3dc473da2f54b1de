"""The comparison report: its figures whatever the measured values, and its measures."""

import csv
import json
from pathlib import Path

import numpy as np

from corrloss_d2.evaluation.correlation import RESULTS_FILE
from corrloss_d2.evaluation.report import (
    FIGURES,
    MASK_AP,
    MEASURES,
    EvaluatedRun,
    load_run,
    measures,
    write_figures,
    write_table,
)


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


def test_a_mask_models_run_reports_its_mask_ap_after_ap(tmp_path):
    results = {
        "metrics": {"ap": 26.0, "class_level_rho": 0.4},
        "per_class": [],
        "true_positives": {"score": [], "iou": [], "class": []},
    }
    folders = {}
    for name, segm in (("boxes", None), ("masks", [10.0, 23.5])):
        folder = tmp_path / name
        (folder / "inference" / "val").mkdir(parents=True)
        (folder / "inference" / "val" / RESULTS_FILE).write_text(json.dumps(results))
        records = [{"iteration": 9, "total_loss": 1.0}]
        records += [{"iteration": 9, "bbox/AP": 26.0, "segm/AP": ap} for ap in segm or []]
        (folder / "metrics.json").write_text("\n".join(map(json.dumps, records)))
        folders[name] = load_run(folder)
    assert MASK_AP[0] not in folders["boxes"].metrics
    assert folders["masks"].metrics[MASK_AP[0]] == 23.5  # the final evaluation
    assert measures([folders["boxes"]]) == MEASURES
    assert measures(list(folders.values()))[:2] == (MEASURES[0], MASK_AP)
    rows = list(csv.reader(open(write_table(list(folders.values()), tmp_path)["csv"])))
    assert rows[0][:3] == ["model", "AP", "mask AP"]
    assert rows[1][2] == "nan" and float(rows[2][2]) == 23.5
