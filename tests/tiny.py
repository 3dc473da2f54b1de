"""Tiny CPU models, synthetic batches and tiny train_net.py runs: the builders the tests share
(through the fixtures of ``tests/conftest.py``, and imported directly where a fixture cannot
reach: module-level parameters and the functions spawned processes run)."""

import os

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

import corrloss_d2  # noqa: F401
from corrloss_d2 import add_corrloss_config
from corrloss_d2.data import synthetic
from tests.architectures import ARCHITECTURES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# train_net.py overrides for runs of a few iterations on small images.
FAST = [
    "INPUT.MIN_SIZE_TRAIN",
    "(160,)",
    "INPUT.MAX_SIZE_TRAIN",
    "224",
    "INPUT.MIN_SIZE_TEST",
    "160",
    "INPUT.MAX_SIZE_TEST",
    "224",
    "SOLVER.WARMUP_ITERS",
    "10",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SOLVER.STEPS",
    "()",
]
NUM_CLASSES = 3


def tiny_cfg(arch: str, *opts):
    """ResNet-18/GN from scratch, 32-channel FPN, 1-conv (or 2-stage, 32-wide) heads (the
    architecture's ``tiny_opts``, tests/architectures.py), 3 classes, on the CPU; one ρ per
    process's batch, whatever size a test gives it."""
    cfg = get_cfg()
    add_corrloss_config(cfg)
    spec = ARCHITECTURES[arch]
    cfg.merge_from_file(os.path.join(REPO, spec.base_config))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.CORR_LOSS.IMAGES_PER_RHO",
            0,
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.RESNETS.NORM",
            "GN",
            "MODEL.BACKBONE.FREEZE_AT",
            0,
            "MODEL.FPN.OUT_CHANNELS",
            32,
            spec.num_classes_key,
            NUM_CLASSES,
            *spec.tiny_opts,
            *opts,
        ]
    )
    return cfg


def tiny_model(arch: str, *opts, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(arch, *opts))


def ellipse_masks(boxes: torch.Tensor, height: int, width: int) -> BitMasks:
    """The ellipses inscribed in ``boxes`` (N, 4), as (N, height, width) bit masks."""
    rows = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    cols = torch.arange(width, dtype=torch.float32)[None] + 0.5
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = ((boxes[:, 2:] - boxes[:, :2]) / 2).clamp(min=0.5)
    x = (cols[None] - centre[:, 0, None, None]) / half[:, 0, None, None]
    y = (rows[None] - centre[:, 1, None, None]) / half[:, 1, None, None]
    return BitMasks(x**2 + y**2 <= 1)


def synthetic_batch(num_images: int = 2, empty=(), size: int = 96, seed: int = 0):
    """Images with 1-3 random boxes each and their inscribed ellipses as ``gt_masks``; indices
    in ``empty`` get no boxes."""
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(num_images):
        image = torch.rand(3, size, size + 16, generator=gen) * 255
        n = 0 if i in empty else int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * size * 0.5
        wh = 16 + torch.rand(n, 2, generator=gen) * size * 0.45
        instances = Instances((size, size + 16))
        instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        instances.gt_classes = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
        instances.gt_masks = ellipse_masks(instances.gt_boxes.tensor, size, size + 16)
        batch.append({"image": image, "instances": instances, "height": size, "width": size + 16})
    return batch


def assert_top_k_detections_at_requested_size(model, batch):
    """An NMS-free tiny model (TEST.DETECTIONS_PER_IMAGE 50) in inference, asked for 48x56
    outputs: exactly 50 detections per image, sorted by score, of the tiny classes, with boxes
    inside the requested size."""
    model.eval()
    with torch.no_grad():
        results = model([{**x, "height": 48, "width": 56} for x in batch])
    for result in results:
        instances = result["instances"]
        assert len(instances) == 50 and instances.image_size == (48, 56)
        assert torch.all(instances.scores[:-1] >= instances.scores[1:])
        assert instances.pred_classes.max() < NUM_CLASSES
        boxes = instances.pred_boxes.tensor
        assert boxes[:, 0::2].max() <= 56 and boxes[:, 1::2].max() <= 48 and boxes.min() >= 0


def three_boxes_and_an_empty_image():
    """Targets of two 100x80 images, the first with 3 ground truths of classes 0, 1, 1, the second
    without: ([Instances, Instances], image_whwh (2, 4)), for the criteria's reference tests."""
    gt = Instances(
        (80, 100),
        gt_boxes=Boxes(torch.tensor([[10.0, 10, 40, 50], [50, 20, 90, 70], [30, 5, 60, 30]])),
        gt_classes=torch.tensor([0, 1, 1]),
    )
    empty = Instances(
        (80, 100), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0, dtype=torch.int64)
    )
    return [gt, empty], torch.tensor([[100.0, 80, 100, 80]] * 2)


def copypaste_box_ap(log: str) -> float:
    """The box AP that detectron2's evaluation printed in a train_net.py output (its
    ``copypaste: AP,AP50,...`` table)."""
    values = log.split("copypaste: AP,AP50,AP75,APs,APm,APl")[1].splitlines()[1]
    return float(values.split("copypaste: ")[1].split(",")[0])


def shapes_heads(folder, heads) -> str:
    """Draws the first ``heads[split]`` images of each "shapes" split into ``folder`` with the
    generator and the split's seed (the same images as the cached dataset's first ones: its
    splits are prefix-stable), and returns the $CORRLOSS_COCO_DATASETS value that registers them
    as ``shapes_<split>_head`` for train_net.py runs."""
    entries = []
    for split, num_images in heads.items():
        seed = synthetic.SHAPES_SPLITS[split][1]
        json_file = synthetic.generate_split(folder, split, num_images, seed)
        entries.append(f"shapes_{split}_head={json_file}:{os.path.join(folder, 'images', split)}")
    return ";".join(entries)
