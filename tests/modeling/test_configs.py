import functools
import glob
import os
import re

import pytest
import torch
import yaml
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from corrloss_d2 import add_corrloss_config, validate_corrloss_config
from corrloss_d2.compiled_ops import MissingCompiledOpError, has_compiled_ops
from corrloss_d2.config import flatten_config
from tests.architectures import ARCHITECTURES
from tests.tiny import REPO, tiny_cfg


def rel(path):
    return os.path.relpath(path, REPO)


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def load(path):
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(path)
    return cfg


@functools.cache
def merged(path):
    return flatten_config(load(path))


def differing_keys(a, b):
    a, b = merged(a), merged(b)
    return {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}


def base_of(path):
    with open(path) as f:
        base = yaml.safe_load(f).get("_BASE_")
    return None if base is None else os.path.normpath(os.path.join(os.path.dirname(path), base))


def header_comment(path):
    """The comment lines the file starts with, joined into one text."""
    lines = []
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                break
            lines.append(line[1:].strip())
    return " ".join(lines)


YAMLS = sorted(
    glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    + glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True)
)
# Every yaml but the self-contained Base-*.yaml files: the recipes, baselines and CPU/smoke runs.
RECIPES = [p for p in YAMLS if not os.path.basename(p).startswith("Base-")]
# The two papers' recipes, and the baselines they are compared with (configs/ owns the baselines).
PROJECT_RECIPES = {
    project: sorted(glob.glob(os.path.join(REPO, "projects", project, "configs", "*.yaml")))
    for project in ("CorrelationLoss", "AlignDETR")
}
BASELINES = [p for p in RECIPES if p.endswith("_baseline.yaml")]
# Where a recipe's file name says what it trains: COCO/Cityscapes recipes, baselines, papers.
NAMED_RECIPES = [
    p
    for p in RECIPES
    if rel(p).split(os.sep)[:2]
    in (
        ["configs", "COCO-Detection"],
        ["configs", "COCO-InstanceSegmentation"],
        ["configs", "Cityscapes"],
        ["projects", "CorrelationLoss"],
        ["projects", "AlignDETR"],
    )
]
# The keys whose values a paper's recipe may change relative to the baseline it pairs with.
LOSS_KEYS = {
    "CorrelationLoss": ("MODEL.CORR_LOSS.",),
    "AlignDETR": (
        "MODEL.CLS_LOSS.",
        "MODEL.SPARSE_RCNN.ONE_TO_MANY_K",
        "MODEL.SPARSE_RCNN.CLASS_WEIGHT",
        "MODEL.SPARSE_RCNN.PRIME_SAMPLE_TAU",
        "MODEL.DINO.ONE_TO_MANY_K",
        "MODEL.DINO.PRIME_SAMPLE_TAU",
    ),
}
# The config node of each query-based detector's matching and loss weights.
QUERY_NODES = {spec.name: spec.node for spec in ARCHITECTURES.values() if spec.family == "query"}
CITYSCAPES = [
    p
    for p in RECIPES
    if stem(p).startswith("cityscapes_")
    or os.path.dirname(rel(p)) == os.path.join("configs", "Cityscapes")
]
# The meta-architecture a recipe's file name starts with; the query-based detectors' prefixes
# and the mask models'.
ARCHITECTURE_OF_PREFIX = {spec.recipe_prefix: name for name, spec in ARCHITECTURES.items()}
QUERY_PREFIXES = tuple(ARCHITECTURES[name].recipe_prefix for name in QUERY_NODES)
MASK_PREFIXES = tuple(spec.recipe_prefix for spec in ARCHITECTURES.values() if spec.masks)
ITERATIONS_PER_EPOCH = 7500  # of detrex's DETR schedules at 16 images


