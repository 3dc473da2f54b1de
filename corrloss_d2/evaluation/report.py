"""Tables and figures from evaluated runs (the JSON files :class:`CorrelationEvaluator` writes).

Used by ``tools/plot_correlation.py`` and ``tools/compare_correlation.py``.
"""

import csv
import json
import math
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .correlation import RESULTS_FILE

__all__ = [
    "EvaluatedRun",
    "MASK_AP",
    "MEASURES",
    "measures",
    "FIGURES",
    "find_results",
    "load_run",
    "default_labels",
    "table_rows",
    "write_table",
    "write_figures",
]

# (key in the evaluator's metrics, column title); the table's columns in this order.
MEASURES = (
    ("ap", "AP"),
    ("ap_lower_bound", "AP lower bound"),
    ("ap_upper_bound", "AP upper bound"),
    ("class_level_rho", "class-level ρ"),
    ("image_level_rho", "image-level ρ"),
    ("br_recall@10", "BR recall@10"),
    ("br_recall@100", "BR recall@100"),
)
# COCO mask AP of a mask model's run (the last "segm/AP" of its metrics.json), shown after AP.
MASK_AP = ("mask_ap", "mask AP")


class EvaluatedRun(NamedTuple):
    """One model's evaluation: ``metrics`` as the evaluator reports them, ``per_class``
    [{"class", "rho", "num_true_positives"}], and the true positives' (P,) ``tp_scores``,
    ``tp_ious``, ``tp_classes``."""

    label: str
    path: Path
    metrics: Dict[str, float]
    per_class: List[Dict]
    tp_scores: np.ndarray
    tp_ious: np.ndarray
    tp_classes: np.ndarray


def find_results(path) -> Path:
    """``path`` itself if it is a file, else the one ``correlation_evaluation.json`` below it
    (a training output folder has it in ``inference/<dataset>/``)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(path.rglob(RESULTS_FILE))
    if len(found) != 1:
        raise FileNotFoundError(
            f"expected one {RESULTS_FILE} under {path}, found {len(found)}"
            + (
                f": {[str(f) for f in found]}; pass the one you mean"
                if found
                else "; evaluate the run with TEST.CORRELATION_EVAL.ENABLED True first"
            )
        )
    return found[0]


def _undefined_as_nan(value):
    return math.nan if value is None else value


def measures(runs: Sequence[EvaluatedRun]) -> Tuple[Tuple[str, str], ...]:
    """:data:`MEASURES`, with :data:`MASK_AP` after AP when some run has it."""
    if any(MASK_AP[0] in run.metrics for run in runs):
        return (MEASURES[0], MASK_AP, *MEASURES[1:])
    return MEASURES


def _final_mask_ap(run_folder: Path) -> Optional[float]:
    metrics_file = run_folder / "metrics.json"
    if not metrics_file.is_file():
        return None
    with open(metrics_file) as f:
        values = [r["segm/AP"] for r in map(json.loads, f) if "segm/AP" in r]
    return values[-1] if values else None


def load_run(path, label: str = None) -> EvaluatedRun:
    """The correlation evaluation of a run (its folder, or its results file); from a training
    folder of a mask model also its final mask AP (``metrics["mask_ap"]``)."""
    results_file = find_results(path)
    with open(results_file) as f:
        content = json.load(f)
    tps = content["true_positives"]
    metrics = {k: _undefined_as_nan(v) for k, v in content["metrics"].items()}
    mask_ap = _final_mask_ap(Path(path)) if Path(path).is_dir() else None
    if mask_ap is not None:
        metrics[MASK_AP[0]] = mask_ap
    return EvaluatedRun(
        label=label or Path(path).name,
        path=results_file,
        metrics=metrics,
        per_class=[{**p, "rho": _undefined_as_nan(p["rho"])} for p in content["per_class"]],
        tp_scores=np.asarray(tps["score"], dtype=np.float64),
        tp_ious=np.asarray(tps["iou"], dtype=np.float64),
        tp_classes=np.asarray(tps["class"], dtype=np.int64),
    )


def table_rows(runs: Sequence[EvaluatedRun]) -> List[List]:
    """[label, value per measure (:func:`measures`)] per run, as the evaluator reported them."""
    shown = measures(runs)
    return [[run.label] + [run.metrics.get(key, math.nan) for key, _ in shown] for run in runs]


def write_table(runs: Sequence[EvaluatedRun], output_dir) -> Dict[str, Path]:
    """``comparison.md`` (values rounded for reading) and ``comparison.csv`` (full precision)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    header = ["model"] + [title for _, title in measures(runs)]
    rows = table_rows(runs)
    markdown = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    markdown += ["| " + " | ".join([row[0]] + [f"{v:.3f}" for v in row[1:]]) + " |" for row in rows]
    paths = {"markdown": output_dir / "comparison.md", "csv": output_dir / "comparison.csv"}
    paths["markdown"].write_text("\n".join(markdown) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[row[0]] + [repr(float(v)) for v in row[1:]] for row in rows])
    return paths


