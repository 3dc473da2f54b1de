import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from corrloss_d2.losses import CORRELATION_KINDS, correlation_coefficients, correlation_loss
from tests.references import reference_concordance


def sample(n, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    ious = torch.rand(n, generator=gen, dtype=dtype)
    scores = (0.6 * ious + 0.4 * torch.rand(n, generator=gen, dtype=dtype)).clamp(0, 1)
    return scores, ious


@pytest.mark.parametrize("n", [2, 3, 50, 2000])
def test_values_against_scipy_and_closed_form(n):
    s, u = sample(n, seed=n)
    gap = torch.sort(s).values.diff().min().item()
    gap_u = torch.sort(u).values.diff().min().item()
    strength = min(gap, gap_u) / 2  # below every gap: exact ranks
    expected = {
        "pearson": 1 - pearsonr(s.numpy(), u.numpy()).statistic,
        "concordance": 1 - reference_concordance(s.numpy(), u.numpy()),
        "spearman": 1 - spearmanr(s.numpy(), u.numpy()).statistic,
    }
    for kind in CORRELATION_KINDS:
        loss = correlation_loss(s, u, kind, strength=strength)
        assert loss.item() == pytest.approx(expected[kind], abs=1e-9), kind


def test_published_strength_on_unit_interval_equals_pearson():
    s, u = sample(5000, dtype=torch.float32)
    for n in (2, 17, 5000):
        spearman = correlation_loss(s[:n], u[:n], "spearman", strength=1.0)
        pearson = correlation_loss(s[:n], u[:n], "pearson")
        assert spearman.item() == pytest.approx(pearson.item(), abs=1e-5)


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_perfect_and_anti_correlation(kind):
    u = torch.linspace(0.1, 0.9, 20, dtype=torch.float64)
    strength = 1e-3
    assert correlation_loss(u.clone(), u, kind, strength=strength).item() == pytest.approx(
        0, abs=1e-12
    )
    expected_anti = (
        2.0 if kind != "concordance" else 1 - reference_concordance(1 - u.numpy(), u.numpy())
    )
    loss = correlation_loss(1 - u, u, kind, strength=strength)
    assert loss.item() == pytest.approx(expected_anti, abs=1e-12)
    if kind != "concordance":  # any increasing map is perfect for Pearson ranks / Spearman
        assert correlation_loss(2 * u - 0.1, u, "pearson").item() == pytest.approx(0, abs=1e-12)


def test_groups_average_valid_groups_only():
    s, u = sample(40, seed=7)
    groups = torch.tensor([3] * 15 + [9] * 20 + [11] * 1 + [4] * 4)
    u_const = u.clone()
    u_const[groups == 4] = 0.5  # constant IoUs: not valid
    corr = correlation_coefficients(s, u_const, "pearson", groups=groups, min_samples=2)
    assert corr.valid.tolist() == [True, False, True, False]  # sorted ids 3, 4, 9, 11
    assert corr.num_samples.tolist() == [15, 4, 20, 1]
    per_group = [pearsonr(s[groups == g].numpy(), u[groups == g].numpy()).statistic for g in (3, 9)]
    loss = correlation_loss(s, u_const, "pearson", groups=groups)
    assert loss.item() == pytest.approx(1 - np.mean(per_group), abs=1e-12)
    loss_min16 = correlation_loss(s, u_const, "pearson", groups=groups, min_samples=16)
    assert loss_min16.item() == pytest.approx(1 - per_group[1], abs=1e-12)


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_gradcheck_and_gradient_only_into_scores(kind):
    s, u = sample(12, seed=3)
    groups = torch.tensor([0] * 7 + [1] * 5)
    s.requires_grad_()
    u.requires_grad_()
    strength = 0.05 if kind == "spearman" else 1.0
    assert torch.autograd.gradcheck(
        lambda t: correlation_loss(t, u, kind, groups=groups, strength=strength), (s,)
    )
    correlation_loss(s, u, kind, groups=groups, strength=strength).backward()
    assert u.grad is None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
@pytest.mark.parametrize(
    "scores,ious",
    [
        ([], []),
        ([0.3], [0.7]),
        ([0.2, 0.2, 0.2], [0.1, 0.5, 0.9]),  # constant scores
        ([0.1, 0.5, 0.9], [0.4, 0.4, 0.4]),  # constant IoUs
    ],
)
def test_degenerate_inputs_give_connected_zero(kind, scores, ious):
    s = torch.tensor(scores, requires_grad=True)
    loss = correlation_loss(s, torch.tensor(ious), kind)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_two_samples_are_enough_and_infinite_logits_are_finite(kind):
    loss = correlation_loss(torch.tensor([0.2, 0.8]), torch.tensor([0.3, 0.6]), kind, strength=1e-3)
    assert loss.item() == pytest.approx(
        0.0
        if kind != "concordance"
        else 1 - reference_concordance(np.array([0.2, 0.8]), np.array([0.3, 0.6])),
        abs=1e-6,
    )
    logits = torch.tensor([float("inf"), float("-inf"), 0.0, 2.0], requires_grad=True)
    loss = correlation_loss(torch.sigmoid(logits), torch.tensor([0.9, 0.1, 0.5, 0.7]), kind)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_low_precision_inputs_are_computed_in_float32(dtype, kind):
    s, u = sample(300, seed=5, dtype=torch.float32)
    reference = correlation_loss(s.to(dtype).float(), u.to(dtype).float(), kind)
    loss = correlation_loss(s.to(dtype).requires_grad_(), u.to(dtype), kind)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), abs=1e-6)


def test_invalid_arguments_are_named():
    s, u = sample(5)
    with pytest.raises(ValueError, match="kind must be one of"):
        correlation_loss(s, u, "kendall")
    with pytest.raises(ValueError, match="ious must be a tensor of the shape"):
        correlation_loss(s, u[:3], "pearson")
    with pytest.raises(ValueError, match="min_samples"):
        correlation_loss(s, u, "pearson", min_samples=1)
    with pytest.raises(ValueError, match="groups must be an integer tensor"):
        correlation_loss(s, u, "pearson", groups=torch.zeros(5))
    with pytest.raises(ValueError, match="1-D"):
        correlation_loss(s[None], u[None], "pearson")


@pytest.mark.parametrize("kind", CORRELATION_KINDS)
def test_key_rows_group_like_the_ids_of_their_sorted_distinct_rows(kind):
    gen = torch.Generator().manual_seed(5)
    s, u = torch.rand(120, generator=gen), torch.rand(120, generator=gen)
    keys = torch.stack([torch.randint(0, 3, (120,)), torch.randint(0, 4, (120,))], dim=1)
    distinct = sorted(set(map(tuple, keys.tolist())))
    ids = torch.tensor([distinct.index(tuple(row)) for row in keys.tolist()])
    by_rows = correlation_coefficients(s, u, kind, groups=keys, strength=0.01)
    by_ids = correlation_coefficients(s, u, kind, groups=ids, strength=0.01)
    assert len(distinct) == by_rows.rho.numel()
    assert torch.equal(by_rows.rho, by_ids.rho) and torch.equal(by_rows.valid, by_ids.valid)
    with pytest.raises(ValueError, match=r"groups must be an integer tensor \(N,\) or \(N, C\)"):
        correlation_coefficients(s, u, kind, groups=keys[:, :, None])
