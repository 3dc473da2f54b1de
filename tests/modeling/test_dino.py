"""CorrDINO: contrastive denoising (attention mask, noise), the losses of the encoder, the decoder
layers and the denoising queries against hand-written references, Align-DETR's mixed matching
and prime-sample weights per layer, and the meta-architecture end to end."""

import math

import pytest
import torch
from detectron2.utils.events import EventStorage
from torchvision.ops import box_convert, box_iou

from corrloss_d2.modeling.denoising import (
    contrastive_denoising_queries,
    denoising_attention_mask,
)
from corrloss_d2.modeling.dino_transformer import TransformerOutput
from tests.references import reference_set_losses
from tests.tiny import (
    assert_top_k_detections_at_requested_size,
    synthetic_batch,
    three_boxes_and_an_empty_image,
    tiny_model,
)

LOSS_WEIGHTS = {"cls": 1.0, "bbox": 5.0, "giou": 2.0}
COST_WEIGHTS = {"cls": 2.0, "bbox": 5.0, "giou": 2.0}


def random_targets(counts, num_classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    classes = [torch.randint(num_classes, (n,), generator=gen) for n in counts]
    centers = [0.3 + 0.4 * torch.rand(n, 2, generator=gen) for n in counts]
    sizes = [0.1 + 0.3 * torch.rand(n, 2, generator=gen) for n in counts]
    return classes, [torch.cat([c, s], dim=1) for c, s in zip(centers, sizes)]


@pytest.mark.parametrize("group_size,groups,queries", [(2, 3, 4), (6, 1, 5), (4, 5, 0)])
def test_attention_mask_hides_denoising_from_matching_queries_and_groups_from_each_other(
    group_size, groups, queries
):
    mask = denoising_attention_mask(group_size, groups, queries)
    dn = group_size * groups
    assert mask.shape == (dn + queries, dn + queries) and mask.dtype == torch.bool
    assert mask[dn:, :dn].all(), "a matching query sees a denoising query"
    assert not mask[:, dn:].any(), "every query sees the matching queries"
    for g in range(groups):
        rows = slice(g * group_size, (g + 1) * group_size)
        own = torch.zeros(dn, dtype=torch.bool)
        own[rows] = True
        assert not mask[rows, :dn][:, own].any()
        assert mask[rows, :dn][:, ~own].all()


def test_denoising_groups_slots_matches_and_valid_boxes():
    classes, boxes = random_targets([3, 1, 0])
    dn = contrastive_denoising_queries(
        classes, boxes, num_classes=3, num_matching_queries=5, dn_number=7, label_noise_ratio=0.0
    )
    assert dn.num_groups == 2 and dn.labels.shape == (3, 12) and dn.boxes.shape == (3, 12, 4)
    for image, (queries, gt_index) in enumerate(dn.matches):
        count = len(classes[image])
        assert queries.tolist() == [q for g in range(2) for q in range(6 * g, 6 * g + count)]
        assert gt_index.tolist() == list(range(count)) * 2
        # Without label noise every copy, positive and negative, keeps its ground truth's class;
        # slots past the image's ground truths are padding (-1).
        for g in range(2):
            for half in (0, 3):
                start = 6 * g + half
                assert dn.labels[image, start : start + count].tolist() == classes[image].tolist()
                assert (dn.labels[image, start + count : start + 3] == -1).all()
    corners = box_convert(dn.boxes, "cxcywh", "xyxy")
    assert (corners >= 0).all() and (corners <= 1).all()
    assert (corners[..., 2:] >= corners[..., :2]).all()
    assert (
        contrastive_denoising_queries(
            [torch.zeros(0, dtype=torch.int64)],
            [torch.zeros(0, 4)],
            num_classes=3,
            num_matching_queries=5,
        )
        is None
    )


def test_box_noise_keeps_positives_closer_than_negatives():
    """Positives: every corner moves less than λ half-sides, so the box still holds its ground
    truth's centre. Negatives move 1 to 2 half-sides: on average they overlap far less."""
    classes, boxes = random_targets([40], seed=1)
    scale = 0.8
    dn = contrastive_denoising_queries(
        classes, boxes, num_classes=3, num_matching_queries=1, dn_number=200, box_noise_scale=scale
    )
    gt_corners = box_convert(boxes[0], "cxcywh", "xyxy")
    noised = box_convert(dn.boxes[0], "cxcywh", "xyxy")
    block = 80  # 40 positives then 40 negatives per group
    positives = torch.cat([noised[g * block : g * block + 40] for g in range(dn.num_groups)])
    negatives = torch.cat([noised[g * block + 40 : (g + 1) * block] for g in range(dn.num_groups)])
    reference = gt_corners.repeat(dn.num_groups, 1)
    half_sides = (boxes[0][:, 2:] / 2).repeat(dn.num_groups, 2)
    assert ((positives - reference).abs() <= scale * half_sides + 1e-6).all()
    centers = boxes[0][:, :2].repeat(dn.num_groups, 1)
    assert (positives[:, :2] <= centers).all() and (positives[:, 2:] >= centers).all()
    positive_iou = box_iou(positives, reference).diag().mean()
    negative_iou = box_iou(negatives, reference).diag().mean()
    assert positive_iou > 2 * negative_iou


def test_label_noise_resamples_classes_at_half_the_configured_ratio():
    """A class is resampled with probability ratio / 2 among all K classes, so it changes with
    probability ratio / 2 · (K − 1) / K."""
    num_classes, ratio = 5, 0.6
    classes, boxes = random_targets([50], num_classes=num_classes, seed=2)
    dn = contrastive_denoising_queries(
        classes,
        boxes,
        num_classes=num_classes,
        num_matching_queries=1,
        dn_number=5000,
        label_noise_ratio=ratio,
        generator=torch.Generator().manual_seed(0),
    )
    original = classes[0].repeat(2 * dn.num_groups)
    labels = dn.labels[0][dn.labels[0] >= 0]
    assert len(labels) == len(original) == 10000
    changed = (labels != original).float().mean().item()
    expected = ratio / 2 * (num_classes - 1) / num_classes
    tolerance = 4 * math.sqrt(expected * (1 - expected) / len(labels))
    assert abs(changed - expected) < tolerance
    assert labels.min() >= 0 and labels.max() < num_classes


def fixed_dino_case(num_classes=2, num_queries=4, layers=2, seed=0):
    """Two images of 100x80, the first with 3 ground truths, the second none; a transformer
    output of random logits and boxes for the encoder and ``layers`` decoder layers, with the
    denoising queries of DN_NUMBER 6 (2 groups of 2·3)."""
    gen = torch.Generator().manual_seed(seed)
    targets, whwh = three_boxes_and_an_empty_image()
    model = tiny_model(
        "CorrDINO",
        "MODEL.DINO.NUM_CLASSES",
        num_classes,
        "MODEL.DINO.NUM_QUERIES",
        num_queries,
        "MODEL.DINO.NUM_DECODER_LAYERS",
        layers,
        "MODEL.DINO.DN_NUMBER",
        6,
    )
    denoising = model.denoising_queries(targets, whwh)

    def predictions(count):
        logits = torch.randn(2, count, num_classes, generator=gen)
        centers = 0.2 + 0.6 * torch.rand(2, count, 2, generator=gen)
        sizes = 0.1 + 0.4 * torch.rand(2, count, 2, generator=gen)
        return logits, torch.cat([centers, sizes], dim=-1)

    queries = num_queries + denoising.labels.shape[1]
    encoder = predictions(num_queries)
    decoder = [predictions(queries) for _ in range(layers)]
    output = TransformerOutput(
        encoder[0], encoder[1], [d[0] for d in decoder], [d[1] for d in decoder]
    )
    return model, output, denoising, targets, whwh


def reference_losses(logits, boxes, gt, whwh, **kwargs):
    pixel_boxes = box_convert(boxes, "cxcywh", "xyxy") * whwh[:, None]
    return reference_set_losses(
        logits.double().tolist(),
        pixel_boxes.double().tolist(),
        gt.gt_classes.tolist(),
        gt.gt_boxes.tensor.tolist(),
        whwh[0].tolist(),
        loss_weights=LOSS_WEIGHTS,
        cost_weights=COST_WEIGHTS,
        box_format="cxcywh",
        **kwargs,
    )


def test_losses_equal_hand_written_dino_losses_with_an_empty_image():
    """Encoder proposals and decoder layers: optimal one-to-one matching, focal 1 + L1 on
    centre/size 5 + GIoU 2 over the ground-truth count; denoising queries: their own positives,
    normalised by ground truths x groups."""
    model, output, denoising, targets, whwh = fixed_dino_case()
    with EventStorage():
        losses = model.losses(output, denoising, targets, whwh)
    dn = denoising.labels.shape[1]
    expected = {
        "_enc": reference_losses(output.encoder_logits, output.encoder_boxes, targets[0], whwh)[0]
    }
    for i, (logits, boxes) in enumerate(zip(output.decoder_logits, output.decoder_boxes)):
        expected[f"_layer{i}"] = reference_losses(logits[:, dn:], boxes[:, dn:], targets[0], whwh)[
            0
        ]
        pairs = list(zip(*[t.tolist() for t in denoising.matches[0]]))
        assert len(pairs) == 6
        expected[f"_dn_layer{i}"] = reference_losses(
            logits[:, :dn], boxes[:, :dn], targets[0], whwh, matches=pairs, normalizer=3 * 2
        )[0]
    assert set(losses) == {f"loss_{n}{s}" for n in LOSS_WEIGHTS for s in expected}
    for suffix, values in expected.items():
        for name, value in values.items():
            assert losses[f"loss_{name}{suffix}"].item() == pytest.approx(value, rel=1e-5), (
                name + suffix
            )


def test_mixed_matching_per_layer_and_no_prime_weights_on_denoising_queries(matching_ks):
    """Align-DETR: k = 2 on the encoder proposals and every decoder layer but the last, which is
    one-to-one; prime-sample weights change the one-to-k layers' losses, not the last layer's
    nor the denoising queries' (Align-DETR weighs those 1)."""
    model, output, denoising, targets, whwh = fixed_dino_case(num_queries=12, layers=3)
    model.criterion.one_to_many_k = 2
    model.criterion.classification_loss.kind = "ia_bce"
    with EventStorage():
        model.criterion.prime_sample_tau = 0.0
        plain = model.losses(output, denoising, targets, whwh)
        assert matching_ks == [2, 2, 2, 2, 2, 2, 1, 1]  # per output, per image
        model.criterion.prime_sample_tau = 1.5
        weighted = model.losses(output, denoising, targets, whwh)
    for key in plain:
        one_to_k = key.endswith(("_enc", "_layer0", "_layer1")) and "_dn_" not in key
        if one_to_k and not key.startswith("loss_corr"):
            assert weighted[key].item() != plain[key].item(), key
        else:
            assert weighted[key].item() == plain[key].item(), key


def test_correlation_loss_per_decoder_layer_over_its_matched_queries():
    model, output, denoising, targets, whwh = fixed_dino_case(num_queries=6, layers=2)
    model.criterion.correlation_loss.weight = 0.5
    model.criterion.correlation_loss.kind = "pearson"
    with EventStorage() as storage:
        losses = model.losses(output, denoising, targets, whwh)
    assert {k for k in losses if k.startswith("loss_corr")} == {
        "loss_corr_layer0",
        "loss_corr_layer1",
    }
    dn = denoising.labels.shape[1]
    for i, (logits, boxes) in enumerate(zip(output.decoder_logits, output.decoder_boxes)):
        _, matches = reference_losses(logits[:, dn:], boxes[:, dn:], targets[0], whwh)
        queries = [q for q, _ in matches]
        scores = torch.sigmoid(logits[0, dn:][queries, targets[0].gt_classes]).double()
        pixel = box_convert(boxes[0, dn:][queries], "cxcywh", "xyxy") * whwh[0]
        ious = box_iou(pixel.double(), targets[0].gt_boxes.tensor.double()).diag()
        rho = torch.corrcoef(torch.stack([scores, ious]))[0, 1].item()
        assert losses[f"loss_corr_layer{i}"].item() == pytest.approx(0.5 * (1 - rho), rel=1e-4)
        assert storage.latest()[f"corr/rho_layer{i}"][0] == pytest.approx(rho, rel=1e-4)


@pytest.mark.parametrize(
    "cls_loss,kind,k",
    [("focal", "spearman", 0), ("ia_bce", "concordance", 2), ("vfl", "pearson", 2)],
)
def test_end_to_end_training_step_and_nms_free_inference(
    cls_loss, kind, k, losses_and_grads, forbid_nms
):
    model = tiny_model(
        "CorrDINO",
        "MODEL.CORR_LOSS.WEIGHT",
        0.2,
        "MODEL.CORR_LOSS.TYPE",
        kind,
        "MODEL.CORR_LOSS.RANK_STRENGTH",
        0.01,
        "MODEL.CLS_LOSS.TYPE",
        cls_loss,
        "MODEL.DINO.ONE_TO_MANY_K",
        k,
    )
    batch = synthetic_batch(3, empty=(0,))
    losses, grads, storage = losses_and_grads(model, batch)
    suffixes = ["_enc", "_layer0", "_layer1", "_dn_layer0", "_dn_layer1"]
    expected = {f"loss_{n}{s}" for n in ("cls", "bbox", "giou") for s in suffixes}
    assert set(losses) == expected | {"loss_corr_layer0", "loss_corr_layer1"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert {"corr/rho_layer0", "corr/rho_layer1"} <= set(storage.latest())
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in grads]
    assert not missing, f"parameters without gradient (DDP would fail): {missing}"
    # No ground truth at all: no denoising queries, their losses are connected zeros.
    losses, grads, _ = losses_and_grads(model, synthetic_batch(2, empty=(0, 1)))
    assert all(losses[f"loss_{n}_dn_layer1"] == 0 for n in ("cls", "bbox", "giou"))
    assert "label_embedding.weight" in grads and all(torch.isfinite(v) for v in losses.values())

    assert_top_k_detections_at_requested_size(model, batch)


def test_correlation_term_reaches_no_box_head(losses_and_grads):
    batch = synthetic_batch(2)
    _, base, _ = losses_and_grads(tiny_model("CorrDINO", "MODEL.CORR_LOSS.WEIGHT", 0.0), batch)
    losses, with_corr, _ = losses_and_grads(
        tiny_model("CorrDINO", "MODEL.CORR_LOSS.WEIGHT", 1.0), batch
    )
    assert losses["loss_corr_layer1"] > 0
    box_heads = [n for n in base if "box_head" in n]
    assert box_heads
    for name in box_heads:
        torch.testing.assert_close(with_corr[name], base[name], rtol=1e-4, atol=1e-7)
    name = "transformer.class_heads.1.weight"
    assert not torch.allclose(with_corr[name], base[name])


def test_shared_layer_heads_and_images_of_different_sizes():
    """One head pair for every layer (the official DINO); a batch of two sizes (padding masks,
    valid ratios) gives each image its detections in its own size."""
    model = tiny_model("CorrDINO", "MODEL.DINO.SHARE_LAYER_HEADS", True).eval()
    assert len(model.transformer.class_heads) == 1 and len(model.transformer.box_heads) == 1
    small, large = synthetic_batch(1, size=64)[0], synthetic_batch(1, size=96)[0]
    with torch.no_grad():
        results = model([small, large])
    for result, (height, width) in zip(results, [(64, 80), (96, 112)]):
        instances = result["instances"]
        assert instances.image_size == (height, width) and len(instances) == 50
        boxes = instances.pred_boxes.tensor
        assert boxes[:, 0::2].max() <= width and boxes[:, 1::2].max() <= height


def test_look_forward_twice_reaches_the_previous_layer_box_head_only_through_the_loss_box():
    """A layer's loss box starts from the previous layer's undetached box, so its loss trains the
    previous layer's box head; the references the layers attend with are detached, so the first
    layer's loss does not train the second layer's head."""
    model = tiny_model("CorrDINO").train()
    images = model.preprocess_image(synthetic_batch(1))
    first, second = model.transformer.box_heads
    for layer, trained, untouched in ((1, first, None), (0, None, second)):
        model.zero_grad()
        inputs = model.transformer.flatten_levels(*model.multi_level_features(images))
        output = model.transformer(inputs)
        output.decoder_boxes[layer].sum().backward()
        if trained is not None:
            assert trained.layers[-1].weight.grad.abs().sum() > 0
        if untouched is not None:
            assert all(p.grad is None or not p.grad.any() for p in untouched.parameters())


def test_padding_gives_valid_ratios_reference_points_and_no_padded_proposal():
    """An image of 64x80 beside one of 96x112: its maps are padded; the valid ratios are its
    unpadded fraction, its pixel centres are normalised by its own size, and padded positions
    never become proposals."""
    model = tiny_model("CorrDINO").eval()
    small, large = synthetic_batch(1, size=64)[0], synthetic_batch(1, size=96)[0]
    images = model.preprocess_image([small, large])
    features, masks, positions = model.multi_level_features(images)
    inputs = model.transformer.flatten_levels(features, masks, positions)
    for level, mask in enumerate(masks):
        height, width = mask.shape[1:]
        valid_height, valid_width = (~mask[0, :, 0]).sum(), (~mask[0, 0, :]).sum()
        assert valid_width <= width and valid_height <= height and not mask[1].any()
        if level == 0:  # the coarsest levels may round the padding away
            assert valid_width < width and valid_height < height
        expected = torch.stack([valid_width / width, valid_height / height]).float()
        torch.testing.assert_close(inputs.valid_ratios[0, level], expected)
        torch.testing.assert_close(inputs.valid_ratios[1, level], torch.ones(2))
    points = model.transformer.encoder_reference_points(inputs)  # (B, S, L, 2)
    first_level = masks[0].shape[1] * masks[0].shape[2]
    valid_width = int((~masks[0][0, 0, :]).sum())
    # Pixel (row 0, column valid_width - 1) of level 0 is the small image's last unpadded column:
    # its centre is 1 - 0.5 / valid_width of the image's width, times the ratio of each level.
    x = points[0, valid_width - 1, :, 0]
    torch.testing.assert_close(x, (1 - 0.5 / valid_width) * inputs.valid_ratios[0, :, 0])
    memory = model.transformer.encode(inputs)
    _, _, valid = model.transformer.proposals(memory, inputs)
    assert not (valid & inputs.padding_mask).any() and valid[0, :first_level].any()


@pytest.mark.parametrize(
    "opts,error,message",
    [
        (["MODEL.CORR_LOSS.GROUP_BY", "level"], ValueError, r"'level' is not valid for CorrDINO"),
        (["MODEL.DINO.NUM_FEATURE_LEVELS", 2], ValueError, r"NUM_FEATURE_LEVELS = 2 is fewer"),
        (["MODEL.DINO.HIDDEN_DIM", 48], ValueError, r"HIDDEN_DIM = 48.*multiple of 32"),
        (["MODEL.DINO.IN_FEATURES", ["res3", "p9"]], ValueError, r"IN_FEATURES.*\['p9'\]"),
        (["MODEL.DINO.IN_FEATURES", []], ValueError, r"IN_FEATURES = \[\] .*at least one"),
    ],
)
def test_inconsistent_config_is_named_at_build(opts, error, message):
    with pytest.raises(error, match=message):
        tiny_model("CorrDINO", *opts)


def test_more_queries_than_encoder_positions_is_named():
    model = tiny_model("CorrDINO", "MODEL.DINO.NUM_QUERIES", 5000).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"NUM_QUERIES = 5000 exceeds the \d+"):
        model(synthetic_batch(1))
