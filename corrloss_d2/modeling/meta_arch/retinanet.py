"""CorrRetinaNet: detectron2's RetinaNet with MODEL.CLS_LOSS and Correlation Loss."""

from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.meta_arch.retinanet import RetinaNet

from ..classification_loss import ClassificationLoss
from ..correlation_term import CorrelationLoss
from .build import check_model_config
from .dense import CorrelationAwareDenseMixin

__all__ = ["CorrRetinaNet"]


@META_ARCH_REGISTRY.register()
class CorrRetinaNet(CorrelationAwareDenseMixin, RetinaNet):
    """detectron2's RetinaNet with a configurable classification loss (MODEL.CLS_LOSS) and
    Correlation Loss (MODEL.CORR_LOSS; the paper groups per FPN level). With CORR_LOSS.WEIGHT 0
    and CLS_LOSS.TYPE "focal" its losses equal RetinaNet's. Constructor: the arguments of
    :class:`detectron2.modeling.RetinaNet` plus ``classification_loss`` and ``correlation_loss``."""

    NUM_CLASSES_KEY = "MODEL.RETINANET.NUM_CLASSES"
    LOSS_NORMALIZER_INITIAL = 100.0

    @classmethod
    def from_config(cls, cfg):
        check_model_config(cfg)
        ret = super().from_config(cfg)
        ret["classification_loss"] = ClassificationLoss(
            cfg,
            focal_alpha=cfg.MODEL.RETINANET.FOCAL_LOSS_ALPHA,
            focal_gamma=cfg.MODEL.RETINANET.FOCAL_LOSS_GAMMA,
        )
        ret["correlation_loss"] = CorrelationLoss(cfg, default_group_by="level")
        return ret

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Same inputs as :meth:`RetinaNet.losses`; adds ``loss_corr`` when its weight is > 0."""
        out = self.dense_losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        return {"loss_cls": out.cls, "loss_box_reg": out.box, **out.corr}
