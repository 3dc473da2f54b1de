import pytest
import torch
from detectron2.utils.events import EventStorage
from scipy.stats import pearsonr
from torchvision.ops import box_iou

from corrloss_d2.modeling import (
    CorrelationLoss,
    CorrelationSamples,
    correlation_term,
    matched_box_iou,
)
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
        out = hook(CorrelationSamples.from_logits(logits, matched_box_iou(pred, gt)))
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
    samples = CorrelationSamples.from_logits(logits, matched_box_iou(pred, gt), level_index=level)
    with EventStorage() as storage:
        assert hook(samples) == {}  # no term, still measured
    assert storage.history("corr_s0/valid_groups").latest() == 3
    with pytest.raises(ValueError, match="needs image_index"):
        with EventStorage():
            CorrelationLoss(weight=0.1, group_by="image")(samples)


def test_hook_without_positives_returns_connected_zero():
    hook = CorrelationLoss(weight=0.5, kind="spearman")
    logits = torch.zeros(0, requires_grad=True)
    with EventStorage() as storage:
        ious = matched_box_iou(torch.zeros(0, 4), torch.zeros(0, 4))
        out = hook(CorrelationSamples.from_logits(logits, ious))
    assert out["loss_corr"].item() == 0 and out["loss_corr"].requires_grad
    assert "corr/rho" not in storage.histories()  # nothing measured, nothing logged


def test_per_image_terms_summed_on_given_scores_as_yolact_releases_it():
    logits, pred, gt = positives(n=31)
    scores = torch.rand(31, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    image = torch.tensor([0] * 12 + [1] * 18 + [2])  # image 2: one positive, no ρ
    hook = CorrelationLoss(weight=0.4, kind="concordance", group_by="image", group_reduction="sum")
    with EventStorage() as storage:
        out = hook(CorrelationSamples(scores, matched_box_iou(pred, gt), image_index=image))
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
    with pytest.raises(ValueError, match="group_reduction must be one of"):
        CorrelationLoss(weight=0.1, group_reduction="max")


# The group key of a positive of process ``rank``, image ``image``, FPN level ``level`` under
# each grouping (the pure loss numbers the distinct keys of the pooled processes in sorted order).
GROUP_KEYS = {
    "level": ({"group_by": "level"}, lambda rank, image, level: (level,)),
    "image": ({"group_by": "image"}, lambda rank, image, level: (image,)),
    "chunks of 2 images": ({"images_per_group": 2}, lambda rank, image, level: (image // 2,)),
    "levels of chunks of 3 images": (
        {"group_by": "level", "images_per_group": 3},
        lambda rank, image, level: (image // 3, level),
    ),
    "level, gathered": (
        {"group_by": "level", "gather_across_processes": True},
        lambda rank, image, level: (level,),
    ),
    "image, gathered": (
        {"group_by": "image", "gather_across_processes": True},
        lambda rank, image, level: (rank, image),
    ),
}


@pytest.mark.parametrize("grouping", list(GROUP_KEYS))
def test_group_keys_are_the_named_indices_of_each_positive(monkeypatch, grouping):
    arguments, key = GROUP_KEYS[grouping]
    gen = torch.Generator().manual_seed(3)
    image, level = torch.randint(0, 8, (200,), generator=gen), torch.randint(1, 5, (200,))
    monkeypatch.setattr(correlation_term.comm, "get_rank", lambda: 1)
    samples = CorrelationSamples(torch.rand(200), torch.rand(200), image, level)
    keys = CorrelationLoss(weight=1.0, **arguments).group_keys(samples)
    expected = [key(1, *positive) for positive in zip(image.tolist(), level.tolist())]
    assert [tuple(row) for row in keys.reshape(200, -1).tolist()] == expected


def test_one_group_has_no_keys():
    samples = CorrelationSamples(torch.rand(5), torch.rand(5))
    assert CorrelationLoss(weight=1.0, gather_across_processes=True).group_keys(samples) is None


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"scores": torch.rand(5, 1)}, r"scores must be \(P,\), got torch.float32 \(5, 1\)"),
        ({"scores": torch.rand(5).half()}, r"scores must be float32, got torch.float16 \(5,\)"),
        ({"ious": torch.rand(4)}, r"ious must be a floating-point tensor .* \(5,\), got .* \(4,\)"),
        ({"ious": None}, r"ious must be a floating-point .* \(5,\), got NoneType"),
        ({"image_index": torch.arange(6)}, r"image_index must .* \(5,\), got torch.int64 \(6,\)"),
        ({"level_index": torch.rand(5)}, r"level_index must be an integer tensor .*float32"),
    ],
)
def test_samples_name_the_field_that_does_not_fit(fields, message):
    given = {"scores": torch.rand(5), "ious": torch.rand(5), "image_index": torch.arange(5)}
    with pytest.raises(ValueError, match="CorrelationSamples." + message):
        CorrelationSamples(**{**given, **fields})


def test_one_rho_per_image_spans_no_other_images():
    with pytest.raises(ValueError, match="images_per_group and process_group"):
        CorrelationLoss(weight=1.0, group_by="image", images_per_group=2)


def test_scores_from_logits_are_float32_under_bfloat16_autocast():
    layer = torch.nn.Linear(3, 1)
    features = torch.randn(6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)[:, 0]
        samples = CorrelationSamples.from_logits(logits, torch.rand(6))
    assert logits.dtype == torch.bfloat16
    assert samples.scores.dtype == torch.float32
    assert torch.equal(samples.scores, torch.sigmoid(logits.float()))
    samples.scores.sum().backward()
    assert layer.weight.grad.abs().sum() > 0
