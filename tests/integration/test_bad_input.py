"""The bad-input catalogue: every wrong input below stops train_net.py (or the library call a user
makes) early with an error that names the problem and the fix (no deep traceback, no NaN, no
silent wrong number); boxes with zero width or height are dropped with a logged count instead.

Each bad input, what catches it, and its tests here:

- unknown correlation or classification loss type; λ (MODEL.CORR_LOSS.WEIGHT) negative or not a
  number; soft-rank strength <= 0; k < 0, τ < 0 (MODEL.SPARSE_RCNN): ``load_corrloss_config`` /
  ``validate_corrloss_config`` (also at model build: tests/modeling/test_configs.py);
  ``test_invalid_config_value_*``.
- a config file that does not exist: ``load_corrloss_config``, before any process starts;
  ``test_missing_config_file_*``.
- dataset classes that do not fit the model's NUM_CLASSES key (every meta-architecture's, as
  tests/architectures.py lists them):
  ``corrloss_d2.data.checks.check_datasets`` from the trainer's loaders;
  ``test_dataset_classes_*``, ``test_class_count_*``.
- missing dataset folders or files: the dataset loaders (``corrloss_d2.data.datasets``);
  ``test_missing_data_root_*``, ``test_missing_listed_dataset_*``.
- annotation entries with missing or malformed fields: ``corrloss_d2.data.coco_json`` (every
  loader); ``test_bad_annotation_*``, ``test_each_bad_annotation_*``, ``test_evaluated_dataset_*``.
- images that cannot be read (truncated, not an image, missing): ``CheckedDatasetMapper`` (train
  and test mappers); ``test_unreadable_image_*``, ``test_mappers_name_*``.
- an empty dataset, no images or no image with a box: ``coco_json`` /
  ``build_checked_train_loader``; ``test_dataset_without_images_*``, ``test_no_image_with_a_box_*``.
- boxes with zero width or height: dropped by ``coco_json`` with a logged count;
  ``test_zero_size_boxes_*``.
- any of these met inside the processes of ``--num-gpus N``:
  ``corrloss_d2.engine.input_error_message``; ``test_dataset_error_in_every_process_*``,
  ``test_input_error_message_*``.

Through train_net.py (a subprocess) runs one case of each kind whose message crosses a process
boundary: config, dataset, a loader worker's image error, and ``--num-gpus 2``; the others are
checked in this process.
"""

import json
import logging
import math
import os
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from PIL import Image
from torch.multiprocessing import ProcessRaisedException

from corrloss_d2.config import load_corrloss_config, validate_corrloss_config
from corrloss_d2.data import (
    build_checked_train_loader,
    check_datasets,
    load_checked_coco_json,
    register_corrloss_datasets,
)
from corrloss_d2.data.augmentation import build_test_mapper, build_train_mapper
from corrloss_d2.data.checks import num_classes_key
from corrloss_d2.data.datasets import COCO_DATASETS_ENV, DATA_ROOT_ENV, DATASET_FILES, _loader
from corrloss_d2.engine import launch as engine_launch
from corrloss_d2.errors import ConfigError, DatasetError, ImageReadError, MissingFileError
from tests.architectures import ARCHITECTURES
from tests.tiny import REPO, tiny_cfg

CPU_CONFIG = os.path.join(REPO, "configs", "CPU", "retinanet_R_18_FPN_raccoon_scratch.yaml")
# 1-2 iterations on 64-pixel images, no evaluation.
TINY_RUN = [
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "96",
    "SOLVER.MAX_ITER",
    "1",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATASETS.TEST",
    "()",
]
IMAGE_SIZE = (64, 80)  # height, width


