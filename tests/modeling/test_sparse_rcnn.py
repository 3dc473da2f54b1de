"""CorrSparseRCNN: the criterion against hand-written references, mixed matching and prime-sample
weights, and the meta-architecture end to end (training, gradients, NMS-free inference)."""

import math

import numpy as np
import pytest
import torch
import torchvision
from detectron2.utils.events import EventStorage

from corrloss_d2.modeling import ClassificationLoss, CorrelationLoss, set_criterion
from corrloss_d2.modeling.set_criterion import SetCriterion
from corrloss_d2.modeling.set_prediction import SetPrediction
from tests.references import reference_set_losses
from tests.tiny import (
    assert_top_k_detections_at_requested_size,
    synthetic_batch,
    three_boxes_and_an_empty_image,
    tiny_model,
)

WEIGHTS = {"cls": 2.0, "bbox": 5.0, "giou": 2.0}


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def fixed_case(num_queries=4, num_classes=2, seed=0):
    """Two images of 100x80: the first with 3 ground truths, the second without; two stages."""
    gen = torch.Generator().manual_seed(seed)
    targets, whwh = three_boxes_and_an_empty_image()
    outputs = []
    for _ in range(2):
        logits = torch.randn(2, num_queries, num_classes, generator=gen, dtype=torch.float64)
        xy = torch.rand(2, num_queries, 2, generator=gen, dtype=torch.float64) * 50
        wh = 10 + torch.rand(2, num_queries, 2, generator=gen, dtype=torch.float64) * 40
        outputs.append(
            SetPrediction(logits.requires_grad_(), torch.cat([xy, xy + wh], -1).requires_grad_())
        )
    return outputs, targets, whwh


def reference_stage_losses(output, gt, whwh):
    """Sparse R-CNN's losses written out (image 1 has no ground truth; see
    ``reference_set_losses``)."""
    return reference_set_losses(
        output.logits.detach().tolist(),
        output.boxes.detach().tolist(),
        gt.gt_classes.tolist(),
        gt.gt_boxes.tensor.tolist(),
        whwh[0].tolist(),
        loss_weights=WEIGHTS,
        cost_weights=WEIGHTS,
    )


def make_criterion(weight=0.0, kind="pearson", cls="focal", k=0, tau=0.0, **loss_and_cost_weights):
    return SetCriterion(
        num_classes=2,
        classification_loss=ClassificationLoss(kind=cls),
        correlation_loss=CorrelationLoss(weight=weight, kind=kind),
        one_to_many_k=k,
        prime_sample_tau=tau,
        **loss_and_cost_weights,
    )


def test_criterion_equals_hand_written_sparse_rcnn_losses_with_an_empty_image():
    outputs, targets, whwh = fixed_case()
    with EventStorage():
        losses = make_criterion()(outputs, targets, whwh)
    assert sorted(losses) == sorted(f"loss_{n}_stage{s}" for n in WEIGHTS for s in (0, 1))
    for stage, output in enumerate(outputs):
        reference, _ = reference_stage_losses(output, targets[0], whwh)
        for name, value in reference.items():
            assert losses[f"loss_{name}_stage{stage}"].item() == pytest.approx(value, rel=1e-6), (
                name
            )


def test_loss_weights_and_matching_cost_weights_are_separate(monkeypatch):
    """Align-DETR's weights: class loss 1, class cost 2. The cost weights alone set the matching
    (the same as Sparse R-CNN's here), the loss weights alone scale the losses."""
    outputs, targets, whwh = fixed_case()
    seen_cost_weights = []
    real_cost = set_criterion.set_matching_cost

    def cost_spy(*args, **kwargs):
        seen_cost_weights.append(
            (kwargs["class_weight"], kwargs["l1_weight"], kwargs["giou_weight"])
        )
        return real_cost(*args, **kwargs)

    monkeypatch.setattr(set_criterion, "set_matching_cost", cost_spy)
    align = make_criterion(
        class_weight=1.0, cost_class_weight=2.0, cost_l1_weight=5.0, cost_giou_weight=2.0
    )
    with EventStorage():
        aligned = align(outputs, targets, whwh)
        sparse = make_criterion()(outputs, targets, whwh)
    assert set(seen_cost_weights) == {(2.0, 5.0, 2.0)}
    for stage in range(len(outputs)):
        assert aligned[f"loss_cls_stage{stage}"].item() == pytest.approx(
            sparse[f"loss_cls_stage{stage}"].item() / 2
        )
        for name in ("bbox", "giou"):
            key = f"loss_{name}_stage{stage}"
            assert aligned[key].item() == sparse[key].item()
    seen_cost_weights.clear()
    with EventStorage():
        make_criterion(cost_class_weight=0.5, cost_l1_weight=0.0, cost_giou_weight=1.0)(
            outputs, targets, whwh
        )
    assert set(seen_cost_weights) == {(0.5, 0.0, 1.0)}


