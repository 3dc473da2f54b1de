"""The meta-architectures as the tests know them: one :class:`ArchitectureSpec` per ``Corr*``
meta-architecture that corrloss_d2 registers, in :data:`ARCHITECTURES`. Parametrised tests read
their architectures and per-architecture facts here (:func:`names`) instead of copying them;
``tests/test_architectures.py`` checks the table against detectron2's registry and against built
models."""

import dataclasses
from typing import Callable, List, Optional, Sequence, Tuple

from corrloss_d2.losses import CLASSIFICATION_LOSS_KINDS

FAMILIES = ("dense", "query", "yolact")


@dataclasses.dataclass(frozen=True)
class ArchitectureSpec:
    """One meta-architecture.

    name: its MODEL.META_ARCHITECTURE.
    family: "dense" (a :class:`~corrloss_d2.modeling.CorrelationAwareDenseMixin` detector:
        sigmoid classification of anchors or points, an EMA loss normaliser), "query" (a
        :class:`~corrloss_d2.modeling.set_prediction.SetPredictionDetector`: set matching,
        ``<node>.ONE_TO_MANY_K`` and ``PRIME_SAMPLE_TAU``) or "yolact" (its own losses).
    base_config: its self-contained ``Base-*.yaml``, relative to the repository.
    cpu_config: its train_net.py run from scratch on the CPU and the development data (raccoon;
        the synthetic "shapes" for a model that learns masks), relative to the repository.
    recipe_prefix: how the file names of its recipes start (``<prefix>_R_50_FPN_...``).
    node: the config node of its keys ("MODEL.RETINANET").
    tiny_opts: the overrides ``tests.tiny.tiny_cfg`` adds for it besides the class count (key,
        value, ...): a narrow head.
    stages_key: the key of its number of stages (decoder layers), each with its own correlation
        term; None for one term.
    losses: the keys of its training losses with MODEL.CORR_LOSS.WEIGHT > 0; ``{i}`` stands for
        each stage.
    nms: whether its inference runs NMS (else it keeps the top-k (query, class) pairs).
    masks: whether it learns instance masks (MODEL.MASK_ON) and outputs ``pred_masks``.
    softmax_scores: whether its class scores are a softmax over the classes and the background,
        trained by a softmax cross-entropy and correlated as probabilities (else each class's
        sigmoid of a logit).
    cls_losses: the classification losses it trains with: the kinds of MODEL.CLS_LOSS.TYPE, or
        its own one.
    default_group_by: the ρ grouping its base config gives it (the paper's choice for the
        detector).
    """

    name: str
    family: str
    base_config: str
    cpu_config: str
    recipe_prefix: str
    node: str
    tiny_opts: Tuple
    stages_key: Optional[str]
    losses: Tuple[str, ...]
    nms: bool
    masks: bool
    softmax_scores: bool
    cls_losses: Tuple[str, ...]
    default_group_by: str

    @property
    def num_classes_key(self) -> str:
        return f"{self.node}.NUM_CLASSES"

    def stages(self, opts: Optional[Sequence] = None) -> int:
        """Its number of stages as the config overrides ``opts`` (key, value, ...) set it, the
        tiny model's by default; 1 without stages."""
        if self.stages_key is None:
            return 1
        values = self.tiny_opts if opts is None else opts
        return int(dict(zip(values[::2], values[1::2]))[self.stages_key])

    def loss_keys(self, opts: Optional[Sequence] = None) -> Tuple[str, ...]:
        """Its training losses' keys with MODEL.CORR_LOSS.WEIGHT > 0 for the stages of
        :meth:`stages`."""
        stages = range(self.stages(opts))
        return tuple(
            key
            for template in self.losses
            for key in ([template.format(i=i) for i in stages] if "{i}" in template else [template])
        )

    def corr_suffixes(self, opts: Optional[Sequence] = None) -> Tuple[str, ...]:
        """The suffix of each correlation term's loss key and ρ metrics (``loss_corr<suffix>``,
        ``corr/rho<suffix>``), in the order the model computes them."""
        return tuple(
            key.removeprefix("loss_corr")
            for key in self.loss_keys(opts)
            if key.startswith("loss_corr")
        )


