"""Correlation Loss as a module of a detector: the term ``λ·(1 − ρ)`` over the positives its
assigner selected (:class:`CorrelationSamples`), with ρ logged to the event storage."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from detectron2.config import configurable
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import nn

from ..config import GROUP_REDUCTIONS, GROUPINGS
from ..errors import ConfigError
from ..losses import correlation_coefficients

__all__ = ["CorrelationLoss", "CorrelationSamples", "matched_box_iou", "rho_span"]

IOU_FLOOR = 1e-6  # the paper clamps IoUs here so that a missed box is still a valid sample


@torch.no_grad()
def matched_box_iou(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """IoU of ``pred_boxes[i]`` with ``gt_boxes[i]``.

    Args:
        pred_boxes, gt_boxes: (P, 4) boxes in XYXY. Inverted boxes (x2 < x1), which early
            predictions of point-based heads can produce, count as empty.
    Returns:
        (P,) float32 (or wider) IoUs in ``[1e-6, 1]``, detached.
    """
    dtype = torch.promote_types(pred_boxes.dtype, torch.float32)
    pred, gt = pred_boxes.to(dtype), gt_boxes.to(dtype)
    pred_area = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    gt_area = (gt[:, 2] - gt[:, 0]).clamp(min=0) * (gt[:, 3] - gt[:, 1]).clamp(min=0)
    top_left = torch.max(pred[:, :2], gt[:, :2])
    bottom_right = torch.min(pred[:, 2:], gt[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
    union = pred_area + gt_area - inter
    iou = torch.where(union > 0, inter / union.clamp(min=torch.finfo(dtype).tiny), 0.0)
    return iou.clamp(min=IOU_FLOOR, max=1.0)


def _describe(value) -> str:
    """A tensor's dtype and shape, else the type of what came instead, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


@dataclass(frozen=True)
class CorrelationSamples:
    """The P positives (P ≥ 0) that one correlation term correlates, whatever the detector.

    scores: (P,) float32 probability of each positive's ground-truth class; carries the gradient.
        :meth:`from_logits` computes it for a sigmoid classifier; a softmax classifier (YOLACT)
        gives its probabilities.
    ious: (P,) floating IoU of each positive's predicted box with its ground-truth box, in
        ``[1e-6, 1]`` (:func:`matched_box_iou`); detached, a constant target.
    image_index: (P,) integer image of each positive in this process's batch, or None.
    level_index: (P,) integer FPN level of each positive, or None (a query-based detector's
        queries have none).

    Which of the two indices a :class:`CorrelationLoss` needs depends on its grouping.
    """

    scores: torch.Tensor
    ious: torch.Tensor
    image_index: Optional[torch.Tensor] = None
    level_index: Optional[torch.Tensor] = None

    def __post_init__(self):
        scores = self.scores
        if not (isinstance(scores, torch.Tensor) and scores.dim() == 1):
            raise ValueError(f"CorrelationSamples.scores must be (P,), got {_describe(scores)}")
        if scores.dtype != torch.float32:  # ρ's moments lose too much in half precision
            raise ValueError(
                f"CorrelationSamples.scores must be float32, got {_describe(scores)}; "
                "CorrelationSamples.from_logits computes them so, also under autocast"
            )
        fields = (
            ("ious", self.ious, True, True),
            ("image_index", self.image_index, False, False),
            ("level_index", self.level_index, False, False),
        )
        for name, value, floating, required in fields:
            if value is None and not required:
                continue
            if not (
                isinstance(value, torch.Tensor)
                and value.shape == scores.shape
                and value.is_floating_point() == floating
            ):
                raise ValueError(
                    f"CorrelationSamples.{name} must be "
                    f"{'a floating-point' if floating else 'an integer'} tensor of the shape of "
                    f"scores {tuple(scores.shape)}, got {_describe(value)}"
                )

    @classmethod
    def from_logits(
        cls,
        gt_class_logits: torch.Tensor,
        ious: torch.Tensor,
        *,
        image_index: Optional[torch.Tensor] = None,
        level_index: Optional[torch.Tensor] = None,
    ) -> "CorrelationSamples":
        """The samples of a sigmoid classifier: ``scores = sigmoid(gt_class_logits)`` computed in
        float32, also under autocast.

        Args:
            gt_class_logits: (P,) logit of each positive's ground-truth class (any float dtype).
            ious, image_index, level_index: as the fields of the same names.
        """
        return cls(torch.sigmoid(gt_class_logits.float()), ious, image_index, level_index)