def test_every_recipe_has_one_home():
    misplaced = []
    for path in YAMLS:
        name, folder = os.path.basename(path), os.path.dirname(rel(path))
        if name.startswith("Base-"):
            home = "configs"
        elif "corr_" in name:
            home = os.path.join("projects", "CorrelationLoss", "configs")
        elif name.startswith(QUERY_PREFIXES) and "ia_bce" in name:
            home = os.path.join("projects", "AlignDETR", "configs")
        elif name.endswith("_baseline.yaml"):
            # mask models' COCO baselines live where detectron2 keeps its mask models'
            coco = (
                "COCO-InstanceSegmentation" if name.startswith(MASK_PREFIXES) else "COCO-Detection"
            )
            homes = (os.path.join("configs", coco), os.path.join("configs", "Cityscapes"))
            home = folder if folder in homes else "configs/<dataset>"
        elif folder.startswith("projects"):
            home = "configs (not a recipe of the project's paper)"
        else:
            home = folder
        if folder != home:
            misplaced.append(f"{rel(path)} belongs in {home}/")
    assert not misplaced, "\n".join(misplaced)
    names = [os.path.basename(p) for p in YAMLS]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"one file name, several homes: {twice}"
    for project, recipes in PROJECT_RECIPES.items():
        assert recipes, f"projects/{project}/configs has no recipe"


@pytest.mark.parametrize("path", [p for p in YAMLS if base_of(p)], ids=rel)
def test_no_yaml_only_renames_another(path):
    # A file that changes nothing of another recipe but where it writes (and which checkpoint it
    # starts from) is that recipe under a second name: move the file instead. A Base-*.yaml has no
    # weights, so starting it from pretrained ones makes a recipe.
    base = base_of(path)
    ignored = (
        {"OUTPUT_DIR"}
        if os.path.basename(base).startswith("Base-")
        else {"OUTPUT_DIR", "MODEL.WEIGHTS"}
    )
    changed = differing_keys(path, base) - ignored
    assert changed, f"{rel(path)} only renames {rel(base)}"


def test_no_two_yamls_merge_to_the_same_config():
    seen = {}
    for path in YAMLS:
        key = repr(sorted((k, v) for k, v in merged(path).items() if k != "OUTPUT_DIR"))
        assert key not in seen, f"{rel(path)} and {rel(seen[key])} are the same recipe"
        seen[key] = path


def test_every_recipe_writes_to_its_own_output_dir():
    output_dirs = {}
    for path in RECIPES:
        output_dir = os.path.normpath(merged(path)["OUTPUT_DIR"])
        assert output_dir not in output_dirs, (
            f"{rel(path)} and {rel(output_dirs[output_dir])} both write to {output_dir}"
        )
        output_dirs[output_dir] = path
    for project, recipes in PROJECT_RECIPES.items():
        for path in recipes:
            assert merged(path)["OUTPUT_DIR"] == f"./output/{project}/{stem(path)}", rel(path)


@pytest.mark.parametrize("path", RECIPES, ids=rel)
def test_file_name_states_architecture_depth_proposals_and_schedule(path):
    cfg = merged(path)
    name = stem(path).removeprefix("cityscapes_")
    arch, family, depth, dcn, neck = re.match(
        r"(.+?)_([RX])_(\d+)(_DCN)?_(FPN|\d+scale)", name
    ).groups()
    assert ARCHITECTURE_OF_PREFIX[arch] == cfg["MODEL.META_ARCHITECTURE"]
    if neck != "FPN":  # a DETR's feature levels
        assert int(neck.removesuffix("scale")) == cfg["MODEL.DINO.NUM_FEATURE_LEVELS"]
    assert int(depth) == cfg["MODEL.RESNETS.DEPTH"]
    assert (family == "X") == (cfg["MODEL.RESNETS.NUM_GROUPS"] > 1)
    assert bool(dcn) == any(cfg["MODEL.RESNETS.DEFORM_ON_PER_STAGE"])
    proposals = re.search(r"_(\d+)pro_", name)
    if proposals:
        assert int(proposals.group(1)) == cfg["MODEL.SPARSE_RCNN.NUM_PROPOSALS"]
    schedule = re.search(r"_(\d+)x(_|$)", name)
    if schedule:  # 1x: detectron2's 90k iterations at batch 16, or 12 COCO epochs of 7,330
        images = cfg["SOLVER.MAX_ITER"] * cfg["SOLVER.IMS_PER_BATCH"]
        assert images in (90000 * 16 * int(schedule.group(1)), 87960 * 16 * int(schedule.group(1)))
    epochs = re.search(r"_(\d+)ep(_|$)", name)
    if epochs:
        images = cfg["SOLVER.MAX_ITER"] * cfg["SOLVER.IMS_PER_BATCH"]
        assert images == ITERATIONS_PER_EPOCH * 16 * int(epochs.group(1))
    cityscapes = all(
        d.startswith("cityscapes") for d in cfg["DATASETS.TRAIN"] + cfg["DATASETS.TEST"]
    )
    assert cityscapes == (path in CITYSCAPES), (
        "a Cityscapes recipe is named cityscapes_* or lives in configs/Cityscapes"
    )


