import pytest
import torch
from detectron2.utils.events import EventStorage
from scipy.stats import pearsonr
from torchvision.ops import box_iou

from corrloss_d2.modeling import CorrelationLoss, matched_box_iou
from tests.references import reference_concordance


def positives(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 2, generator=gen) * 50
    gt = torch.cat([gt, gt + 20 + torch.rand(n, 2, generator=gen) * 30], dim=1)
    pred = gt + torch.randn(n, 4, generator=gen) * 6
    logits = torch.randn(n, generator=gen, requires_grad=True)
    return logits, pred, gt


def test_matched_box_iou_against_torchvision_and_degenerate_boxes():
    _, pred, gt = positives()
    pred = torch.cat([pred, torch.tensor([[10.0, 10.0, 5.0, 5.0]]), torch.tensor([[0.0, 0, 1, 1]])])
    gt = torch.cat([gt, torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([[50.0, 50, 60, 60]])])
    expected = box_iou(pred[:-2], gt[:-2]).diagonal().clamp(min=1e-6)
    iou = matched_box_iou(pred, gt)
    torch.testing.assert_close(iou[:-2], expected)
    assert iou[-2] == 1e-6 and iou[-1] == 1e-6  # inverted box, disjoint boxes: the floor


def test_hook_value_gradient_and_logging():
    logits, pred, gt = positives()
    hook = CorrelationLoss(weight=0.3, kind="pearson", group_by="batch")
    with EventStorage() as storage:
        out = hook(logits, pred, gt)
    ious = matched_box_iou(pred, gt)
    rho = pearsonr(torch.sigmoid(logits).detach().numpy(), ious.numpy()).statistic
    assert out["loss_corr"].item() == pytest.approx(0.3 * (1 - rho), rel=1e-5)
    assert storage.history("corr/rho").latest() == pytest.approx(rho, rel=1e-5)
    assert storage.history("corr/num_pos").latest() == 40
    out["loss_corr"].backward()
    assert logits.grad.abs().sum() > 0


def test_hook_groups_and_zero_weight():
    logits, pred, gt = positives()
    level = torch.arange(40) % 3
    hook = CorrelationLoss(
        weight=0.0,
        kind="concordance",
        group_by="level",
        loss_name="loss_corr_s0",
        metric_prefix="corr_s0/",
    )
    with EventStorage() as storage:
        assert hook(logits, pred, gt, level_index=level) == {}  # no term, still measured
    assert storage.history("corr_s0/valid_groups").latest() == 3
    with pytest.raises(ValueError, match="needs image_index"):
        with EventStorage():
            CorrelationLoss(weight=0.1, group_by="image")(logits, pred, gt)


def test_hook_without_positives_returns_connected_zero():
    hook = CorrelationLoss(weight=0.5, kind="spearman")
    logits = torch.zeros(0, requires_grad=True)
    with EventStorage() as storage:
        out = hook(logits, torch.zeros(0, 4), torch.zeros(0, 4))
    assert out["loss_corr"].item() == 0 and out["loss_corr"].requires_grad
    assert "corr/rho" not in storage.histories()  # nothing measured, nothing logged


def test_per_image_terms_summed_on_given_scores_as_yolact_releases_it():
    logits, pred, gt = positives(n=31)
    scores = torch.rand(31, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    image = torch.tensor([0] * 12 + [1] * 18 + [2])  # image 2: one positive, no ρ
    hook = CorrelationLoss(weight=0.4, kind="concordance", group_by="image", group_reduction="sum")
    with EventStorage() as storage:
        out = hook(None, pred, gt, gt_class_scores=scores, image_index=image)
    ious = matched_box_iou(pred, gt)
    rhos = [
        reference_concordance(scores[image == i].detach().numpy(), ious[image == i].numpy())
        for i in (0, 1)
    ]
    assert out["loss_corr"].item() == pytest.approx(0.4 * sum(1 - r for r in rhos), rel=1e-5)
    # the logged ρ is the images' mean whatever the reduction
    assert storage.history("corr/rho").latest() == pytest.approx(sum(rhos) / 2, rel=1e-5)
    out["loss_corr"].backward()
    assert scores.grad[:30].abs().sum() > 0 and scores.grad[30] == 0
    with pytest.raises(ValueError, match="gt_class_logits or gt_class_scores"):
        with EventStorage():
            hook(logits, pred, gt, gt_class_scores=scores, image_index=image)
    with pytest.raises(ValueError, match="group_reduction must be one of"):
        CorrelationLoss(weight=0.1, group_reduction="max")