def _density(runs, path):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False, sharey=True
    )
    for ax, run in zip(axes[0], runs):
        if len(run.tp_ious):
            ax.hist2d(
                run.tp_ious,
                run.tp_scores,
                bins=[np.linspace(0.5, 1, 26), np.linspace(0, 1, 26)],
                cmap="viridis",
                density=True,
            )
        ax.set_title(
            f"{run.label}\nclass-level ρ = {run.metrics['class_level_rho']:.3f}", fontsize=9
        )
        ax.set_xlabel("IoU with the matched ground truth")
    axes[0][0].set_ylabel("score")
    figure.suptitle("Score vs IoU of the true positives (density)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _class_rho(runs, path):
    import matplotlib.pyplot as plt

    classes = [p["class"] for p in runs[0].per_class]
    width = 0.8 / len(runs)
    figure, ax = plt.subplots(figsize=(max(5, 1.0 * len(classes) + 2), 3.8))
    for i, run in enumerate(runs):
        rhos = [p["rho"] for p in run.per_class]
        ax.bar(
            np.arange(len(classes)) + (i - (len(runs) - 1) / 2) * width,
            np.nan_to_num(rhos),
            width,
            label=run.label,
        )
    ax.set_xticks(np.arange(len(classes)), classes, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("Spearman ρ(score, IoU)")
    ax.set_title("Class-level correlation per class (true positives)", fontsize=10)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _ap_bounds(runs, path):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(max(4, 1.4 * len(runs) + 1.5), 3.8))
    for i, run in enumerate(runs):
        low, ap, high = (run.metrics[k] for k in ("ap_lower_bound", "ap", "ap_upper_bound"))
        # The permuted APs bound AP only at the matching threshold: COCO AP's greedy matching at
        # stricter IoUs can move it outside them (NMS-free detectors' duplicates), so the bar is
        # drawn between them and the dot wherever AP is.
        (line,) = ax.plot([i, i], [low, high], marker="_", markersize=16)
        ax.plot([i], [ap], "o", color=line.get_color())
        ax.annotate(f"{ap:.1f}", (i, ap), textcoords="offset points", xytext=(10, -3), fontsize=8)
    ax.set_xticks(range(len(runs)), [run.label for run in runs], rotation=15, ha="right")
    ax.set_xlim(-0.7, len(runs) - 0.3)
    ax.set_ylabel("COCO AP")
    ax.set_title(
        "AP (dot); bar: AP with TP scores sorted\nopposite to / in the order of IoU",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


FIGURES = {
    "score_vs_iou_density.png": _density,
    "class_level_rho.png": _class_rho,
    "ap_bounds.png": _ap_bounds,
}


def write_figures(
    runs: Sequence[EvaluatedRun], output_dir, progress: bool = True
) -> Dict[str, Path]:
    """The figures of :data:`FIGURES` as PNG files in ``output_dir``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, draw in tqdm(FIGURES.items(), desc="figures", disable=not progress):
        paths[name] = output_dir / name
        draw(runs, paths[name])
    return paths


def default_labels(paths: Sequence) -> List[str]:
    """Folder names, made unique."""
    names = [Path(p).name or str(p) for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({i})" for i, n in enumerate(names)]
