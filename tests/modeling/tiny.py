"""Tiny CPU models and synthetic batches for the modeling tests."""
import os

import torch

import corrloss_d2  # noqa: F401
from corrloss_d2 import add_corrloss_config
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASES = {"CorrRetinaNet": "Base-CorrRetinaNet.yaml", "CorrFCOS": "Base-CorrFCOS.yaml"}
NUM_CLASSES = 3


def tiny_cfg(arch: str, *opts):
    """ResNet-18/GN from scratch, 32-channel FPN, 1-conv heads, 3 classes, on the CPU."""
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", BASES[arch]))
    node = "RETINANET" if arch == "CorrRetinaNet" else "FCOS"
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
        "MODEL.RESNETS.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", 0, "MODEL.FPN.OUT_CHANNELS", 32,
        f"MODEL.{node}.NUM_CLASSES", NUM_CLASSES, f"MODEL.{node}.NUM_CONVS", 1,
        "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128], [256]], *opts])
    return cfg


def tiny_model(arch: str, *opts, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny_cfg(arch, *opts))


def synthetic_batch(num_images: int = 2, empty=(), size: int = 96, seed: int = 0):
    """Images with 1-3 random boxes each; indices in ``empty`` get no boxes."""
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
        batch.append({"image": image, "instances": instances, "height": size, "width": size + 16})
    return batch
