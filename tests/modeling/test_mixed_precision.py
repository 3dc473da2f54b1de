"""Mixed precision: a training step of each meta-architecture under CPU bfloat16 autocast (what
detectron2's AMPTrainer does on CUDA with float16) keeps the classification, IoU-aware and
correlation terms in float32."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.utils.events import EventStorage

from corrloss_d2.losses import CLASSIFICATION_LOSS_KINDS
from corrloss_d2.modeling import classification_loss as classification_loss_module
from corrloss_d2.modeling import correlation_term as correlation_term_module
from tests.architectures import ARCHITECTURES
from tests.tiny import synthetic_batch, tiny_model


@pytest.mark.parametrize(
    "arch,cls_loss",
    [(name, kind) for name, spec in ARCHITECTURES.items() for kind in spec.cls_losses],
)
def test_bfloat16_autocast_training_step_keeps_losses_in_float32(arch, cls_loss, monkeypatch):
    spec = ARCHITECTURES[arch]
    model = tiny_model(
        arch,
        "MODEL.CORR_LOSS.WEIGHT",
        0.3,
        "MODEL.CORR_LOSS.TYPE",
        "concordance",
        *(["MODEL.CLS_LOSS.TYPE", cls_loss] if cls_loss in CLASSIFICATION_LOSS_KINDS else []),
    )
    model.train()
    # The dtypes the loss math receives: classification logits, correlation scores and IoUs.
    received = {"classification": set(), "correlation": set(), "module outputs": set()}

    def spy(fn, key):
        def wrapper(*args, **kwargs):
            received[key].update(
                t.dtype for t in args if isinstance(t, torch.Tensor) and t.is_floating_point()
            )
            return fn(*args, **kwargs)

        return wrapper

    if spec.softmax_scores:
        # Scores that are softmax probabilities (YOLACT): the softmax cross-entropy must get
        # float32 logits, and the correlation term float32 probabilities.
        monkeypatch.setattr(F, "cross_entropy", spy(F.cross_entropy, "classification"))
    elif cls_loss == "focal":
        monkeypatch.setattr(
            classification_loss_module,
            "sigmoid_focal_loss",
            spy(classification_loss_module.sigmoid_focal_loss, "classification"),
        )
    else:
        monkeypatch.setitem(
            classification_loss_module.IOU_AWARE_LOSSES,
            cls_loss,
            spy(classification_loss_module.IOU_AWARE_LOSSES[cls_loss], "classification"),
        )
    monkeypatch.setattr(
        correlation_term_module,
        "correlation_coefficients",
        spy(correlation_term_module.correlation_coefficients, "correlation"),
    )
    record_outputs = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: received["module outputs"].add(
            getattr(output, "dtype", None)
        )
    )
    try:
        with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(synthetic_batch(2, seed=1))
    finally:
        record_outputs.remove()
    assert torch.bfloat16 in received["module outputs"], "autocast must run layers in bfloat16"
    assert received["classification"] == {torch.float32}
    assert received["correlation"] == {torch.float32}
    corr_terms = [k for k in losses if k.startswith("loss_corr")]
    assert len(corr_terms) == len(spec.corr_suffixes())
    assert all(losses[k] > 0 for k in corr_terms)
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), (name, value)
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient (DDP would fail): {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