@pytest.mark.parametrize("path", NAMED_RECIPES, ids=rel)
def test_file_name_states_the_losses(path):
    cfg, name = merged(path), stem(path)
    weight, cls_loss = cfg["MODEL.CORR_LOSS.WEIGHT"], cfg["MODEL.CLS_LOSS.TYPE"]
    corr = re.search(r"_corr_([a-z]+)_(\d+(?:\.\d+)?)(_|$)", name)
    assert bool(corr) == (weight > 0), f"{name}: CORR_LOSS.WEIGHT = {weight}"
    if corr:
        assert corr.group(1) == cfg["MODEL.CORR_LOSS.TYPE"], (
            f"{name}: TYPE = {cfg['MODEL.CORR_LOSS.TYPE']}"
        )
        assert float(corr.group(2)) == pytest.approx(weight), f"{name}: CORR_LOSS.WEIGHT = {weight}"
        if cfg["MODEL.CORR_LOSS.TYPE"] == "spearman":  # 1.0: the released soft-rank strength
            assert ("_true_rank" in name) == (cfg["MODEL.CORR_LOSS.RANK_STRENGTH"] < 1.0)
    assert (f"_{cls_loss}" in name) == (cls_loss != "focal"), f"{name}: CLS_LOSS.TYPE = {cls_loss}"
    node = QUERY_NODES.get(cfg["MODEL.META_ARCHITECTURE"])
    if node:
        k, tau = cfg[f"{node}.ONE_TO_MANY_K"], cfg[f"{node}.PRIME_SAMPLE_TAU"]
        mixed = re.search(r"_mixed_k(\d+)(_|$)", name)
        assert (int(mixed.group(1)) if mixed else 0) == k, f"{name}: ONE_TO_MANY_K = {k}"
        # prime-sample weights only act with mixed matching (one-to-one: every group has one query)
        assert ("_prime" in name) == (k > 0 and tau > 0), f"{name}: PRIME_SAMPLE_TAU = {tau}"


@pytest.mark.parametrize("path", [p for p in NAMED_RECIPES if "sparse_rcnn" in stem(p)], ids=rel)
def test_sparse_rcnn_recipes_keep_every_proposal_as_a_detection(path):
    # The released Sparse R-CNN recipes evaluate max_per_img = num_proposals.
    cfg = merged(path)
    assert cfg["TEST.DETECTIONS_PER_IMAGE"] == cfg["MODEL.SPARSE_RCNN.NUM_PROPOSALS"]


@pytest.mark.parametrize("path", PROJECT_RECIPES["CorrelationLoss"], ids=rel)
def test_correlation_loss_recipes_train_with_the_loss_on_top_of_the_detector(path):
    cfg = merged(path)
    assert cfg["MODEL.CORR_LOSS.WEIGHT"] > 0 and "_corr_" in stem(path)
    assert cfg["MODEL.CLS_LOSS.TYPE"] == "focal"


@pytest.mark.parametrize("path", PROJECT_RECIPES["AlignDETR"], ids=rel)
def test_align_detr_recipes_use_ia_bce_on_a_query_detector(path):
    cfg = merged(path)
    assert cfg["MODEL.META_ARCHITECTURE"] in QUERY_NODES
    assert cfg["MODEL.CLS_LOSS.TYPE"] == "ia_bce" and "_ia_bce" in stem(path)
    assert cfg["MODEL.CORR_LOSS.WEIGHT"] == 0