def write_dataset(
    folder, boxes=((8, 10, 30, 20), (40, 30, 20, 25)), num_images=2, num_classes=1, edit=None
):
    """A COCO-format dataset of random JPEGs under ``folder``, each image with ``boxes``
    ([x, y, w, h]); ``edit(data)`` may spoil the json first. Returns (json file, image folder)."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(num_classes)],
    }
    for i in range(num_images):
        pixels = rng.integers(0, 255, (*IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.jpg", quality=90)
        data["images"].append(
            {"id": i + 1, "file_name": f"{i}.jpg", "height": IMAGE_SIZE[0], "width": IMAGE_SIZE[1]}
        )
        for box in boxes:
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": list(box),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    if edit is not None:
        edit(data)
    json_file = folder / "annotations.json"
    json_file.write_text(json.dumps(data))
    return json_file, images


@pytest.fixture
def register(monkeypatch):
    """register(name, json_file, images): registers a dataset the way $CORRLOSS_COCO_DATASETS
    does (this package's checked loader); removed after the test."""
    names = []

    def register_dataset(name, json_file, images):
        monkeypatch.setenv(COCO_DATASETS_ENV, f"{name}={json_file}:{images}")
        register_corrloss_datasets()
        names.append(name)
        return name

    yield register_dataset
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def failure(train_net):
    """Runs train_net.py expecting it to fail; returns its error message, which ends the output.
    Unless ``traceback``, the output holds no traceback at all. Every failure expected here is
    built into the input (a missing file, a wrong value, a spoiled image, a dataset with the wrong
    classes) and met before the first training step: no CPU's rounding or load decides it."""

    def run(*args, cwd, traceback=False):
        output = train_net(*args, cwd=cwd, expect_failure=True)
        assert "train_net.py: error: " in output, output[-3000:]
        assert traceback or "Traceback" not in output, output[-3000:]
        return output.rsplit("train_net.py: error: ", 1)[1]

    return run


def with_dataset(monkeypatch, name, json_file, images):
    """train_net.py arguments that train the CPU RetinaNet on a $CORRLOSS_COCO_DATASETS dataset
    (the variable is set for the subprocess)."""
    monkeypatch.setenv(COCO_DATASETS_ENV, f"{name}={json_file}:{images}")
    return ["--config-file", CPU_CONFIG, *TINY_RUN, "DATASETS.TRAIN", f"('{name}',)"]


# --- config values and files -------------------------------------------------------------------


@pytest.fixture
def no_launch(monkeypatch):
    """train_net.py's entry point (:func:`invoke`) in this process must stop at the config: never
    start training."""
    monkeypatch.setattr(
        engine_launch, "launch", lambda *args, **kwargs: pytest.fail("config accepted")
    )


def invoke(argv):
    """What train_net.py runs, in this process."""
    engine_launch.launch_main(lambda args: None, default_argument_parser().parse_args(argv))


@pytest.mark.parametrize(
    "key,value,message",
    [
        (
            "MODEL.CORR_LOSS.TYPE",
            "kendall",
            r"MODEL.CORR_LOSS.TYPE = 'kendall'.*'pearson', 'concordance'",
        ),
        (
            "MODEL.CLS_LOSS.TYPE",
            "ce",
            r"MODEL.CLS_LOSS.TYPE = 'ce'.*'focal', 'ia_bce', 'qfl', 'vfl'",
        ),
        (
            "MODEL.CORR_LOSS.WEIGHT",
            "-0.1",
            r"MODEL.CORR_LOSS.WEIGHT = -0.1 is not valid.*a number >= 0",
        ),
        (
            "MODEL.CORR_LOSS.WEIGHT",
            "abc",
            r"command-line overrides: Type mismatch .* for config key: "
            r"MODEL.CORR_LOSS.WEIGHT\. Give the key a value of its",
        ),
        ("MODEL.CORR_LOSS.WEIGHT", "1", r"MODEL.CORR_LOSS.WEIGHT\. .*decimal point \(1.0, not 1"),
        ("MODEL.CORR_LOSS.RANK_STRENGTH", "0.0", r"RANK_STRENGTH = 0.0 is not valid.*a number > 0"),
        (
            "MODEL.CORR_LOSS.RANK_STRENGTH",
            "-1.0",
            r"RANK_STRENGTH = -1.0 is not valid.*a number > 0",
        ),
        ("MODEL.SPARSE_RCNN.ONE_TO_MANY_K", "-1", r"ONE_TO_MANY_K = -1 is not valid.*integer >= 0"),
        (
            "MODEL.SPARSE_RCNN.PRIME_SAMPLE_TAU",
            "-0.5",
            r"PRIME_SAMPLE_TAU = -0.5 is not valid.*>= 0",
        ),
        (
            "MODEL.CORR_LOSS.WEIGHTS",
            "0.1",
            r"command-line overrides: Non-existent key: MODEL.CORR_LOSS.WEIGHTS",
        ),
    ],
)
def test_invalid_config_value_ends_train_net_with_its_message(key, value, message, no_launch):
    """train_net.py's own entry point; config errors stop it before any process starts."""
    with pytest.raises(SystemExit) as exit_:
        invoke(["--config-file", CPU_CONFIG, key, value])
    assert str(exit_.value.code).startswith("train_net.py: error: ")
    assert re.search(message, str(exit_.value.code)), exit_.value.code


@pytest.mark.parametrize("value", ["abc", "0.1", float("nan"), float("inf"), None])
def test_invalid_config_value_set_in_code_is_named_not_a_type_error(value):
    cfg = tiny_cfg("CorrRetinaNet")
    cfg.MODEL.CORR_LOSS.WEIGHT = value
    with pytest.raises(
        ConfigError,
        match=r"cfg.MODEL.CORR_LOSS.WEIGHT = .* is not valid; allowed "
        r"values: a number >= 0",
    ):
        validate_corrloss_config(cfg)


def test_invalid_config_value_in_a_yaml_file_names_the_file(tmp_path, no_launch):
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{CPU_CONFIG}"\nMODEL:\n  CORR_LOSS:\n    WEIGHT: abc\n')
    with pytest.raises(SystemExit, match=rf"config file {config}: Type mismatch .*WEIGHT"):
        invoke(["--config-file", str(config)])


@pytest.mark.slow
def test_missing_config_file_is_one_line(tmp_path, failure):
    message = failure("--config-file", "nope.yaml", cwd=tmp_path)
    assert message.strip() == (
        f"config file 'nope.yaml' does not exist (relative paths start at "
        f"{tmp_path}); give the path of a yaml config, e.g. "
        "configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml"
    )


def test_missing_config_file_raises_missing_file_error_in_process(no_launch):
    with pytest.raises(SystemExit, match="no config file"):
        invoke([])
    with pytest.raises(MissingFileError):
        load_corrloss_config("nope.yaml")


# --- dataset classes against the model ----------------------------------------------------------


@pytest.mark.slow
def test_dataset_classes_must_fit_the_model_through_train_net(tmp_path, failure):
    """The 1-class raccoon config trained on the 80-class coco128 (was: IndexError in dense.py)."""
    message = failure(
        "--config-file", CPU_CONFIG, *TINY_RUN, "DATASETS.TRAIN", "('coco128_train',)", cwd=tmp_path
    )
    assert message.strip() == (
        "dataset 'coco128_train' (DATASETS.TRAIN) has 80 classes (person, bicycle, car, "
        "motorcycle, airplane, ...) but CorrRetinaNet has MODEL.RETINANET.NUM_CLASSES = 1: set "
        "MODEL.RETINANET.NUM_CLASSES 80 (config file or command line), or use a dataset of 1 "
        "class(es)"
    )


@pytest.mark.slow
def test_dataset_error_in_every_process_of_a_multi_process_run_is_one_line(tmp_path, failure):
    """--num-gpus 2 (GLOO on CPU): the error raised in the spawned processes reaches the command
    line as the same one line, without the processes' tracebacks."""
    message = failure(
        "--num-gpus",
        "2",
        "--config-file",
        CPU_CONFIG,
        *TINY_RUN,
        "DATASETS.TRAIN",
        "('coco128_train',)",
        cwd=tmp_path,
    )
    assert message.strip().startswith("dataset 'coco128_train' (DATASETS.TRAIN) has 80 classes")
    assert message.strip().endswith("or use a dataset of 1 class(es)")


def test_input_error_message_finds_the_error_behind_a_traceback():
    raised = ProcessRaisedException(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):"
        '\n  File "x.py", line 1, in f\ncorrloss_d2.errors.ImageReadError: cannot read image '
        "'a.jpg'\n",
        error_index=1,
        error_pid=7,
    )
    assert engine_launch.input_error_message(raised) == "cannot read image 'a.jpg'"
    assert engine_launch.input_error_message(DatasetError("no image")) == "no image"
    for other in (
        "Traceback ...\nValueError: corrloss_d2.errors is fine\n",
        "Traceback ...\ncorrloss_d2.errors.NotAnError: x\n",
    ):
        assert engine_launch.input_error_message(ProcessRaisedException(other, 0, 7)) is None