def test_correlation_term_is_added_per_stage_and_changes_nothing_else():
    outputs, targets, whwh = fixed_case()
    with EventStorage() as storage:
        plain = make_criterion(weight=0.0)(outputs, targets, whwh)
        with_corr = make_criterion(weight=0.5, kind="pearson")(outputs, targets, whwh)
    for key in plain:
        assert with_corr[key].item() == plain[key].item()
    for stage, output in enumerate(outputs):
        _, matches = reference_stage_losses(output, targets[0], whwh)
        best = [q for q, _ in matches]
        gt = targets[0]
        scores = [sigmoid(output.logits[0, q, gt.gt_classes[g]].item()) for g, q in enumerate(best)]
        ious = torchvision.ops.box_iou(
            output.boxes[0, list(best)].detach(), gt.gt_boxes.tensor.double()
        ).diag()
        rho = np.corrcoef(scores, ious.numpy())[0, 1]
        assert with_corr[f"loss_corr_stage{stage}"].item() == pytest.approx(
            0.5 * (1 - rho), rel=1e-5
        )
        assert storage.latest()[f"corr/rho_stage{stage}"][0] == pytest.approx(rho, rel=1e-5)
    assert set(with_corr) - set(plain) == {"loss_corr_stage0", "loss_corr_stage1"}


def test_mixed_matching_and_prime_sample_weights():
    """Stage 0 (intermediate) matches each ground truth to k = 2 queries, the last stage one-to-one;
    within a group the better-quality query gets weight 1, the other exp(-1/τ), on L1/GIoU and
    on the IA-BCE target."""
    tau = 1.5
    outputs, targets, whwh = fixed_case(num_queries=12)
    criterion = make_criterion(cls="ia_bce", k=2, tau=tau)
    with EventStorage():
        losses = criterion(outputs, targets, whwh)
        for stage, output in enumerate(outputs):
            k = criterion.matches_per_target(stage, len(outputs))
            queries, gts = criterion.match(output, targets, whwh, k)[0]
            assert torch.bincount(gts, minlength=3).tolist() == [k] * 3
            assert len(set(queries.tolist())) == 3 * k
            gt_boxes = targets[0].gt_boxes.tensor.double()[gts]
            gt_classes = targets[0].gt_classes[gts]
            boxes = output.boxes.detach()[0, queries]
            ious = torchvision.ops.box_iou(boxes, gt_boxes).diag()
            scores = torch.sigmoid(output.logits.detach()[0, queries, gt_classes])
            quality = scores**0.25 * ious**0.75
            weights = torch.ones(len(queries), dtype=torch.float64)
            for g in range(3):
                members = (gts == g).nonzero().flatten()
                if len(members) == 2:
                    worse = members[quality[members].argmin()]
                    weights[worse] = math.exp(-1 / tau)
            l1 = ((boxes - gt_boxes) / whwh[0].double()).abs().sum(1)
            expected_l1 = WEIGHTS["bbox"] * (weights * l1).sum().item() / 3
            assert losses[f"loss_bbox_stage{stage}"].item() == pytest.approx(expected_l1, rel=1e-6)
            # IA-BCE written out: BCE(p, clamp(quality, 0.01)·w) at positives, p^2·BCE(p, 0)
            # elsewhere.
            probs = torch.sigmoid(output.logits.detach())
            target = torch.zeros_like(probs)
            target[0, queries, gt_classes] = quality.clamp(min=0.01) * weights
            positive = target > 0
            bce = -(target * probs.log() + (1 - target) * (1 - probs).log())
            elementwise = torch.where(positive, bce, probs**2 * bce)
            expected_cls = WEIGHTS["cls"] * elementwise.sum().item() / 3
            assert losses[f"loss_cls_stage{stage}"].item() == pytest.approx(expected_cls, rel=1e-5)


