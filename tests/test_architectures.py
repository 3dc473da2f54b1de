"""tests/architectures.py against the code: every ``Corr*`` meta-architecture registered with
detectron2 has a spec and every spec names a registered one; each spec's facts hold for its
configs, its class and a built tiny model."""

import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import EventStorage

from corrloss_d2.config import load_corrloss_config
from corrloss_d2.losses import CLASSIFICATION_LOSS_KINDS
from corrloss_d2.modeling import CorrelationAwareDenseMixin
from corrloss_d2.modeling.set_prediction import SetPredictionDetector
from tests.architectures import ARCHITECTURES, FAMILIES, names
from tests.tiny import (
    NUM_CLASSES,
    REPO,
    assert_top_k_detections_at_requested_size,
    synthetic_batch,
    tiny_model,
)


def test_every_registered_corr_meta_architecture_has_one_spec():
    registered = {name for name, _ in META_ARCH_REGISTRY if name.startswith("Corr")}
    unlisted = sorted(registered - set(ARCHITECTURES))
    assert not unlisted, f"registered without a spec in tests/architectures.py: {unlisted}"
    unregistered = sorted(set(ARCHITECTURES) - registered)
    assert not unregistered, f"specs of meta-architectures nobody registers: {unregistered}"
    for name, spec in ARCHITECTURES.items():
        assert spec.name == name and spec.family in FAMILIES, spec


@pytest.mark.parametrize("arch", names())
def test_configs_class_and_grouping_match_the_spec(arch):
    spec = ARCHITECTURES[arch]
    base = load_corrloss_config(os.path.join(REPO, spec.base_config))
    assert base.MODEL.META_ARCHITECTURE == arch and base.MODEL.MASK_ON == spec.masks
    assert load_corrloss_config(os.path.join(REPO, spec.cpu_config)).MODEL.META_ARCHITECTURE == arch
    assert os.path.basename(spec.cpu_config).startswith(spec.recipe_prefix + "_")
    model_class = META_ARCH_REGISTRY.get(arch)
    assert model_class.NUM_CLASSES_KEY == spec.num_classes_key
    assert issubclass(model_class, CorrelationAwareDenseMixin) == (spec.family == "dense")
    assert issubclass(model_class, SetPredictionDetector) == (spec.family == "query")
    assert tiny_model(arch).correlation_loss.group_by == spec.default_group_by


@pytest.mark.parametrize("arch", names())
def test_training_step_gives_the_losses_and_a_rho_per_correlation_term(arch, monkeypatch):
    spec = ARCHITECTURES[arch]
    softmax_cross_entropy_calls = []
    cross_entropy = F.cross_entropy

    def spy(*args, **kwargs):
        softmax_cross_entropy_calls.append(args)
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    model = tiny_model(arch, "MODEL.CORR_LOSS.WEIGHT", 0.3).train()
    with EventStorage() as storage:
        losses = model(synthetic_batch(2, seed=1))
    assert set(losses) == set(spec.loss_keys())
    # One term per stage, computed in stage order (the multi-process tests rely on it).
    suffixes = spec.corr_suffixes()
    assert [key for key in losses if key.startswith("loss_corr")] == [
        "loss_corr" + suffix for suffix in suffixes
    ]
    logged = set(storage.latest())
    assert {key for key in logged if key.startswith("corr/num_pos")} == {
        "corr/num_pos" + suffix for suffix in suffixes
    }
    # ρ itself is logged under the same suffix where the term had a group of valid samples.
    assert {key for key in logged if key.startswith("corr/rho")} <= {
        "corr/rho" + suffix for suffix in suffixes
    }
    assert bool(softmax_cross_entropy_calls) == spec.softmax_scores


@pytest.mark.parametrize("arch", names())
def test_cls_loss_type_selects_the_classification_loss_of_those_that_take_it(arch):
    """Each kind of MODEL.CLS_LOSS.TYPE in the spec's ``cls_losses`` gives its own losses; a
    detector with its own classification loss ignores the key."""
    batch = synthetic_batch(2, seed=1)
    distinct = set()
    for kind in CLASSIFICATION_LOSS_KINDS:
        model = tiny_model(arch, "MODEL.CLS_LOSS.TYPE", kind).train()
        with EventStorage(), torch.no_grad():
            distinct.add(tuple((key, value.item()) for key, value in model(batch).items()))
    configurable = [k for k in ARCHITECTURES[arch].cls_losses if k in CLASSIFICATION_LOSS_KINDS]
    assert len(distinct) == max(len(configurable), 1)


@pytest.mark.parametrize("arch", names())
def test_masks_in_the_output_only_where_the_spec_says(arch):
    model = tiny_model(arch).eval()
    with torch.no_grad():
        outputs = model(synthetic_batch(2))
    assert [o["instances"].has("pred_masks") for o in outputs] == [ARCHITECTURES[arch].masks] * 2


@pytest.mark.parametrize("arch", names(where=lambda spec: spec.nms))
def test_inference_runs_nms_at_the_models_threshold(arch):
    """The NMS IoU threshold ``test_nms_thresh`` (an attribute of detectron2's dense detectors,
    and of CorrYOLACT) at 1 suppresses nothing; below 0 it suppresses every detection overlapping
    a better one of its class (IoU >= 0), leaving at most one a class."""
    node = ARCHITECTURES[arch].node
    model = tiny_model(arch, f"{node}.SCORE_THRESH_TEST", 0.0).eval()
    batch = synthetic_batch(2)
    most_of_a_class = []
    for threshold in (1.0, -1.0):
        model.test_nms_thresh = threshold
        with torch.no_grad():
            outputs = model(batch)
        most_of_a_class.append(
            max(
                torch.bincount(o["instances"].pred_classes, minlength=NUM_CLASSES).max().item()
                for o in outputs
            )
        )
    assert most_of_a_class[0] > 1 and most_of_a_class[1] <= 1, most_of_a_class


@pytest.mark.parametrize("arch", names(where=lambda spec: not spec.nms))
def test_nms_free_inference_is_the_top_k_without_nms(arch, forbid_nms):
    assert_top_k_detections_at_requested_size(tiny_model(arch), synthetic_batch(2))
