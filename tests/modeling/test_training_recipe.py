"""The training recipe train_net.py builds: the optimiser choice (detectron2's SGD unchanged,
AdamW with a backbone multiplier, full-model gradient clipping) and Sparse R-CNN's augmentation."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.solver import build_optimizer as detectron2_build_optimizer
from detectron2.utils.events import EventStorage

from corrloss_d2.data.augmentation import build_train_augmentation
from corrloss_d2.solver import build_optimizer, with_full_model_gradient_clipping
from tests.tiny import tiny_cfg, tiny_model


def group_settings(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return sorted(
        (names[id(p)], g["lr"], g["weight_decay"])
        for g in optimizer.param_groups
        for p in g["params"]
    )


def test_dense_recipe_keeps_detectron2s_sgd_exactly():
    cfg = tiny_cfg(
        "CorrRetinaNet",
        "SOLVER.WEIGHT_DECAY_NORM",
        0.0,
        "SOLVER.CLIP_GRADIENTS.ENABLED",
        True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE",
        "norm",
    )
    model = tiny_model("CorrRetinaNet")
    ours, reference = build_optimizer(cfg, model), detectron2_build_optimizer(cfg, model)
    assert type(ours).__mro__[1:] == type(reference).__mro__[1:]  # SGD with detectron2's clipping
    assert group_settings(ours, model) == group_settings(reference, model)
    assert {k: v for k, v in ours.defaults.items()} == {k: v for k, v in reference.defaults.items()}


def test_adamw_with_backbone_multiplier_and_weight_decay():
    cfg = tiny_cfg(
        "CorrSparseRCNN",
        "SOLVER.BASE_LR",
        1e-4,
        "SOLVER.BACKBONE_MULTIPLIER",
        0.1,
        "SOLVER.WEIGHT_DECAY",
        1e-4,
    )
    model = tiny_model("CorrSparseRCNN")
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    settings = group_settings(optimizer, model)
    assert {round(lr, 12) for name, lr, _ in settings if name.startswith("backbone.")} == {1e-5}
    assert {round(lr, 12) for name, lr, _ in settings if not name.startswith("backbone.")} == {1e-4}
    assert {wd for name, _, wd in settings if "stages.0.box_deltas.weight" in name} == {1e-4}
    assert len(settings) == len(list(model.parameters()))


def test_full_model_clipping_rescales_all_gradients_by_one_norm():
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = with_full_model_gradient_clipping(torch.optim.SGD, max_norm=1.0)(params, lr=1.0)
    params[0].grad = torch.tensor([3.0, 0.0, 0.0])
    params[1].grad = torch.tensor([0.0, 4.0])  # joint norm 5: every gradient scaled by 1/5
    optimizer.step()
    torch.testing.assert_close(params[0].data, torch.tensor([-0.6, 0.0, 0.0]))
    torch.testing.assert_close(params[1].data, torch.tensor([0.0, -0.8]))
    assert type(optimizer).__name__ == "SGDWithFullModelGradientClipping"


def test_full_model_clipping_refuses_a_non_finite_gradient_naming_the_iteration():
    param = torch.nn.Parameter(torch.ones(2))
    optimizer = with_full_model_gradient_clipping(torch.optim.AdamW, max_norm=1.0)([param], lr=0.1)
    param.grad = torch.tensor([float("inf"), 1.0])
    with EventStorage(start_iter=12), pytest.raises(FloatingPointError, match="at iteration 12"):
        optimizer.step()
    assert torch.equal(param.data, torch.ones(2))  # nothing written


def test_full_model_clipping_from_the_config():
    cfg = tiny_cfg("CorrSparseRCNN", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.5)
    optimizer = build_optimizer(cfg, tiny_model("CorrSparseRCNN"))
    assert type(optimizer).__name__ == "AdamWWithFullModelGradientClipping"


def test_sparse_rcnn_augmentation_crops_about_half_the_images_then_resizes():
    cfg = tiny_cfg(
        "CorrSparseRCNN",
        "INPUT.TRAIN_AUGMENTATION",
        "sparse_rcnn",
        "INPUT.MIN_SIZE_TRAIN",
        (480, 512),
        "INPUT.MAX_SIZE_TRAIN",
        1000,
        "INPUT.CROP.SIZE",
        (384, 600),
    )
    augmentation = T.AugmentationList(build_train_augmentation(cfg))
    np.random.seed(0)
    cropped = 0
    for _ in range(40):
        aug_input = T.AugInput(
            np.zeros((600, 800, 3), dtype=np.uint8), boxes=np.array([[100.0, 100, 300, 400]])
        )
        transforms = augmentation(aug_input)
        cropped += any(isinstance(t, T.CropTransform) for t in transforms)
        assert (
            min(aug_input.image.shape[:2]) in (480, 512) or max(aug_input.image.shape[:2]) == 1000
        )
    assert 10 <= cropped <= 30  # numpy's seeded stream: the same 40 draws on every CPU


def test_detectron2_augmentation_is_the_dataset_mappers():
    cfg = tiny_cfg("CorrRetinaNet")
    augmentations = build_train_augmentation(cfg)
    assert [type(a) for a in augmentations] == [T.ResizeShortestEdge, T.RandomFlip]