@pytest.mark.parametrize(
    "arch,key", [(name, spec.num_classes_key) for name, spec in ARCHITECTURES.items()]
)
def test_class_count_is_checked_for_every_meta_architecture(tmp_path, register, arch, key):
    name = register("two_classes", *write_dataset(tmp_path, num_classes=2))
    cfg = tiny_cfg(arch, "DATASETS.TRAIN", (), "DATASETS.TEST", (name,))  # tiny_cfg: 3 classes
    with pytest.raises(
        DatasetError,
        match=rf"dataset 'two_classes' \(DATASETS.TEST\) has 2 classes "
        rf"\(class0, class1\) but {arch} has {key} = 3: set {key} 2",
    ):
        check_datasets(cfg)
    check_datasets(tiny_cfg(arch, "DATASETS.TRAIN", (name,), "DATASETS.TEST", (), key, 2))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_mask_model_on_a_dataset_without_masks_says_which_field_is_missing(
    tmp_path, register, arch
):
    name = register("boxes_only", *write_dataset(tmp_path, num_classes=3))
    cfg = tiny_cfg(arch, "DATASETS.TRAIN", (), "DATASETS.TEST", (name,))
    if ARCHITECTURES[arch].masks:
        with pytest.raises(DatasetError, match=r"no 'segmentation' \(needs the instance's mask"):
            check_datasets(cfg)
    else:
        check_datasets(cfg)  # a box model needs no masks


