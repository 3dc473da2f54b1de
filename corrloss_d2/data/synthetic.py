"""The embedded default dataset "shapes": a generated, deterministic detection dataset.

Nothing is downloaded and nothing ships with the package: the images and COCO-format annotations
are drawn from a fixed seed the first time ``shapes_train`` or ``shapes_val`` is used, and cached
(:func:`cache_dir`; about 35 MB, about 30 s on one core). Every image is 160 x 160 px (JPEG) and
shows 2-10 objects of five classes (disk, square, triangle, ring, cross) with:

- sizes from small to large for the image (the longer side drawn log-uniformly from 14 to 120 px
  before occlusion; by COCO's area ranges 44% of the boxes are small, 53% medium, 3% large),
  random aspect ratios and rotations, large objects cut by the image border;
- colours jittered around a hue of their class (appearance correlates with the class, as in real
  data, but clutter may take any colour), shading and grain;
- overlaps and occlusion: objects are painted in order, the box is the extent of the *visible*
  part (as in COCO), and an object less than 35% visible is not annotated;
- instance masks: each annotation's ``segmentation`` is the exact set of its visible pixels
  (COCO RLE; use INPUT.MASK_FORMAT "bitmask"), so mask models train and are evaluated on it;
- clutter: textured backgrounds (gradient, stripes, noise) and unannotated strokes and specks,
  some painted over objects.

It is not a substitute for real data: the shapes are simple and the visual domain is narrow. It
is shaped like detection so that localisation quality varies between detections, and its
held-out split is large (600 images, 3314 boxes; train: 1500 images, 8041 boxes) so that the
correlation measures are stable, which the raccoon split (44 boxes) is not.
"""

import colorsys
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES_CLASSES",
    "SHAPES_SPLITS",
    "CACHE_DIR_ENV",
    "cache_dir",
    "generate_split",
    "ensure_shapes_dataset",
]

SHAPES_CLASSES = ("disk", "square", "triangle", "ring", "cross")
# split -> (number of images, seed). The held-out split is large on purpose (module docstring).
SHAPES_SPLITS = {"train": (1500, 1), "val": (600, 2)}
IMAGE_SIZE = 160
MIN_VISIBLE_FRACTION = 0.35
# Longer side of an object before occlusion, drawn log-uniformly (px).
OBJECT_SIZE_RANGE = (14, 120)
GENERATOR_VERSION = 5  # bump whenever the drawing changes: the cache key includes it
CACHE_DIR_ENV = "CORRLOSS_CACHE_DIR"


def cache_dir() -> Path:
    """$CORRLOSS_CACHE_DIR, else $XDG_CACHE_HOME/corrloss_d2, else ~/.cache/corrloss_d2."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "corrloss_d2"


def _background(rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: a colour gradient, optional stripes, pixel noise."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    start, end = rng.uniform(30, 225, size=(2, 3)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xx + np.sin(direction) * yy + 1.5) / 3.0
    image = start + ramp[..., None] * (end - start)
    if rng.random() < 0.6:
        period = rng.uniform(4, 24)
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) * IMAGE_SIZE * 2 * np.pi / period
        image += rng.uniform(10, 45) * np.sin(phase)[..., None]
    image += rng.normal(0, rng.uniform(3, 18), size=image.shape)
    return image


def _shape_polygon(
    kind: int, center: np.ndarray, half_size: np.ndarray, angle: float, rng: np.random.Generator
) -> np.ndarray:
    """(P, 2) outline of one object of class ``kind`` in pixel xy, rotated by ``angle``."""
    if kind in (0, 3):  # disk, ring: an ellipse
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        unit = np.stack([np.cos(t), np.sin(t)], axis=1)
    elif kind == 1:  # square (a rectangle after the aspect ratio)
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    elif kind == 2:  # triangle with a random apex position
        unit = np.array([[-1, 1], [1, 1], [rng.uniform(-0.8, 0.8), -1]])
    else:  # cross: a plus sign whose arm width varies
        w = rng.uniform(0.25, 0.45)
        unit = np.array(
            [
                [-w, -1],
                [w, -1],
                [w, -w],
                [1, -w],
                [1, w],
                [w, w],
                [w, 1],
                [-w, 1],
                [-w, w],
                [-1, w],
                [-1, -w],
                [-w, -w],
            ]
        )
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (unit * half_size) @ rotation.T + center


def _mask(polygon: np.ndarray, hole: np.ndarray = None) -> np.ndarray:
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    draw.polygon([tuple(p) for p in polygon], fill=1)
    if hole is not None:
        draw.polygon([tuple(p) for p in hole], fill=0)
    return np.asarray(canvas, dtype=bool)


def _class_color(kind: int, rng: np.random.Generator) -> np.ndarray:
    """A colour around the class's own hue: appearance that correlates with the class, as in real
    data, with jitter in hue, saturation and value."""
    hue = (kind / len(SHAPES_CLASSES) + rng.normal(0, 0.03)) % 1.0
    return 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.5, 1), rng.uniform(0.55, 1)))


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, color=None) -> None:
    """Fills ``mask`` with ``color`` (default: a random one), shading and grain (in place)."""
    if color is None:
        color = rng.uniform(0, 255, size=3)
    ys, xs = np.nonzero(mask)
    shade = 1.0 + rng.uniform(-0.35, 0.35) * (xs - xs.mean()) / max(np.ptp(xs), 1)
    grain = rng.normal(0, rng.uniform(2, 20), size=(len(ys), 3))
    image[ys, xs] = color * shade[:, None] + grain


def _clutter(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Unannotated strokes and specks (in place)."""
    canvas = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        if rng.random() < 0.6:
            points = rng.uniform(0, IMAGE_SIZE, size=(int(rng.integers(2, 5)), 2))
            draw.line([tuple(p) for p in points], fill=1, width=int(rng.integers(1, 3)))
        else:
            x, y = rng.uniform(0, IMAGE_SIZE, size=2)
            r = rng.uniform(1, 3.5)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=1)
    mask = np.asarray(canvas, dtype=bool)
    if mask.any():
        _paint(image, mask, rng)


