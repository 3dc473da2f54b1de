import glob
import os

import pytest
import torch

from corrloss_d2 import add_corrloss_config, validate_corrloss_config
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from .tiny import REPO, tiny_cfg

YAMLS = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
               + glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True))


def load(path):
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(path)
    return cfg


def test_there_are_configs_for_every_meta_architecture_and_projects():
    names = [os.path.relpath(p, REPO) for p in YAMLS]
    assert any("projects/CorrelationLoss" in n for n in names)
    assert any("projects/AlignDETR" in n for n in names)
    assert sum("retinanet" in n for n in names) >= 10 and sum("fcos" in n for n in names) >= 10
    assert sum("sparse_rcnn" in n.lower() for n in names) >= 10


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_yaml_merges_and_builds_on_cpu(path):
    cfg = load(path)
    validate_corrloss_config(cfg)
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert name in DatasetCatalog.list(), f"{path} names unregistered dataset {name}"
    if os.path.basename(path).startswith("Base-"):
        assert "_BASE_" not in open(path).read(), "Base-*.yaml must be self-contained"
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    assert model.correlation_hook.weight == cfg.MODEL.CORR_LOSS.WEIGHT


@pytest.mark.parametrize("key,value,message", [
    ("MODEL.CORR_LOSS.TYPE", "kendall", r"MODEL.CORR_LOSS.TYPE = 'kendall' .*'pearson', 'concordance', 'spearman'"),
    ("MODEL.CORR_LOSS.GROUP_BY", "class", r"MODEL.CORR_LOSS.GROUP_BY = 'class'.*'batch', 'level', 'image'"),
    ("MODEL.CLS_LOSS.TYPE", "ce", r"MODEL.CLS_LOSS.TYPE = 'ce'.*'focal', 'ia_bce', 'qfl', 'vfl'"),
    ("MODEL.CORR_LOSS.WEIGHT", -0.1, r"MODEL.CORR_LOSS.WEIGHT = -0.1.*>= 0"),
    ("MODEL.CORR_LOSS.MIN_POSITIVES", 1, r"MODEL.CORR_LOSS.MIN_POSITIVES = 1.*integer >= 2"),
    ("MODEL.CORR_LOSS.RANK_STRENGTH", 0.0, r"MODEL.CORR_LOSS.RANK_STRENGTH = 0.0"),
    ("MODEL.FCOS.HEAD_NORM", "LN", r"MODEL.FCOS.HEAD_NORM = 'LN'"),
    ("MODEL.SPARSE_RCNN.ONE_TO_MANY_K", -1, r"ONE_TO_MANY_K = -1 .*integer >= 0"),
    ("MODEL.SPARSE_RCNN.PRIME_SAMPLE_TAU", -0.5, r"PRIME_SAMPLE_TAU = -0.5 .*>= 0"),
    ("MODEL.SPARSE_RCNN.NUM_HEADS", 5, r"NUM_HEADS = 5 .*divisor of MODEL.SPARSE_RCNN.HIDDEN_DIM = 256"),
    ("MODEL.SPARSE_RCNN.NUM_PROPOSALS", 0, r"NUM_PROPOSALS = 0 .*integer >= 1"),
    ("MODEL.SPARSE_RCNN.DROPOUT", 1.0, r"DROPOUT = 1.0 .*\[0, 1\)"),
    ("SOLVER.OPTIMIZER", "ADAM", r"SOLVER.OPTIMIZER = 'ADAM'.*'SGD', 'ADAMW'"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "global", r"CLIP_TYPE = 'global'.*'full_model'"),
    ("SOLVER.BACKBONE_MULTIPLIER", -1.0, r"BACKBONE_MULTIPLIER = -1.0"),
    ("INPUT.TRAIN_AUGMENTATION", "mosaic", r"TRAIN_AUGMENTATION = 'mosaic'.*'sparse_rcnn'"),
])
def test_invalid_values_fail_at_config_time_naming_key_value_and_choices(key, value, message):
    cfg = tiny_cfg("CorrFCOS")
    cfg.merge_from_list([key, value])
    with pytest.raises(ValueError, match=message):
        validate_corrloss_config(cfg)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)  # the same check when a user builds the model directly


def test_meta_architecture_without_add_corrloss_config_says_what_to_call():
    cfg = get_cfg()  # no add_corrloss_config
    cfg.MODEL.META_ARCHITECTURE = "CorrRetinaNet"
    cfg.MODEL.DEVICE = "cpu"
    with pytest.raises(KeyError, match=r"call corrloss_d2.add_corrloss_config\(cfg\)"):
        build_model(cfg)


def test_fcos_in_features_missing_from_backbone_is_named():
    cfg = tiny_cfg("CorrFCOS", "MODEL.FCOS.IN_FEATURES", ["p2", "p3"])
    with pytest.raises(ValueError, match=r"MODEL.FCOS.IN_FEATURES.*\['p2'\]"):
        build_model(cfg)


def test_fcos_backbone_computes_p6_p7_from_p5():
    model = build_model(tiny_cfg("CorrFCOS"))
    top_block = model.backbone.top_block
    assert top_block.in_feature == "p5" and top_block.p6.in_channels == 32
    features = model.backbone(torch.zeros(1, 3, 128, 128))
    assert sorted(features) == ["p3", "p4", "p5", "p6", "p7"]
    assert features["p7"].shape[-1] == 1


def test_add_corrloss_config_is_idempotent():
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.MODEL.CORR_LOSS.WEIGHT = 0.3
    add_corrloss_config(cfg)
    assert cfg.MODEL.CORR_LOSS.WEIGHT == 0.3