@pytest.mark.parametrize("path", BASELINES, ids=rel)
def test_baselines_are_the_plain_detector(path):
    cfg = merged(path)
    assert cfg["MODEL.CORR_LOSS.WEIGHT"] == 0
    assert cfg["MODEL.CLS_LOSS.TYPE"] == "focal"
    node = QUERY_NODES.get(cfg["MODEL.META_ARCHITECTURE"])
    if node:
        assert cfg[f"{node}.ONE_TO_MANY_K"] == 0


@pytest.mark.parametrize(
    "project,path",
    [(project, p) for project, recipes in PROJECT_RECIPES.items() for p in recipes],
    ids=lambda x: os.path.basename(x),
)
def test_paper_recipe_differs_from_its_baseline_only_in_the_loss(project, path):
    comment = header_comment(path)
    pairs = re.search(r"Pairs with the baseline (\S+\.yaml)", comment)
    assert pairs, f"{rel(path)}: say in the header which baseline it pairs with"
    baseline = os.path.join(REPO, pairs.group(1))
    assert baseline in BASELINES, (
        f"{rel(path)} pairs with {pairs.group(1)}, not a baseline in configs/"
    )
    allowed = ("OUTPUT_DIR", "MODEL.WEIGHTS") + LOSS_KEYS[project]
    extra = sorted(k for k in differing_keys(path, baseline) if not k.startswith(allowed))
    unstated = [k for k in extra if k not in comment]
    assert not unstated, (
        f"{rel(path)} differs from {pairs.group(1)} in {unstated} (not the loss; "
        "name them in the header if intended)"
    )