def _draw_image(rng: np.random.Generator):
    """One image: (H, W, 3) uint8 and its annotations [(class, x0, y0, x1, y1, visible_area)]."""
    image = _background(rng)
    _clutter(image, rng, int(rng.integers(2, 10)))
    owner = np.full((IMAGE_SIZE, IMAGE_SIZE), -1, dtype=np.int16)  # object visible at each pixel
    kinds = []
    for index in range(int(rng.integers(2, 11))):
        kind = int(rng.integers(len(SHAPES_CLASSES)))
        longer = np.exp(rng.uniform(*np.log(OBJECT_SIZE_RANGE))) / 2
        half_size = longer * np.array([1.0, rng.uniform(0.55, 1.0)])[rng.permutation(2)]
        center = rng.uniform(0, 1, size=2) * IMAGE_SIZE  # large ones may be cut by the border
        angle = rng.uniform(0, 2 * np.pi) if kind != 0 else 0.0
        outline = _shape_polygon(kind, center, half_size, angle, rng)
        hole = (
            _shape_polygon(kind, center, half_size * rng.uniform(0.4, 0.65), angle, rng)
            if kind == 3
            else None
        )
        mask = _mask(outline, hole)
        if mask.sum() < 12:
            continue
        _paint(image, mask, rng, _class_color(kind, rng))
        owner[mask] = index
        kinds.append((index, kind, int(mask.sum())))
    _clutter(image, rng, int(rng.integers(0, 4)))  # strokes over objects: partial occlusion
    annotations = []
    for index, kind, full_area in kinds:
        visible = owner == index
        ys, xs = np.nonzero(visible)
        if len(ys) < MIN_VISIBLE_FRACTION * full_area:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        annotations.append((kind, *box, len(ys), _run_length_encoding(visible)))
    return np.clip(image, 0, 255).astype(np.uint8), annotations


def _run_length_encoding(mask: np.ndarray) -> dict:
    """COCO's compressed RLE of a (H, W) bool mask, with ``counts`` as text (JSON-ready)."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def generate_split(folder: Path, split: str, num_images: int, seed: int) -> Path:
    """Draws ``num_images`` images into ``folder/images/<split>/`` and writes
    ``folder/<split>.json`` (COCO format, category ids 1..5). Image ``i`` depends only on
    ``(seed, i)``, so any prefix of a split is the same whatever ``num_images`` is."""
    folder = Path(folder)
    image_folder = folder / "images" / split
    image_folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_index in range(num_images):
        image, objects = _draw_image(np.random.default_rng([seed, image_index]))
        file_name = f"{split}_{image_index:05d}.jpg"
        Image.fromarray(image).save(image_folder / file_name, quality=92)
        image_id = image_index + 1
        images.append(
            {"id": image_id, "file_name": file_name, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
        for kind, x0, y0, x1, y1, area, segmentation in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": kind + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": area,
                    "segmentation": segmentation,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES_CLASSES)]
    json_file = folder / f"{split}.json"
    with open(json_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_file


def _cache_key() -> str:
    recipe = json.dumps(
        [
            GENERATOR_VERSION,
            IMAGE_SIZE,
            MIN_VISIBLE_FRACTION,
            OBJECT_SIZE_RANGE,
            SHAPES_CLASSES,
            SHAPES_SPLITS,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def shapes_folder() -> Path:
    """Where the generated dataset lives: ``cache_dir()/shapes-<recipe hash>``."""
    return cache_dir() / f"shapes-{_cache_key()}"


def ensure_shapes_dataset() -> Dict[str, Path]:
    """Generates the dataset into :func:`shapes_folder` unless it is there; returns
    ``{"json:<split>": annotation file, "images:<split>": image folder}`` for every split.
    Safe when several processes call it at once: each draws into a temporary folder and the first
    to finish renames it into place."""
    folder = shapes_folder()
    if not (folder / "COMPLETE").exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".shapes-", dir=folder.parent))
        for split, (num_images, seed) in SHAPES_SPLITS.items():
            generate_split(staging, split, num_images, seed)
        (staging / "COMPLETE").touch()
        try:
            os.rename(staging, folder)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    paths: Dict[str, Path] = {}
    for split in SHAPES_SPLITS:
        paths[f"json:{split}"] = folder / f"{split}.json"
        paths[f"images:{split}"] = folder / "images" / split
    return paths


def split_names() -> List[str]:
    """Dataset names registered for the splits: ``shapes_train``, ``shapes_val``."""
    return [f"shapes_{split}" for split in SHAPES_SPLITS]