def test_class_count_keys_of_detectron2_models_and_unknown_datasets():
    assert num_classes_key("RetinaNet") == "MODEL.RETINANET.NUM_CLASSES"
    assert num_classes_key("GeneralizedRCNN") == "MODEL.ROI_HEADS.NUM_CLASSES"
    assert num_classes_key("NoSuchArchitecture") is None
    cfg = tiny_cfg("CorrFCOS", "DATASETS.TRAIN", ("no_such_dataset",))
    with pytest.raises(
        DatasetError,
        match=r"'no_such_dataset' \(DATASETS.TRAIN\) is not registered; "
        rf"register it first .*\${COCO_DATASETS_ENV}",
    ):
        check_datasets(cfg)


# --- dataset folders and annotation files ------------------------------------------------------


def test_missing_data_root_names_the_path_and_the_variable(tmp_path):
    root = tmp_path / "no_data"
    json_rel, images_rel = DATASET_FILES["raccoon_train"]
    with pytest.raises(MissingFileError) as error:
        _loader("raccoon_train", root, root / json_rel, root / images_rel)()
    assert str(error.value).startswith(
        f"{root / json_rel} does not exist. Dataset 'raccoon_train' needs it: set {DATA_ROOT_ENV} "
        f"to the folder that holds raccoon/ (now {root})"
    )


def test_missing_listed_dataset_folder_names_the_entry_to_fix(tmp_path, register):
    json_file, _ = write_dataset(tmp_path)
    name = register("listed_missing", json_file, tmp_path / "no_images")
    with pytest.raises(
        MissingFileError,
        match=rf"{tmp_path / 'no_images'} does not exist. Dataset "
        rf"'listed_missing' was registered from "
        rf"\${COCO_DATASETS_ENV}",
    ):
        DatasetCatalog.get(name)


def drop(kind, index, field):
    return lambda data: data[kind][index].pop(field)


def put(kind, index, field, value):
    return lambda data: data[kind][index].__setitem__(field, value)