@pytest.mark.parametrize("path", CITYSCAPES, ids=rel)
def test_cityscapes_recipe_starts_from_the_matching_coco_model(path):
    cfg = merged(path)
    weights = cfg["MODEL.WEIGHTS"]
    assert weights.startswith("./output/") and os.path.basename(weights) == "model_final.pth"
    same = [
        "MODEL.META_ARCHITECTURE",
        "MODEL.RESNETS.DEPTH",
        "MODEL.CLS_LOSS.TYPE",
        "MODEL.CORR_LOSS.WEIGHT",
    ]
    if cfg["MODEL.CORR_LOSS.WEIGHT"] > 0:
        same += [k for k in cfg if k.startswith("MODEL.CORR_LOSS.")]
    sources = [
        p
        for p in RECIPES
        if merged(p)["DATASETS.TRAIN"] == ("coco_2017_train",)
        and os.path.normpath(merged(p)["OUTPUT_DIR"]) == os.path.normpath(os.path.dirname(weights))
    ]
    assert len(sources) == 1, f"{rel(path)}: no COCO recipe writes {weights}"
    mismatched = [k for k in same if merged(sources[0])[k] != cfg[k]]
    assert not mismatched, (
        f"{rel(path)} starts from {rel(sources[0])}, which differs in {mismatched}"
    )


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: os.path.relpath(p, REPO))
def test_every_yaml_merges_and_builds(path):
    cfg = load(path)
    validate_corrloss_config(cfg)
    for name in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        assert name in DatasetCatalog.list(), f"{path} names unregistered dataset {name}"
    base = os.path.basename(path).startswith("Base-")
    if base:
        assert "_BASE_" not in open(path).read(), "Base-*.yaml must be self-contained"
    # The Base files build with real weights on the CPU; the others on the meta device, which
    # builds the same modules from the same config without drawing initial weights (6x faster).
    cfg.MODEL.DEVICE = "cpu" if base else "meta"
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) and not has_compiled_ops():
        with pytest.raises(MissingCompiledOpError, match=r"MODEL.RESNETS.DEFORM_ON_PER_STAGE"):
            build_model(cfg)
        return
    with torch.device(cfg.MODEL.DEVICE):
        model = build_model(cfg)
    assert {p.device.type for p in model.parameters()} == {cfg.MODEL.DEVICE}
    assert type(model).__name__ == cfg.MODEL.META_ARCHITECTURE
    assert model.correlation_loss.weight == cfg.MODEL.CORR_LOSS.WEIGHT


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "MODEL.CORR_LOSS.TYPE",
            "kendall",
            r"MODEL.CORR_LOSS.TYPE = 'kendall' .*'pearson', 'concordance', 'spearman'",
        ),
        (
            "MODEL.CORR_LOSS.GROUP_BY",
            "class",
            r"MODEL.CORR_LOSS.GROUP_BY = 'class'.*'batch', 'level', 'image'",
        ),
        (
            "MODEL.CLS_LOSS.TYPE",
            "ce",
            r"MODEL.CLS_LOSS.TYPE = 'ce'.*'focal', 'ia_bce', 'qfl', 'vfl'",
        ),
        ("MODEL.CORR_LOSS.WEIGHT", -0.1, r"MODEL.CORR_LOSS.WEIGHT = -0.1.*>= 0"),
        ("MODEL.CORR_LOSS.MIN_POSITIVES", 1, r"MODEL.CORR_LOSS.MIN_POSITIVES = 1.*integer >= 2"),
        ("MODEL.CORR_LOSS.RANK_STRENGTH", 0.0, r"MODEL.CORR_LOSS.RANK_STRENGTH = 0.0"),
        ("MODEL.FCOS.HEAD_NORM", "LN", r"MODEL.FCOS.HEAD_NORM = 'LN'"),
        ("MODEL.SPARSE_RCNN.ONE_TO_MANY_K", -1, r"ONE_TO_MANY_K = -1 .*integer >= 0"),
        ("MODEL.SPARSE_RCNN.PRIME_SAMPLE_TAU", -0.5, r"PRIME_SAMPLE_TAU = -0.5 .*>= 0"),
        (
            "MODEL.SPARSE_RCNN.NUM_HEADS",
            5,
            r"NUM_HEADS = 5 .*divisor of MODEL.SPARSE_RCNN.HIDDEN_DIM = 256",
        ),
        ("MODEL.SPARSE_RCNN.NUM_PROPOSALS", 0, r"NUM_PROPOSALS = 0 .*integer >= 1"),
        ("MODEL.SPARSE_RCNN.DROPOUT", 1.0, r"DROPOUT = 1.0 .*\[0, 1\)"),
        ("SOLVER.OPTIMIZER", "ADAM", r"SOLVER.OPTIMIZER = 'ADAM'.*'SGD', 'ADAMW'"),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "global", r"CLIP_TYPE = 'global'.*'full_model'"),
        ("SOLVER.BACKBONE_MULTIPLIER", -1.0, r"BACKBONE_MULTIPLIER = -1.0"),
        ("INPUT.TRAIN_AUGMENTATION", "mosaic", r"TRAIN_AUGMENTATION = 'mosaic'.*'sparse_rcnn'"),
    ],
)
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


