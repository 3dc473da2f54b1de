"""Config keys of corrloss_d2 (yacs, Detectron2 style), one module per family, as detectron2's
projects add theirs (DensePose's add_densepose_config, PointRend's add_pointrend_config).

- ``common``: the keys every family shares (the correlation term, the classification loss, the
  optimiser, the augmentation, the correlation evaluation).
- one module per family: ``fcos``, ``atss``, ``sparse_rcnn``, ``dino``, ``yolact``. RetinaNet has
  no keys of its own: it reads detectron2's MODEL.RETINANET.
- keys two families share: ``dense_head`` (FCOS, ATSS) and ``set_matching`` (Sparse R-CNN, DINO);
  ``checks``: the checks all modules use. A family module never imports another family's.

``docs/config_keys.md`` lists every key with its default and comment (``python
tools/config_reference.py`` writes it from these modules).
"""

import os
from typing import Dict, Sequence

import yaml
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

from ..errors import ConfigError, MissingFileError
from .atss import add_atss_config, validate_atss_config
from .checks import is_number
from .common import GROUP_REDUCTIONS, GROUPINGS, add_common_config, validate_common_config
from .dino import DINO_GROUP_NORM_GROUPS, add_dino_config, validate_dino_config
from .fcos import add_fcos_config, validate_fcos_config
from .sparse_rcnn import add_sparse_rcnn_config, validate_sparse_rcnn_config
from .yolact import add_yolact_config, validate_yolact_config

__all__ = [
    "add_corrloss_config",
    "validate_corrloss_config",
    "load_corrloss_config",
    "flatten_config",
    "is_number",
    "GROUPINGS",
    "GROUP_REDUCTIONS",
    "DINO_GROUP_NORM_GROUPS",
    "SECTIONS",
]

# Each module's (add, validate) pair, in the order keys are added and checked (and listed in
# docs/config_keys.md): the shared keys, then the families. RetinaNet has none of its own.
SECTIONS = (
    (add_common_config, validate_common_config),
    (add_fcos_config, validate_fcos_config),
    (add_atss_config, validate_atss_config),
    (add_sparse_rcnn_config, validate_sparse_rcnn_config),
    (add_dino_config, validate_dino_config),
    (add_yolact_config, validate_yolact_config),
)


def flatten_config(node: CN, prefix: str = "") -> Dict[str, object]:
    """Every leaf key of ``node``, dotted from its root (``"MODEL.CORR_LOSS.WEIGHT"``), with its
    value."""
    flat = {}
    for key, value in node.items():
        if isinstance(value, CN):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def add_corrloss_config(cfg: CN) -> None:
    """Adds MODEL.CORR_LOSS, MODEL.CLS_LOSS, MODEL.FCOS, MODEL.ATSS, MODEL.SPARSE_RCNN,
    MODEL.DINO, MODEL.YOLACT and the optimiser and augmentation choices (SOLVER.OPTIMIZER,
    SOLVER.BACKBONE_MULTIPLIER, INPUT.TRAIN_AUGMENTATION, INPUT.MIN_BOX_SIDE_TRAIN)
    and TEST.CORRELATION_EVAL to ``cfg`` in place (call before ``merge_from_file``). Idempotent."""
    if cfg.MODEL.get("CORR_LOSS") is not None:
        return
    for add, _ in SECTIONS:
        add(cfg)


def validate_corrloss_config(cfg: CN) -> None:
    """Raises :class:`~corrloss_d2.errors.ConfigError` (a ValueError) naming the key, the value
    and the allowed values."""
    if cfg.MODEL.get("CORR_LOSS") is None:
        raise KeyError(
            f"cfg.MODEL.META_ARCHITECTURE = {cfg.MODEL.META_ARCHITECTURE!r} needs the "
            "corrloss_d2 config keys: call corrloss_d2.add_corrloss_config(cfg) before "
            "cfg.merge_from_file(...)"
        )
    for _, validate in SECTIONS:
        validate(cfg)


# Why a value yacs rejects may be wrong (yacs raises ValueError only for a type mismatch).
_MERGE_HINTS = {
    ValueError: " Give the key a value of its default's type: a float key needs a "
    "number with a decimal point (1.0, not 1 or '1.0'), a list key a list."
}


def load_corrloss_config(config_file: str, opts: Sequence = ()) -> CN:
    """What ``train_net.py`` runs: ``get_cfg()``, :func:`add_corrloss_config`,
    ``merge_from_file(config_file)``, ``merge_from_list(opts)`` and
    :func:`validate_corrloss_config`. A missing file raises :class:`MissingFileError`; an unknown
    key, a value of the wrong type or an invalid value raises :class:`ConfigError` naming the file
    or override it came from."""
    if not config_file or not os.path.isfile(config_file):
        given = f"config file {config_file!r} does not exist" if config_file else "no config file"
        raise MissingFileError(
            f"{given} (relative paths start at {os.getcwd()}); give the path of "
            "a yaml config, e.g. "
            "configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml"
        )
    cfg = get_cfg()
    add_corrloss_config(cfg)  # before merging: the yaml files use MODEL.CORR_LOSS/CLS_LOSS/FCOS
    for source, merge, arg in (
        (f"config file {config_file}", cfg.merge_from_file, config_file),
        ("command-line overrides", cfg.merge_from_list, list(opts)),
    ):
        try:
            merge(arg)
        except (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError) as error:
            text = error.args[0] if len(error.args) == 1 else str(error)  # KeyError would quote it
            raise ConfigError(f"{source}: {text}.{_MERGE_HINTS.get(type(error), '')}") from error
    validate_corrloss_config(cfg)
    return cfg
