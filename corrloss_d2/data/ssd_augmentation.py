"""The SSD-style training augmentation YOLACT is released with (mmdetection's
PhotoMetricDistortion, Expand and MinIoURandomCrop), as detectron2 augmentations."""

import functools
from typing import Sequence

import numpy as np
from detectron2.data import transforms as T
from PIL import Image

__all__ = ["BoxAwareAugmentations", "Expand", "PhotometricDistortion"]


def _distort(
    image: np.ndarray,
    *,
    brightness: float,
    contrast: float,
    contrast_first: bool,
    saturation: float,
    hue: float,
    channel_order: Sequence[int] = (0, 1, 2),
) -> np.ndarray:
    """(H, W, 3) uint8 image with the sampled distortions (1.0 / 0 / the identity order leave a
    step out); ``hue`` in PIL's 0-255 units."""
    result = image.astype(np.float32) + brightness
    if contrast_first:
        result *= contrast
    if saturation != 1.0 or hue != 0.0:
        hsv = np.asarray(
            Image.fromarray(np.clip(result, 0, 255).astype(np.uint8)).convert("HSV"), np.float32
        )
        hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0, 255)
        hsv[..., 0] = (hsv[..., 0] + hue) % 256  # PIL's hue runs over 0-255
        height, width = hsv.shape[:2]
        hsv_image = Image.frombytes("HSV", (width, height), hsv.astype(np.uint8).tobytes())
        result = np.asarray(hsv_image.convert("RGB"), np.float32)
    if not contrast_first:
        result *= contrast
    result = result[..., list(channel_order)]
    return np.clip(np.round(result), 0, 255).astype(np.uint8)


class PhotometricDistortion(T.Augmentation):
    """mmdetection's PhotoMetricDistortion: each with probability 0.5, a brightness shift in
    ±``brightness_delta``, a contrast factor in ``contrast_range`` (before or after the colour
    steps, at random), a saturation factor in ``saturation_range``, a hue shift in
    ±``hue_delta`` degrees and a random order of the channels. The colour steps assume RGB; on
    BGR the hue turns the other way, which its symmetric range makes the same augmentation."""

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: float = 18,
    ):
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta

    def get_transform(self, image):
        def maybe(draw, identity):
            return draw() if np.random.rand() < 0.5 else identity

        delta = self.brightness_delta
        return T.ColorTransform(
            functools.partial(
                _distort,
                brightness=maybe(lambda: np.random.uniform(-delta, delta), 0.0),
                contrast_first=bool(np.random.rand() < 0.5),
                contrast=maybe(lambda: np.random.uniform(*self.contrast_range), 1.0),
                saturation=maybe(lambda: np.random.uniform(*self.saturation_range), 1.0),
                hue=maybe(
                    lambda: np.random.uniform(-self.hue_delta, self.hue_delta) * 256 / 360, 0.0
                ),
                channel_order=maybe(lambda: tuple(np.random.permutation(3)), (0, 1, 2)),
            )
        )


class _FillPadTransform(T.PadTransform):
    """PadTransform whose image padding has one value per channel (``pad_value`` a sequence)."""

    def apply_image(self, img):
        padding = ((self.y0, self.y1), (self.x0, self.x1))
        channels = [
            np.pad(img[..., c], padding, constant_values=value)
            for c, value in enumerate(self.pad_value)
        ]
        return np.stack(channels, axis=-1).astype(img.dtype)


class Expand(T.Augmentation):
    """SSD's zoom-out: with probability ``prob`` the image is placed at a random position of a
    canvas ``ratio`` times its size (``ratio`` uniform in ``ratio_range``) filled with ``fill``
    (one value per channel, the dataset mean)."""

    def __init__(self, fill: Sequence[float], ratio_range=(1.0, 4.0), prob: float = 0.5):
        super().__init__()
        self.fill = tuple(float(v) for v in fill)
        self.ratio_range = tuple(ratio_range)
        self.prob = prob

    def get_transform(self, image):
        if np.random.rand() >= self.prob:
            return T.NoOpTransform()
        height, width = image.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        left = int(np.random.uniform(0, width * ratio - width))
        top = int(np.random.uniform(0, height * ratio - height))
        right = int(width * ratio) - width - left
        bottom = int(height * ratio) - height - top
        return _FillPadTransform(
            left, top, max(right, 0), max(bottom, 0), width, height, pad_value=self.fill
        )


class BoxAwareAugmentations(T.AugmentationList):
    """Augmentations that see the image's ground-truth boxes (MinIoURandomCrop needs them), which
    detectron2's DatasetMapper does not pass: the mapper sets :attr:`boxes` ((N, 4) XYXY) before
    each image (see :class:`corrloss_d2.data.augmentation.CheckedDatasetMapper`)."""

    boxes = None

    def __call__(self, aug_input):
        aug_input.boxes = self.boxes
        return super().__call__(aug_input)