# The released values the recipes must state (the Correlation Loss code's configs/CorrLoss/*.py,
# mmdetection's atss_r50_fpn_1x_coco.py, Align-DETR's aligndetr_r50.py; see the READMEs).
TORCHVISION_INPUT = {
    "MODEL.CORR_LOSS.IMAGES_PER_RHO": 4,  # one GPU's 4 images in the released runs
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
    "MODEL.BACKBONE.FREEZE_AT": 2,
}
EPOCHS_12 = {"SOLVER.MAX_ITER": 87960, "SOLVER.STEPS": (58640, 80630)}
EPOCHS_36 = {"SOLVER.MAX_ITER": 263880, "SOLVER.STEPS": (197910, 241890)}
WARMUP_500 = {"SOLVER.WARMUP_ITERS": 500, "SOLVER.WARMUP_FACTOR": 0.001}
SINGLE_SCALE = {"INPUT.MIN_SIZE_TRAIN": (800,), "INPUT.MAX_SIZE_TRAIN": 1333}
SCALES_480_800 = tuple(range(480, 801, 32))
SPARSE_1X = {
    **TORCHVISION_INPUT,
    **EPOCHS_12,
    **WARMUP_500,
    **SINGLE_SCALE,
    "MODEL.SPARSE_RCNN.NUM_PROPOSALS": 100,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "SOLVER.BASE_LR": 2.5e-5,
    "SOLVER.WEIGHT_DECAY_NORM": 1e-4,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 1.0,
    "MODEL.SPARSE_RCNN.CLASS_WEIGHT": 2.0,
    "MODEL.SPARSE_RCNN.COST_CLASS_WEIGHT": 2.0,
}
SPARSE_3X = {
    **TORCHVISION_INPUT,
    **EPOCHS_36,
    "INPUT.TRAIN_AUGMENTATION": "sparse_rcnn",
    "INPUT.CROP.SIZE": [384, 600],
    "MODEL.SPARSE_RCNN.NUM_PROPOSALS": 300,
    "TEST.DETECTIONS_PER_IMAGE": 300,
}
# detrex's DINO-4scale R-50 (projects/dino/configs/models/dino_r50.py, dino_r50_4scale_*.py).
DINO_4SCALE = {
    **TORCHVISION_INPUT,
    "MODEL.BACKBONE.FREEZE_AT": 1,
    "MODEL.DINO.NUM_QUERIES": 900,
    "MODEL.DINO.NUM_FEATURE_LEVELS": 4,
    "MODEL.DINO.DN_NUMBER": 100,
    "MODEL.DINO.DN_BOX_NOISE_SCALE": 1.0,
    "MODEL.DINO.CLASS_WEIGHT": 1.0,
    "MODEL.DINO.L1_WEIGHT": 5.0,
    "MODEL.DINO.GIOU_WEIGHT": 2.0,
    "MODEL.DINO.COST_CLASS_WEIGHT": 2.0,
    "MODEL.DINO.COST_L1_WEIGHT": 5.0,
    "MODEL.DINO.COST_GIOU_WEIGHT": 2.0,
    "TEST.DETECTIONS_PER_IMAGE": 300,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BASE_LR": 1e-4,
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "SOLVER.WEIGHT_DECAY": 1e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 0.0,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.1,
    "SOLVER.WARMUP_ITERS": 0,
    "INPUT.TRAIN_AUGMENTATION": "sparse_rcnn",
    "INPUT.MIN_SIZE_TRAIN": SCALES_480_800,
    "INPUT.CROP.SIZE": [384, 600],
}
# fehmikahraman/CorrLoss configs/CorrLoss/yolact_r50_4x8_coco.py (55 epochs of 120k images).
YOLACT_4X8 = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.68, 116.78, 103.94],
    "MODEL.PIXEL_STD": [58.40, 57.12, 57.38],
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "MODEL.RESNETS.NORM": "BN",
    "MODEL.ANCHOR_GENERATOR.SIZES": [[24], [48], [96], [192], [384]],
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.YOLACT.NUM_HEAD_CONVS": 1,
    "MODEL.YOLACT.NUM_PROTOTYPES": 32,
    "MODEL.YOLACT.IOU_THRESHOLDS": [0.4, 0.5],
    "MODEL.YOLACT.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.YOLACT.NEG_POS_RATIO": 3.0,
    "MODEL.YOLACT.SMOOTH_L1_BETA": 1.0,
    "MODEL.YOLACT.BOX_LOSS_WEIGHT": 1.5,
    "MODEL.YOLACT.MASK_LOSS_WEIGHT": 6.125,
    "MODEL.YOLACT.SEMANTIC_LOSS_WEIGHT": 1.0,
    "MODEL.YOLACT.MAX_MASKS_TO_TRAIN": 100,
    "MODEL.YOLACT.TOPK_CANDIDATES_TEST": 1000,
    "MODEL.YOLACT.SCORE_THRESH_TEST": 0.05,
    "MODEL.YOLACT.NMS_THRESH_TEST": 0.5,
    "MODEL.YOLACT.NMS_TYPE": "fast",
    "MODEL.YOLACT.NMS_TOP_K": 200,
    "TEST.DETECTIONS_PER_IMAGE": 100,
    "MODEL.CORR_LOSS.GROUP_BY": "image",
    "MODEL.CORR_LOSS.GROUP_REDUCTION": "sum",
    "MODEL.CORR_LOSS.RANK_STRENGTH": 1.0,
    "SOLVER.OPTIMIZER": "SGD",
    "SOLVER.IMS_PER_BATCH": 32,
    "SOLVER.BASE_LR": 4e-3,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 35.0,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_FACTOR": 0.1,
    "SOLVER.MAX_ITER": 206250,
    "SOLVER.STEPS": (75000, 157500, 183750, 195000),
    "INPUT.MIN_SIZE_TRAIN": (550,),
    "INPUT.MIN_SIZE_TEST": 550,
    "INPUT.TRAIN_AUGMENTATION": "yolact",
}
DINO_12EP = {"SOLVER.MAX_ITER": 90000, "SOLVER.STEPS": (82500,)}
DINO_24EP = {"SOLVER.MAX_ITER": 180000, "SOLVER.STEPS": (165000,)}
# FelixCaae/AlignDETR aligndetr/configs/aligndetr_k=2_r50_4scale_12ep.py, models/aligndetr_r50.py.
ALIGN_DETR_DINO = {
    "MODEL.CLS_LOSS.TYPE": "ia_bce",
    "MODEL.CLS_LOSS.IA_BCE_ALPHA": 0.25,
    "MODEL.CLS_LOSS.IA_BCE_GAMMA": 2.0,
    "MODEL.DINO.ONE_TO_MANY_K": 2,
    "MODEL.DINO.PRIME_SAMPLE_TAU": 1.5,
    "MODEL.DINO.DN_LABEL_NOISE_RATIO": 0.5,
}
DCN = {
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, True, True, True],
    "MODEL.RESNETS.DEFORM_MODULATED": True,
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": 4,
    "INPUT.MIN_SIZE_TRAIN": tuple(range(480, 961, 32)),
}
CORR = "projects/CorrelationLoss/configs/"
ALIGN = "projects/AlignDETR/configs/"
RELEASED = {
    "configs/COCO-Detection/sparse_rcnn_R_50_FPN_100pro_1x_baseline.yaml": SPARSE_1X,
    CORR + "sparse_rcnn_R_50_FPN_100pro_1x_corr_spearman_0.2.yaml": SPARSE_1X,
    CORR + "sparse_rcnn_R_50_FPN_300pro_3x_corr_concordance_0.3.yaml": {
        **SPARSE_3X,
        "INPUT.MIN_SIZE_TRAIN": SCALES_480_800,
        "MODEL.CORR_LOSS.TYPE": "concordance",
        "MODEL.CORR_LOSS.WEIGHT": 0.3,
    },
    CORR + "sparse_rcnn_R_50_FPN_300pro_3x_corr_spearman_0.2.yaml": {
        **SPARSE_3X,
        "INPUT.MIN_SIZE_TRAIN": SCALES_480_800,
        "MODEL.CORR_LOSS.TYPE": "spearman",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
    },
    CORR + "sparse_rcnn_R_101_DCN_FPN_300pro_3x_corr_spearman_0.2.yaml": {
        **SPARSE_3X,
        **DCN,
        "MODEL.RESNETS.DEPTH": 101,
        "MODEL.CORR_LOSS.TYPE": "spearman",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
    },
    CORR + "sparse_rcnn_X_101_DCN_FPN_300pro_3x_corr_spearman_0.2.yaml": {
        **SPARSE_3X,
        **DCN,
        "MODEL.RESNETS.DEPTH": 101,
        "MODEL.RESNETS.NUM_GROUPS": 64,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 4,
        "MODEL.CORR_LOSS.TYPE": "spearman",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
    },
    "projects/AlignDETR/configs/sparse_rcnn_R_50_FPN_100pro_1x_ia_bce_mixed_k2_prime.yaml": {
        "MODEL.SPARSE_RCNN.CLASS_WEIGHT": 1.0,
        "MODEL.SPARSE_RCNN.L1_WEIGHT": 5.0,
        "MODEL.SPARSE_RCNN.GIOU_WEIGHT": 2.0,
        "MODEL.SPARSE_RCNN.COST_CLASS_WEIGHT": 2.0,
        "MODEL.SPARSE_RCNN.COST_L1_WEIGHT": 5.0,
        "MODEL.SPARSE_RCNN.COST_GIOU_WEIGHT": 2.0,
    },
    CORR + "atss_R_50_FPN_1x_corr_concordance_0.2.yaml": {
        **TORCHVISION_INPUT,
        **EPOCHS_12,
        **WARMUP_500,
        **SINGLE_SCALE,
        "SOLVER.BASE_LR": 0.01,
        "SOLVER.IMS_PER_BATCH": 16,
        "SOLVER.WEIGHT_DECAY_NORM": 1e-4,
        "SOLVER.CLIP_GRADIENTS.ENABLED": False,
        "MODEL.ATSS.TOPK": 9,
        "MODEL.ATSS.ANCHOR_SCALE": 8.0,
        "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
        "MODEL.ATSS.BOX_LOSS_WEIGHT": 2.0,
        "MODEL.ATSS.CENTERNESS_LOSS_WEIGHT": 1.0,
        "MODEL.ATSS.NMS_THRESH_TEST": 0.6,
        "MODEL.ATSS.SCORE_THRESH_TEST": 0.05,
        "MODEL.CORR_LOSS.TYPE": "concordance",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
        "MODEL.CORR_LOSS.GROUP_BY": "batch",
    },
    CORR + "atss_R_50_FPN_1x_noauxhead_corr_concordance_0.3.yaml": {
        "MODEL.ATSS.CENTERNESS_LOSS_WEIGHT": 0.0,
        "MODEL.CORR_LOSS.TYPE": "concordance",
        "MODEL.CORR_LOSS.WEIGHT": 0.3,
    },
    "configs/COCO-Detection/dino_R_50_4scale_12ep_baseline.yaml": {
        **DINO_4SCALE,
        **DINO_12EP,
        "MODEL.DINO.DN_LABEL_NOISE_RATIO": 0.2,
        "MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE": 10000.0,
    },
    "configs/COCO-Detection/dino_R_50_4scale_24ep_baseline.yaml": {
        **DINO_4SCALE,
        **DINO_24EP,
        "MODEL.DINO.DN_LABEL_NOISE_RATIO": 0.2,
        "MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE": 20.0,
        "MODEL.DINO.POSITION_EMBEDDING_OFFSET": 0.0,
    },
    ALIGN + "dino_R_50_4scale_12ep_ia_bce_mixed_k2_prime.yaml": {
        **DINO_4SCALE,
        **DINO_12EP,
        **ALIGN_DETR_DINO,
    },
    ALIGN + "dino_R_50_4scale_24ep_ia_bce_mixed_k2_prime.yaml": {
        **DINO_4SCALE,
        **DINO_24EP,
        **ALIGN_DETR_DINO,
        "MODEL.DINO.POSITION_EMBEDDING_TEMPERATURE": 10000.0,
        "MODEL.DINO.POSITION_EMBEDDING_OFFSET": -0.5,
    },
    CORR + "dino_R_50_4scale_12ep_corr_spearman_0.2.yaml": {
        **DINO_4SCALE,
        **DINO_12EP,
        "MODEL.CORR_LOSS.TYPE": "spearman",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
    },
    "configs/COCO-InstanceSegmentation/yolact_R_50_FPN_55ep_baseline.yaml": {
        **YOLACT_4X8,
        "MODEL.CORR_LOSS.WEIGHT": 0.0,
    },
    CORR + "yolact_R_50_FPN_55ep_corr_concordance_0.4.yaml": {
        **YOLACT_4X8,
        "MODEL.CORR_LOSS.TYPE": "concordance",
        "MODEL.CORR_LOSS.WEIGHT": 0.4,
    },
    CORR + "yolact_R_50_FPN_55ep_corr_spearman_0.2.yaml": {
        **YOLACT_4X8,
        "MODEL.CORR_LOSS.TYPE": "spearman",
        "MODEL.CORR_LOSS.WEIGHT": 0.2,
    },
}


@pytest.mark.parametrize("path", sorted(RELEASED))
def test_recipes_state_the_released_values(path):
    cfg = merged(os.path.join(REPO, path))
    wrong = {
        key: (cfg[key], expected)
        for key, expected in RELEASED[path].items()
        if (list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key])
        != (list(expected) if isinstance(expected, (list, tuple)) else pytest.approx(expected))
    }
    assert not wrong, f"{path}: (value, released value) {wrong}"