# The anchor sizes of the tiny models' anchor-based heads: one a level from 16 px.
TINY_ANCHORS = ["MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]]]

ARCHITECTURES = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            name="CorrRetinaNet",
            family="dense",
            base_config="configs/Base-CorrRetinaNet.yaml",
            cpu_config="configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml",
            recipe_prefix="retinanet",
            node="MODEL.RETINANET",
            tiny_opts=("MODEL.RETINANET.NUM_CONVS", 1, *TINY_ANCHORS),
            stages_key=None,
            losses=("loss_cls", "loss_box_reg", "loss_corr"),
            nms=True,
            masks=False,
            softmax_scores=False,
            cls_losses=CLASSIFICATION_LOSS_KINDS,
            default_group_by="level",
        ),
        ArchitectureSpec(
            name="CorrFCOS",
            family="dense",
            base_config="configs/Base-CorrFCOS.yaml",
            cpu_config="configs/CPU/fcos_R_18_FPN_raccoon_scratch.yaml",
            recipe_prefix="fcos",
            node="MODEL.FCOS",
            tiny_opts=("MODEL.FCOS.NUM_CONVS", 1),
            stages_key=None,
            losses=("loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_corr"),
            nms=True,
            masks=False,
            softmax_scores=False,
            cls_losses=CLASSIFICATION_LOSS_KINDS,
            default_group_by="batch",
        ),
        ArchitectureSpec(
            name="CorrATSS",
            family="dense",
            base_config="configs/Base-CorrATSS.yaml",
            cpu_config="configs/CPU/atss_R_18_FPN_raccoon_scratch.yaml",
            recipe_prefix="atss",
            node="MODEL.ATSS",
            tiny_opts=("MODEL.ATSS.NUM_CONVS", 1),
            stages_key=None,
            losses=("loss_atss_cls", "loss_atss_box", "loss_atss_ctr", "loss_corr"),
            nms=True,
            masks=False,
            softmax_scores=False,
            cls_losses=CLASSIFICATION_LOSS_KINDS,
            default_group_by="batch",
        ),
        ArchitectureSpec(
            name="CorrSparseRCNN",
            family="query",
            base_config="configs/Base-CorrSparseRCNN.yaml",
            cpu_config="configs/CPU/sparse_rcnn_R_18_FPN_raccoon_scratch.yaml",
            recipe_prefix="sparse_rcnn",
            node="MODEL.SPARSE_RCNN",
            # 2 stages, 20 proposals, 32-wide head; 20 proposals x 3 classes >= 50 detections.
            tiny_opts=(
                "MODEL.SPARSE_RCNN.NUM_STAGES",
                2,
                "MODEL.SPARSE_RCNN.NUM_PROPOSALS",
                20,
                "MODEL.SPARSE_RCNN.HIDDEN_DIM",
                32,
                "MODEL.SPARSE_RCNN.DIM_DYNAMIC",
                8,
                "MODEL.SPARSE_RCNN.NUM_HEADS",
                4,
                "MODEL.SPARSE_RCNN.DIM_FEEDFORWARD",
                64,
                "TEST.DETECTIONS_PER_IMAGE",
                50,
            ),
            stages_key="MODEL.SPARSE_RCNN.NUM_STAGES",
            losses=(
                "loss_cls_stage{i}",
                "loss_bbox_stage{i}",
                "loss_giou_stage{i}",
                "loss_corr_stage{i}",
            ),
            nms=False,
            masks=False,
            softmax_scores=False,
            cls_losses=CLASSIFICATION_LOSS_KINDS,
            default_group_by="batch",
        ),
        ArchitectureSpec(
            name="CorrDINO",
            family="query",
            base_config="configs/Base-CorrDINO.yaml",
            cpu_config="configs/CPU/dino_R_18_4scale_raccoon_scratch.yaml",
            recipe_prefix="dino",
            node="MODEL.DINO",
            # 2 + 2 layers, 32 wide, 20 queries, at most 8 denoising queries; 20 x 3 >= 50
            # detections.
            tiny_opts=(
                "MODEL.DINO.HIDDEN_DIM",
                32,
                "MODEL.DINO.NUM_HEADS",
                4,
                "MODEL.DINO.NUM_POINTS",
                2,
                "MODEL.DINO.NUM_ENCODER_LAYERS",
                2,
                "MODEL.DINO.NUM_DECODER_LAYERS",
                2,
                "MODEL.DINO.DIM_FEEDFORWARD",
                64,
                "MODEL.DINO.NUM_QUERIES",
                20,
                "MODEL.DINO.DN_NUMBER",
                4,
                "TEST.DETECTIONS_PER_IMAGE",
                50,
            ),
            stages_key="MODEL.DINO.NUM_DECODER_LAYERS",
            # The encoder's proposals, then every decoder layer's matching queries (with its
            # correlation term), then every layer's denoising queries.
            losses=(
                "loss_cls_enc",
                "loss_bbox_enc",
                "loss_giou_enc",
                "loss_cls_layer{i}",
                "loss_bbox_layer{i}",
                "loss_giou_layer{i}",
                "loss_corr_layer{i}",
                "loss_cls_dn_layer{i}",
                "loss_bbox_dn_layer{i}",
                "loss_giou_dn_layer{i}",
            ),
            nms=False,
            masks=False,
            softmax_scores=False,
            cls_losses=CLASSIFICATION_LOSS_KINDS,
            default_group_by="batch",
        ),
        ArchitectureSpec(
            name="CorrYOLACT",
            family="yolact",
            base_config="configs/Base-CorrYOLACT.yaml",
            cpu_config="configs/CPU/yolact_R_18_FPN_shapes_scratch.yaml",
            recipe_prefix="yolact",
            node="MODEL.YOLACT",
            # 8 prototypes from a 32-wide protonet.
            tiny_opts=(
                "MODEL.YOLACT.NUM_PROTOTYPES",
                8,
                "MODEL.YOLACT.PROTONET_DIM",
                32,
                *TINY_ANCHORS,
                "TEST.DETECTIONS_PER_IMAGE",
                50,
            ),
            stages_key=None,
            losses=("loss_cls", "loss_box_reg", "loss_mask", "loss_semantic", "loss_corr"),
            nms=True,
            masks=True,
            softmax_scores=True,
            cls_losses=("softmax_ohem",),  # softmax cross-entropy with 3:1 hard negatives
            default_group_by="image",
        ),
    )
}


def names(where: Callable[[ArchitectureSpec], bool] = lambda spec: True) -> List[str]:
    """The names of the architectures whose spec satisfies ``where``, in table order."""
    return [name for name, spec in ARCHITECTURES.items() if where(spec)]