def test_one_to_many_k_is_capped_by_the_number_of_ground_truths():
    outputs, targets, whwh = fixed_case(num_queries=8)  # ⌊0.5·8 / 3⌋ = 1
    criterion = make_criterion(k=2)
    _, gts = criterion.match(outputs[0], targets, whwh, criterion.matches_per_target(0, 2))[0]
    assert torch.bincount(gts, minlength=3).tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    "cls_loss,k,group_by",
    [("focal", 0, "batch"), ("ia_bce", 2, "batch"), ("qfl", 0, "image"), ("vfl", 2, "image")],
)
def test_end_to_end_training_step_and_nms_free_inference(
    cls_loss, k, group_by, losses_and_grads, matching_ks, forbid_nms
):
    model = tiny_model(
        "CorrSparseRCNN",
        "MODEL.CORR_LOSS.WEIGHT",
        0.2,
        "MODEL.CORR_LOSS.TYPE",
        "spearman",
        "MODEL.CORR_LOSS.RANK_STRENGTH",
        0.01,
        "MODEL.CORR_LOSS.GROUP_BY",
        group_by,
        "MODEL.CLS_LOSS.TYPE",
        cls_loss,
        "MODEL.SPARSE_RCNN.ONE_TO_MANY_K",
        k,
    )
    batch = synthetic_batch(4, empty=(0,))
    losses, grads, storage = losses_and_grads(model, batch)
    # Images hold at most 3 boxes, so k = 2 is not capped (⌊10 / 3⌋ = 3); the last stage is 1:1.
    assert matching_ks == [max(k, 1)] * 4 + [1] * 4
    assert all(torch.isfinite(v) for v in losses.values())
    assert {f"loss_{n}_stage{s}" for n in ("cls", "bbox", "giou", "corr") for s in (0, 1)} == set(
        losses
    )
    assert "corr/rho_stage0" in storage.latest() and "corr/num_pos_stage1" in storage.latest()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in grads]
    assert not missing, f"parameters without gradient (DDP would fail): {missing}"

    assert_top_k_detections_at_requested_size(model, batch)


def test_correlation_term_reaches_only_the_classification_branch(losses_and_grads):
    batch = synthetic_batch(2)
    _, base, _ = losses_and_grads(
        tiny_model("CorrSparseRCNN", "MODEL.CORR_LOSS.WEIGHT", 0.0), batch
    )
    losses, with_corr, _ = losses_and_grads(
        tiny_model("CorrSparseRCNN", "MODEL.CORR_LOSS.WEIGHT", 1.0), batch
    )
    assert losses["loss_corr_stage1"] > 0
    box_only = [n for n in base if "reg_tower" in n or "box_deltas" in n]
    assert box_only
    for name in box_only:
        torch.testing.assert_close(with_corr[name], base[name], rtol=1e-4, atol=1e-7)
    assert not torch.allclose(
        with_corr["stages.1.class_logits.weight"], base["stages.1.class_logits.weight"]
    )


def test_inference_gives_detections_per_image_clamped_to_proposals_times_classes():
    model = tiny_model("CorrSparseRCNN", "TEST.DETECTIONS_PER_IMAGE", 100).eval()
    with torch.no_grad():
        results = model(synthetic_batch(1))
    assert len(results[0]["instances"]) == 60  # 20 proposals x 3 classes


def test_non_finite_predictions_stop_with_floating_point_error_naming_the_iteration():
    model = tiny_model("CorrSparseRCNN")
    with torch.no_grad():
        model.proposal_boxes.weight[3, 2] = float("nan")
    with (
        EventStorage(start_iter=7),
        pytest.raises(FloatingPointError, match="iteration 7.*BASE_LR"),
    ):
        model(synthetic_batch(2))


@pytest.mark.parametrize(
    "opts,message",
    [
        (
            ["MODEL.CORR_LOSS.GROUP_BY", "level"],
            r"GROUP_BY = 'level' is not valid for CorrSparseRCNN",
        ),
        (
            ["MODEL.SPARSE_RCNN.HIDDEN_DIM", 64],
            r"HIDDEN_DIM = 64 must equal .*\[32\].*FPN.OUT_CHANNELS",
        ),
        (["MODEL.SPARSE_RCNN.IN_FEATURES", ["p1", "p2"]], r"IN_FEATURES.*\['p1'\]"),
    ],
)
def test_inconsistent_config_is_named_at_build(opts, message):
    with pytest.raises(ValueError, match=message):
        tiny_model("CorrSparseRCNN", *opts)
