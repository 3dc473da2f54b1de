import math

import pytest
import torch

from corrloss_d2.losses import ia_bce_loss, prime_sample_weights, quality_focal_loss, varifocal_loss


def bce(p, t):
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def reference(kind, logits, labels, ious, normalizer, weights=None):
    """Entry-by-entry loops over the papers' formulas."""
    total = 0.0
    num_classes = logits.shape[1]
    for i in range(logits.shape[0]):
        if labels[i] < 0:
            continue
        for c in range(num_classes):
            p = 1 / (1 + math.exp(-float(logits[i, c])))
            positive = labels[i] == c
            u = float(ious[i])
            if kind == "ia_bce":
                if positive:
                    t = max(p**0.25 * u**0.75, 0.01) * (
                        1.0 if weights is None else float(weights[i])
                    )
                    total += bce(p, t)
                else:
                    total += p**2 * bce(p, 0)
            elif kind == "qfl":
                y = u if positive else 0.0
                total += abs(y - p) ** 2 * bce(p, y)
            elif kind == "vfl":
                total += u * bce(p, u) if positive else 0.75 * p**2 * bce(p, 0)
    return total / normalizer


LOSSES = {"ia_bce": ia_bce_loss, "qfl": quality_focal_loss, "vfl": varifocal_loss}


def batch(seed=0, n=9, k=4):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen, dtype=torch.float64) * 2
    labels = torch.tensor([0, 3, k, -1, 1, k, 2, 0, k])[:n]
    ious = torch.rand(n, generator=gen, dtype=torch.float64)
    return logits, labels, ious


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_against_reference_formula(kind):
    logits, labels, ious = batch()
    loss = LOSSES[kind](logits, labels, ious, normalizer=3.0)
    assert loss.item() == pytest.approx(reference(kind, logits, labels, ious, 3.0), rel=1e-10)
    elementwise = LOSSES[kind](logits, labels, ious, normalizer=3.0, reduction="none")
    assert elementwise.shape == logits.shape and elementwise[3].abs().sum() == 0  # ignored row
    assert elementwise.sum().item() == pytest.approx(loss.item(), rel=1e-12)


def test_ia_bce_with_prime_weights_and_min_target():
    logits, labels, ious = batch(seed=1)
    ious[0] = 0.0  # target clamps at 0.01
    weights = torch.linspace(0.2, 1.0, 9, dtype=torch.float64)
    loss = ia_bce_loss(logits, labels, ious, normalizer=2, weights=weights)
    assert loss.item() == pytest.approx(
        reference("ia_bce", logits, labels, ious, 2, weights), rel=1e-10
    )


@pytest.mark.parametrize("kind", ["qfl", "vfl"])
def test_gradcheck_and_ious_are_constants(kind):
    logits, labels, ious = batch(seed=2)
    logits.requires_grad_()
    ious.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: LOSSES[kind](x, labels, ious, normalizer=2.0), (logits,)
    )
    LOSSES[kind](logits, labels, ious, normalizer=2.0).backward()
    assert ious.grad is None


def test_ia_bce_gradient_treats_quality_target_as_constant():
    """d/dx BCE(sigmoid(x), t) = p - t on positives with t fixed (its score is detached);
    d/dx [p^2 * -log(1 - p)] = 2 p^2 (1 - p) * -log(1 - p) + p^3 on the rest."""
    logits, labels, ious = batch(seed=2)
    logits.requires_grad_()
    ious.requires_grad_()
    ia_bce_loss(logits, labels, ious, normalizer=2.0).backward()
    assert ious.grad is None
    p = torch.sigmoid(logits.detach())
    expected = 2 * p**2 * (1 - p) * -torch.log1p(-p) + p**3
    for i, c in enumerate(labels.tolist()):
        if c == -1:
            expected[i] = 0
        elif c < logits.shape[1]:
            target = (p[i, c] ** 0.25 * ious[i].detach() ** 0.75).clamp(min=0.01)
            expected[i, c] = p[i, c] - target
    torch.testing.assert_close(logits.grad, expected / 2.0)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_extreme_logits_low_precision_and_empty(kind):
    logits = torch.tensor([[30.0, -30.0], [-30.0, -30.0]], dtype=torch.float16, requires_grad=True)
    loss = LOSSES[kind](logits, torch.tensor([0, 2]), torch.tensor([0.9, 0.0]), normalizer=1)
    loss.backward()
    assert (
        loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    )
    empty = torch.zeros(0, 5, requires_grad=True)
    loss = LOSSES[kind](empty, torch.zeros(0, dtype=torch.long), torch.zeros(0), normalizer=1)
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_bad_input_messages(kind):
    logits, labels, ious = batch()
    with pytest.raises(ValueError, match="normalizer must be one positive number"):
        LOSSES[kind](logits, labels, ious, normalizer=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[-1, 4\]"):
        LOSSES[kind](logits, labels + 2, ious, normalizer=1)
    with pytest.raises(ValueError, match="logits must be"):
        LOSSES[kind](logits[0], labels, ious, normalizer=1)
    with pytest.raises(ValueError, match="reduction"):
        LOSSES[kind](logits, labels, ious, normalizer=1, reduction="mean")


def test_prime_sample_weights():
    quality = torch.tensor([0.3, 0.9, 0.5, 0.7, 0.1, 0.6])
    gt = torch.tensor([1, 1, 0, 1, 0, 7])
    weights = prime_sample_weights(quality, gt, tau=1.5)
    # gt 1: 0.9 (rank 0), 0.7 (1), 0.3 (2); gt 0: 0.5 (0), 0.1 (1); gt 7: 0.6 (0)
    expected_rank = torch.tensor([2, 0, 0, 1, 1, 0], dtype=torch.float32)
    torch.testing.assert_close(weights, torch.exp(-expected_rank / 1.5))
    assert prime_sample_weights(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match="tau"):
        prime_sample_weights(quality, gt, tau=0)
