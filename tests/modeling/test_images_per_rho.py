"""MODEL.CORR_LOSS.IMAGES_PER_RHO: one ρ spans that many images whatever the number of processes
(consecutive processes pool their positives, or a process splits its batch)."""

import os

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from corrloss_d2.config import load_corrloss_config
from corrloss_d2.engine import launch_processes
from corrloss_d2.errors import ConfigError
from corrloss_d2.modeling import CorrelationLoss, CorrelationSamples, matched_box_iou
from corrloss_d2.modeling.correlation_term import rho_span
from tests.references import reference_concordance
from tests.tiny import REPO

CONFIG = os.path.join(REPO, "configs", "Base-CorrFCOS.yaml")  # concordance over the batch


@pytest.mark.parametrize(
    "images_per_rho,batch,processes,expected",
    [
        (0, 16, 8, (0, 1)),
        (4, 16, 4, (0, 1)),  # the released 4 GPUs x 4 images
        (4, 16, 8, (0, 2)),  # 8 GPUs x 2 images: pairs of processes pool
        (4, 16, 16, (0, 4)),
        (4, 16, 1, (4, 1)),  # one process: 4 groups of 4 images
        (2, 8, 2, (2, 1)),
    ],
)
def test_span(images_per_rho, batch, processes, expected):
    assert rho_span(images_per_rho, batch, processes) == expected


@pytest.mark.parametrize(
    "images_per_rho,batch,processes,message",
    [
        (3, 16, 4, r"IMAGES_PER_RHO = 3 does not fit SOLVER.IMS_PER_BATCH = 16 over 4 processes"),
        (6, 16, 8, r"must divide 2, or be 2 times a divisor of 8"),  # 3 processes of 8
        (4, 4, 8, r"IMS_PER_BATCH = 4 gives no image to each of the 8 processes"),
    ],
)
def test_span_that_does_not_fit_is_named(images_per_rho, batch, processes, message):
    with pytest.raises(ConfigError, match=message):
        rho_span(images_per_rho, batch, processes)


def test_a_span_of_images_with_one_rho_per_image_is_named():
    # CorrYOLACT's "auto" grouping is one ρ per image (the config check sees only an explicit
    # "image"): a span of several images contradicts it.
    cfg = load_corrloss_config(
        os.path.join(REPO, "configs", "Base-CorrYOLACT.yaml"),
        [
            "SOLVER.IMS_PER_BATCH",
            8,
            "MODEL.CORR_LOSS.IMAGES_PER_RHO",
            4,
            "MODEL.CORR_LOSS.GROUP_BY",
            "auto",
        ],
    )
    with pytest.raises(ConfigError, match=r"IMAGES_PER_RHO = 4 spans .* CorrYOLACT one ρ per"):
        CorrelationLoss(cfg, default_group_by="image")


def samples(seed, num_images=4, per_image=5):
    gen = torch.Generator().manual_seed(seed)
    ious = torch.rand(num_images * per_image, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    scores = (0.6 * ious + 0.4 * torch.rand(ious.shape, generator=gen, dtype=torch.float64)).clamp(
        0.01, 0.99
    )
    image_index = torch.arange(num_images).repeat_interleave(per_image)
    return torch.logit(scores), ious, image_index


def boxes_with_ious(ious):
    """Predicted and ground-truth boxes whose IoUs are ``ious``: [0, 10u] x [0, 10] inside the
    ground truth [0, 10] x [0, 10]."""
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]], dtype=torch.float64).repeat(len(ious), 1)
    pred = gt.clone()
    pred[:, 2] = 10 * ious
    return pred, gt


def test_a_process_splits_its_batch_into_groups_of_images():
    logits, ious, image_index = samples(0)
    pred, gt = boxes_with_ious(ious)
    loss = CorrelationLoss(weight=1.0, kind="concordance", images_per_group=2).train()
    positives = CorrelationSamples.from_logits(
        logits, matched_box_iou(pred, gt), image_index=image_index
    )
    with EventStorage() as storage:
        value = loss(positives)["loss_corr"]
    scores = torch.sigmoid(logits)
    rhos = [
        reference_concordance(scores[:10], ious[:10]),
        reference_concordance(scores[10:], ious[10:]),
    ]
    assert rhos[0] != pytest.approx(rhos[1])
    assert value.item() == pytest.approx(1 - np.mean(rhos), rel=1e-6)
    assert storage.latest()["corr/valid_groups"][0] == 2
    with pytest.raises(ValueError, match="needs image_index"):
        loss(CorrelationSamples.from_logits(logits, matched_box_iou(pred, gt)))


def _two_process_worker(out_dir):
    rank = torch.distributed.get_rank()
    logits, ious, image_index = samples(rank, num_images=2)
    pred, gt = boxes_with_ious(ious)
    positives = CorrelationSamples.from_logits(
        logits.requires_grad_(), matched_box_iou(pred, gt), image_index=image_index
    )
    logged = {}
    for images_per_rho in (4, 2):
        cfg = load_corrloss_config(
            CONFIG,
            ["SOLVER.IMS_PER_BATCH", 4, "MODEL.CORR_LOSS.IMAGES_PER_RHO", images_per_rho],
        )
        loss = CorrelationLoss(cfg).train()
        with EventStorage() as storage:
            loss(positives)
        logged[images_per_rho] = storage.latest()["corr/rho"][0]
    torch.save(logged, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_processes_pool_when_one_rho_spans_both_their_batches(tmp_path):
    launch_processes(_two_process_worker, 2, dist_url="auto", args=(str(tmp_path),))
    logged = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    per_process = [samples(rank, num_images=2) for rank in range(2)]
    own = [reference_concordance(torch.sigmoid(logits), ious) for logits, ious, _ in per_process]
    pooled = reference_concordance(
        torch.sigmoid(torch.cat([p[0] for p in per_process])),
        torch.cat([p[1] for p in per_process]),
    )
    assert own[0] != pytest.approx(own[1]) and pooled != pytest.approx(own[0])
    # 4 images per ρ, 2 per process: both log the ρ of the combined images.
    assert [seen[4] for seen in logged] == pytest.approx([pooled, pooled], rel=1e-6)
    # 2 images per ρ: each process its own.
    assert [seen[2] for seen in logged] == pytest.approx(own, rel=1e-6)