@pytest.mark.parametrize(
    "edit,problem",
    [
        (
            drop("annotations", 0, "bbox"),
            "annotations[0] (id 1): no 'bbox' (needs [x, y, width, height] in pixels)",
        ),
        (
            drop("annotations", 1, "category_id"),
            "annotations[1] (id 2): no 'category_id' (needs the id of its class in 'categories')",
        ),
        (drop("annotations", 0, "image_id"), "annotations[0] (id 1): no 'image_id'"),
        (drop("annotations", 0, "id"), "annotations[0]: no 'id' (needs a unique id)"),
        (
            drop("images", 1, "file_name"),
            "images[1] (id 2): no 'file_name' (needs the image's path relative to the image "
            "folder)",
        ),
        (
            drop("images", 0, "height"),
            "images[0] (id 1, file_name '0.jpg'): no 'height' (needs the image height in pixels",
        ),
        (drop("categories", 0, "name"), "categories[0] (id 1): no 'name' (needs the class name)"),
        (
            put("annotations", 0, "category_id", 7),
            "annotations[0] (id 1): 'category_id' = 7 is not the id of its class in 'categories'",
        ),
        (
            put("annotations", 2, "image_id", 99),
            "annotations[2] (id 3): 'image_id' = 99 is not the id of its image in 'images'",
        ),
        (
            put("annotations", 0, "bbox", [1, 2, 3]),
            "annotations[0] (id 1): 'bbox' = [1, 2, 3] is not [x, y, width, height]",
        ),
        (
            put("annotations", 0, "bbox", ["1", 2, 3, 4]),
            "'bbox' = ['1', 2, 3, 4] is not [x, y, width, height]",
        ),
        (
            put("annotations", 0, "bbox", [1, 2, float("nan"), 4]),
            "'bbox' = [1, 2, nan, 4] is not [x, y, width, height]",
        ),
        (
            put("annotations", 0, "bbox", [40, 30, -20, 25]),
            "'bbox' = [40, 30, -20, 25] has a negative width or height (COCO boxes are "
            "[x, y, width, height], not corners)",
        ),
        (
            put("annotations", 0, "iscrowd", "0"),
            "annotations[0] (id 1): 'iscrowd' = '0' is not 0, or 1 for a crowd region",
        ),
        (put("annotations", 1, "id", 1), "annotations[1] (id 1): the same id as an earlier entry"),
        (
            put("images", 0, "width", 0),
            "images[0] (id 1, file_name '0.jpg'): 'width' = 0 is not the image width in pixels, "
            "a number > 0",
        ),
        (lambda data: data.pop("categories"), "top level: no 'categories' list"),
        (lambda data: data.__setitem__("images", {}), "top level: 'images' is a dict, not a list"),
    ],
)
def test_each_bad_annotation_names_file_entry_and_field(tmp_path, edit, problem):
    json_file, images = write_dataset(tmp_path, edit=edit)
    with pytest.raises(DatasetError) as error:
        load_checked_coco_json(json_file, images, "spoilt")
    message = str(error.value)
    assert message.startswith(
        f"{json_file} is not a valid COCO detection annotation file; fix "
        "these 1 problem(s) in it:\n  "
    )
    assert problem in message
    assert message.endswith("each category id and name)")


def test_bad_annotations_are_listed_up_to_five_and_counted(tmp_path):
    def spoil(data):
        for annotation in data["annotations"]:
            del annotation["bbox"]

    json_file, images = write_dataset(tmp_path, num_images=4, edit=spoil)
    with pytest.raises(
        DatasetError,
        match=r"fix these 8 problem\(s\) in it:(\n  annotations\[\d\] .*no "
        r"'bbox'.*){5}\n  \.\.\. and 3 more\n",
    ):
        load_checked_coco_json(json_file, images, "spoilt")


def test_annotation_file_that_is_not_json_is_named(tmp_path):
    json_file = tmp_path / "annotations.json"
    json_file.write_text('{"images": [')
    with pytest.raises(
        DatasetError, match=rf"{json_file} is not valid JSON \(Expecting value: line 1"
    ):
        load_checked_coco_json(json_file, tmp_path, "spoilt")


def test_every_loader_of_this_package_checks_its_annotation_file(tmp_path):
    json_rel, images_rel = DATASET_FILES["raccoon_val"]
    (tmp_path / images_rel).mkdir(parents=True)
    (tmp_path / json_rel).parent.mkdir(parents=True)
    (tmp_path / json_rel).write_text(json.dumps({"images": [{"id": 1}], "categories": []}))
    load = _loader("raccoon_val", tmp_path, tmp_path / json_rel, tmp_path / images_rel)
    with pytest.raises(DatasetError, match=r"images\[0\] \(id 1\): no 'file_name'"):
        load()


def one_class_training_cfg(name):
    """The tiny RetinaNet with one class, training on ``name``, evaluating nothing."""
    return tiny_cfg(
        "CorrRetinaNet", "MODEL.RETINANET.NUM_CLASSES", 1, "DATASETS.TRAIN", (name,),
        "DATASETS.TEST", (),
    )  # fmt: skip


def test_evaluated_dataset_needs_area_and_iscrowd_before_training(tmp_path, register):
    """COCO evaluation (pycocotools) reads them; without the check it fails after training."""
    name = register("no_area", *write_dataset(tmp_path, edit=drop("annotations", 1, "area")))
    cfg = one_class_training_cfg(name)
    check_datasets(cfg)  # training on it needs no area
    cfg.DATASETS.TEST = (name,)
    with pytest.raises(
        DatasetError,
        match=r"annotations\[1\] \(id 2\): no 'area' \(needs the "
        r"object's area in pixels, a number >= 0 \(COCO "
        r"evaluation reads it\)\)",
    ):
        check_datasets(cfg)


# --- images -------------------------------------------------------------------------------------