def rho_span(images_per_rho: int, images_per_batch: int, world_size: int) -> Tuple[int, int]:
    """How one ρ spans ``images_per_rho`` images when ``world_size`` processes share batches of
    ``images_per_batch``: ``(images per group within a process, processes pooled)``; (0, 1) is
    each process's own batch. ConfigError when the numbers do not divide."""
    if images_per_rho == 0:
        return 0, 1
    per_process = images_per_batch // world_size
    if per_process == 0:
        raise ConfigError(
            f"cfg.SOLVER.IMS_PER_BATCH = {images_per_batch} gives no image to each of the "
            f"{world_size} processes: make it a multiple of {world_size}"
        )
    if images_per_rho < per_process and per_process % images_per_rho == 0:
        return images_per_rho, 1
    if images_per_rho % per_process == 0 and world_size % (images_per_rho // per_process) == 0:
        return 0, images_per_rho // per_process
    raise ConfigError(
        f"cfg.MODEL.CORR_LOSS.IMAGES_PER_RHO = {images_per_rho} does not fit "
        f"SOLVER.IMS_PER_BATCH = {images_per_batch} over {world_size} processes "
        f"({per_process} images each): it must divide {per_process}, or be {per_process} times "
        f"a divisor of {world_size}; 0 gives each process's batch its own ρ"
    )


def _pooling_group(processes: int):
    """This process's group among the blocks of ``processes`` consecutive ranks (every process
    creates every group, as torch.distributed requires); None for one process."""
    if processes == 1:
        return None
    mine = None
    for start in range(0, comm.get_world_size(), processes):
        group = dist.new_group(list(range(start, start + processes)))
        if start <= comm.get_rank() < start + processes:
            mine = group
    return mine


class CorrelationLoss(nn.Module):
    """Correlation Loss ``λ·(1 − ρ(s, u))`` over a detector's positives, with logging; a loss
    module built from MODEL.CORR_LOSS (the math is :func:`corrloss_d2.losses.correlation_loss`).

    Any detector can call it with the positives its assigner selected::

        correlation_loss = CorrelationLoss(cfg)   # or CorrelationLoss(weight=0.1, ...)
        ious = matched_box_iou(pred_boxes, gt_boxes)
        samples = CorrelationSamples.from_logits(gt_class_logits, ious, image_index=image_index)
        losses.update(correlation_loss(samples))

    In training it records in the event storage (TensorBoard, metrics.json): ``corr/rho`` (mean ρ
    over the valid groups, measured even when ``weight`` is 0), ``corr/num_pos`` and
    ``corr/valid_groups``.
    """

    @configurable
    def __init__(
        self,
        *,
        weight: float,
        kind: str = "spearman",
        rank_strength: float = 1.0,
        group_by: str = "batch",
        group_reduction: str = "mean",
        min_positives: int = 2,
        gather_across_processes: bool = False,
        images_per_group: int = 0,
        process_group: Optional[object] = None,
        loss_name: str = "loss_corr",
        metric_prefix: str = "corr/",
    ):
        """
        Args:
            weight: λ; 0 adds no loss term (ρ is still logged).
            kind: "pearson", "concordance" or "spearman".
            rank_strength: soft-rank strength for "spearman" (see corrloss_d2.losses.soft_rank).
            group_by: "batch", "level" or "image": which index of the samples splits them into
                groups, each with its own ρ (see :meth:`group_keys`).
            group_reduction: "mean" (λ·(1 − mean ρ)) or "sum" (λ·Σ (1 − ρ), YOLACT's released
                per-image terms).
            min_positives: groups with fewer positives are skipped.
            gather_across_processes: pool positives of all processes first.
            images_per_group: > 0: each ρ spans this many consecutive images of the process's
                batch (``image_index // images_per_group``); "batch" and "level" grouping only.
            process_group: pool positives within this torch.distributed group first (built by
                ``from_config`` from MODEL.CORR_LOSS.IMAGES_PER_RHO); "batch" and "level" grouping
                only.
            loss_name, metric_prefix: names in the loss dict and the event storage (a detector
                with several calls, e.g. one per stage, gives each its own).
        """
        super().__init__()
        if group_by not in GROUPINGS:
            raise ValueError(f"group_by must be one of {GROUPINGS}, got {group_by!r}")
        if group_reduction not in GROUP_REDUCTIONS:
            raise ValueError(
                f"group_reduction must be one of {GROUP_REDUCTIONS}, got {group_reduction!r}"
            )
        if group_by == "image" and (images_per_group or process_group is not None):
            raise ValueError(
                "group_by='image' gives each image its own ρ: images_per_group and process_group "
                "(one ρ over several images) need group_by 'batch' or 'level'"
            )
        self.weight = float(weight)
        self.kind = kind
        self.rank_strength = float(rank_strength)
        self.group_by = group_by
        self.group_reduction = group_reduction
        self.min_positives = int(min_positives)
        self.gather_across_processes = bool(gather_across_processes)
        self.images_per_group = int(images_per_group)
        self.process_group = process_group
        self.loss_name = loss_name
        self.metric_prefix = metric_prefix

    @classmethod
    def from_config(
        cls,
        cfg,
        *,
        default_group_by: str = "batch",
        default_group_reduction: str = "mean",
        loss_name: str = "loss_corr",
        metric_prefix: str = "corr/",
    ):
        corr = cfg.MODEL.CORR_LOSS
        group_by = default_group_by if corr.GROUP_BY == "auto" else corr.GROUP_BY
        if group_by == "image" and corr.IMAGES_PER_RHO:
            raise ConfigError(
                f"cfg.MODEL.CORR_LOSS.IMAGES_PER_RHO = {corr.IMAGES_PER_RHO} spans several "
                f"images but MODEL.CORR_LOSS.GROUP_BY {corr.GROUP_BY!r} gives "
                f"{cfg.MODEL.META_ARCHITECTURE} one ρ per image: set IMAGES_PER_RHO 0, or "
                "GROUP_BY 'batch' or 'level'"
            )
        images_per_group, processes = rho_span(
            corr.IMAGES_PER_RHO, cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size()
        )
        return {
            "images_per_group": images_per_group,
            "process_group": _pooling_group(processes),
            "weight": corr.WEIGHT,
            "kind": corr.TYPE,
            "rank_strength": corr.RANK_STRENGTH,
            "group_by": group_by,
            "group_reduction": (
                default_group_reduction if corr.GROUP_REDUCTION == "auto" else corr.GROUP_REDUCTION
            ),
            "min_positives": corr.MIN_POSITIVES,
            "gather_across_processes": corr.GATHER_ACROSS_PROCESSES,
            "loss_name": loss_name,
            "metric_prefix": metric_prefix,
        }

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, kind={self.kind}, rank_strength={self.rank_strength}, "
            f"group_by={self.group_by}, group_reduction={self.group_reduction}, "
            f"min_positives={self.min_positives}"
        )

    @property
    def pools_processes(self) -> bool:
        """Whether ρ is computed over the positives of several processes."""
        return self.gather_across_processes or self.process_group is not None

    def _key_columns(self, samples: CorrelationSamples) -> List[torch.Tensor]:
        """The (P,) integer columns whose rows are the positives' group keys, most significant
        first: image chunk, level, (process rank,) image, as the grouping needs them."""
        needed = ["level"] if self.group_by == "level" else []
        if self.group_by == "image" or self.images_per_group:
            needed.append("image")
        for name in needed:
            if getattr(samples, f"{name}_index") is None:
                raise ValueError(
                    f"CorrelationLoss(group_by={self.group_by!r}, images_per_group="
                    f"{self.images_per_group}) needs {name}_index from its caller"
                )
        columns = []
        if self.images_per_group:
            columns.append(samples.image_index // self.images_per_group)
        if self.group_by == "level":
            columns.append(samples.level_index)
        if self.group_by == "image":
            if self.pools_processes:  # image indices are per process: keep processes apart
                columns.append(torch.full_like(samples.image_index, comm.get_rank()))
            columns.append(samples.image_index)
        return columns

    def group_keys(self, samples: CorrelationSamples) -> Optional[torch.Tensor]:
        """(P,) or (P, C) int64 group key of each positive, or None for one group ("batch"
        grouping of whole batches).

        A positive's key is its row of the columns the grouping names, most significant first:
        image chunk ``image_index // images_per_group``, level, image (the process rank before
        the image when processes pool, whose image indices are their own). Rows are compared for
        equality after pooling, groups ordered lexicographically
        (:func:`corrloss_d2.losses.correlation_coefficients`).
        """
        columns = self._key_columns(samples)
        if not columns:
            return None
        return columns[0] if len(columns) == 1 else torch.stack(columns, dim=1)

    def forward(
        self, samples: CorrelationSamples, *, name_suffix: str = ""
    ) -> Dict[str, torch.Tensor]:
        """
        Args:
            samples: the positives; the index ``group_by`` (and ``images_per_group``) names is
                required.
            name_suffix: appended to the loss key and the metric names, for a detector that
                calls it once per stage (e.g. "_stage0": ``loss_corr_stage0``,
                ``corr/rho_stage0``).
        Returns:
            ``{loss_name + name_suffix: λ·(1 − mean ρ)}`` (λ·Σ (1 − ρ) with ``group_reduction``
            "sum"), or an empty dict when ``weight`` is 0.
        """
        groups = self.group_keys(samples)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.weight > 0):
            corr = correlation_coefficients(
                samples.scores,
                samples.ious,
                self.kind,
                groups=groups,
                strength=self.rank_strength,
                min_samples=self.min_positives,
                gather_across_processes=self.pools_processes,
                process_group=self.process_group,
            )
            loss = corr.loss(self.group_reduction)
        if self.training:
            storage = get_event_storage()
            num_valid = int(corr.valid.sum())
            if num_valid:  # the mean ρ, whatever the reduction
                mean_rho = (corr.rho.detach() * corr.valid).sum().item() / num_valid
                storage.put_scalar(self.metric_prefix + "rho" + name_suffix, mean_rho)
            num_pos = float(samples.ious.numel())
            storage.put_scalar(self.metric_prefix + "num_pos" + name_suffix, num_pos)
            storage.put_scalar(self.metric_prefix + "valid_groups" + name_suffix, float(num_valid))
        if self.weight == 0:
            return {}
        return {self.loss_name + name_suffix: self.weight * loss}