def spoil_image(path, how):
    if how == "truncated":
        content = path.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif how == "not an image":
        path.write_text("<html>404 Not Found</html>")
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "not an image", "empty", "missing"])
def test_mappers_name_unreadable_images(tmp_path, how):
    _, images = write_dataset(tmp_path, num_images=1)
    spoil_image(images / "0.jpg", how)
    record = {
        "file_name": str(images / "0.jpg"),
        "image_id": 1,
        "height": IMAGE_SIZE[0],
        "width": IMAGE_SIZE[1],
        "annotations": [],
    }
    cfg = tiny_cfg("CorrRetinaNet")
    for mapper in (build_train_mapper(cfg), build_test_mapper(cfg)):
        with pytest.raises(
            ImageReadError,
            match=rf"cannot read image '{images / '0.jpg'}' \(image_id "
            r"1\): .*Replace it with a readable image",
        ):
            mapper(record)


@pytest.mark.slow
def test_unreadable_image_through_train_net(tmp_path, monkeypatch, failure):
    """With a loader worker (as the CPU configs use): the message crosses the process, and the
    worker's traceback is cut from it (the training log keeps detectron2's report)."""
    files = write_dataset(tmp_path / "data")
    spoil_image(files[1] / "1.jpg", "truncated")
    message = failure(
        *with_dataset(monkeypatch, "truncated", *files),
        "DATALOADER.NUM_WORKERS",
        "1",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
        cwd=tmp_path,
        traceback=True,
    )
    assert re.fullmatch(
        rf"cannot read image '{files[1] / '1.jpg'}' \(image_id 2\): OSError: image file is "
        r"truncated \(\d+ bytes not processed\)\. Replace it with a readable image, or remove the "
        r"image and its annotations from the dataset's annotation file",
        message.strip(),
    ), message


# --- empty datasets and degenerate boxes -------------------------------------------------------


def test_dataset_without_images_is_an_error(tmp_path):
    json_file, images = write_dataset(tmp_path, num_images=0)
    with pytest.raises(DatasetError, match=r"images: the list is empty, the dataset has no image"):
        load_checked_coco_json(json_file, images, "empty")


def test_no_image_with_a_box_in_process(tmp_path, register):
    name = register(
        "crowd_only",
        *write_dataset(
            tmp_path, edit=lambda data: [a.__setitem__("iscrowd", 1) for a in data["annotations"]]
        ),
    )
    cfg = one_class_training_cfg(name)
    with pytest.raises(DatasetError) as error:
        build_checked_train_loader(cfg)
    assert str(error.value) == (
        "DATASETS.TRAIN has no image to train on ('crowd_only': 2 images, none with a (non-crowd) "
        "box); training skips images without boxes (DATALOADER.FILTER_EMPTY_ANNOTATIONS True). "
        "Add the boxes to the annotation file, or train on another dataset"
    )


def test_zero_size_boxes_are_dropped_with_a_logged_count(tmp_path):
    json_file, images = write_dataset(
        tmp_path, boxes=((8, 10, 0, 20), (40, 30, 20, 25), (1, 1, 5, 0))
    )
    logger, messages = logging.getLogger("corrloss_d2.data.coco_json"), []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)  # not caplog: an earlier setup_logger may stop propagation
    try:
        dicts = load_checked_coco_json(json_file, images, "thin")
    finally:
        logger.removeHandler(handler)
    assert [[a["bbox"] for a in d["annotations"]] for d in dicts] == [[[40, 30, 20, 25]]] * 2
    assert messages == [
        f"Dataset 'thin': ignoring 4 box(es) with zero width or height in "
        f"{json_file} (annotation ids 1, 3, 4, 6)"
    ]


@pytest.mark.slow
def test_zero_size_boxes_through_train_net_train_without_nan(
    tmp_path, monkeypatch, train_net, metrics
):
    files = write_dataset(tmp_path / "data", boxes=((8, 10, 0, 20), (40, 30, 20, 25)))
    out = tmp_path / "out"
    log = train_net(
        *with_dataset(monkeypatch, "thin", *files),
        "SOLVER.MAX_ITER",
        "2",
        "OUTPUT_DIR",
        str(out),
        cwd=tmp_path,
    )
    assert "Dataset 'thin': ignoring 2 box(es) with zero width or height" in log
    # A zero-size box kept would make its regression target infinite in the first step, on any
    # CPU; 2 warm-up steps of the raccoon recipe are far from diverging.
    losses = [r["total_loss"] for r in metrics(out) if "total_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
