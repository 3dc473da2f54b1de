import itertools

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from corrloss_d2.losses import grouped_soft_rank, soft_rank


def assert_is_projection(z: np.ndarray, mu: np.ndarray, tol: float = 1e-9) -> None:
    """Brute force over all subsets and permutations: mu is the Euclidean projection of z onto the
    permutahedron of (1..n) iff mu lies in it (sum fixed; every subset's sum at most the sum of
    the |S| largest ranks) and <z - mu, pi - mu> <= 0 for every vertex pi (a permutation)."""
    n = z.size
    top_sums = np.cumsum(np.arange(n, 0, -1, dtype=float))
    assert abs(mu.sum() - top_sums[-1]) < tol * n
    for size in range(1, n):
        for subset in itertools.combinations(range(n), size):
            assert mu[list(subset)].sum() <= top_sums[size - 1] + tol * n
    for perm in itertools.permutations(range(1, n + 1)):
        assert np.dot(z - mu, np.array(perm, dtype=float) - mu) <= tol * n * n


@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("strength", [0.05, 0.3, 1.0, 4.0])
def test_matches_brute_force_projection(n, strength):
    gen = torch.Generator().manual_seed(n * 100 + int(strength * 10))
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    assert_is_projection(x.numpy() / strength, soft_rank(x, strength).numpy())


def test_projection_check_rejects_a_wrong_answer():
    x = np.array([0.1, 0.5, 0.2, 0.9])
    with pytest.raises(AssertionError):  # exact ranks are not the projection at strength 1
        assert_is_projection(x, rankdata(x))


def test_small_strength_gives_exact_ranks_with_ties_averaged():
    x = torch.tensor([[3.0, -1.0, 2.0, 2.0, 10.0, 0.5]], dtype=torch.float64)
    np.testing.assert_allclose(soft_rank(x, 1e-3)[0].numpy(), rankdata(x[0].numpy()))
    y = torch.rand(4, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gap = torch.sort(y, dim=-1).values.diff(dim=-1).min().item()
    ranks = soft_rank(y, gap / 2)
    for row, r in zip(y, ranks):
        np.testing.assert_allclose(r.numpy(), rankdata(row.numpy()))


def test_strength_one_on_unit_interval_is_affine():
    x = torch.rand(3, 1000, dtype=torch.float64)
    expected = x - x.mean(-1, keepdim=True) + (1000 + 1) / 2
    torch.testing.assert_close(soft_rank(x, 1.0), expected)


def test_batched_shapes_and_rank_sum():
    x = torch.randn(2, 3, 7)
    r = soft_rank(x, 0.1)
    assert r.shape == x.shape and r.dtype == x.dtype
    torch.testing.assert_close(r.sum(-1), torch.full((2, 3), 28.0))
    assert soft_rank(torch.empty(0, 4)).shape == (0, 4)
    torch.testing.assert_close(soft_rank(torch.tensor([[0.3]])), torch.tensor([[1.0]]))


@pytest.mark.parametrize("strength", [0.1, 1.0])
def test_gradcheck(strength):
    gen = torch.Generator().manual_seed(1)
    # Well-separated values keep the finite differences inside one PAV block structure.
    x = (torch.randperm(8, generator=gen).double() * 0.37 + torch.rand(8, generator=gen,
         dtype=torch.float64) * 0.05).reshape(2, 4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: soft_rank(t, strength), (x,))
    group = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2])
    x1 = x.detach().reshape(-1).clone().requires_grad_()
    for centered in (False, True):
        assert torch.autograd.gradcheck(
            lambda t: grouped_soft_rank(t, group, 3, strength, centered=centered), (x1,))


def test_grouped_equals_per_group_soft_rank():
    x = torch.randn(30, dtype=torch.float64)
    group = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(3))
    ranks = grouped_soft_rank(x, group, 5, 0.2)  # group 4 is empty
    centered = grouped_soft_rank(x, group, 5, 0.2, centered=True)
    for g in range(4):
        member = group == g
        torch.testing.assert_close(ranks[member], soft_rank(x[member], 0.2))
        torch.testing.assert_close(centered[member], ranks[member] - (member.sum() + 1) / 2)


def test_invalid_input_messages():
    with pytest.raises(ValueError, match="strength"):
        soft_rank(torch.rand(3), 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        soft_rank(torch.tensor([0.0, float("inf")]))
    with pytest.raises(TypeError, match="floating-point"):
        soft_rank(torch.arange(3))
    with pytest.raises(ValueError, match="backend"):
        soft_rank(torch.rand(3), backend="cuda")


def test_torchsort_backend_agrees_when_installed():
    pytest.importorskip("torchsort")
    x = torch.rand(4, 50)
    torch.testing.assert_close(soft_rank(x, 0.01, backend="torchsort"), soft_rank(x, 0.01))


def test_torchsort_backend_rejects_non_finite_values_too():
    pytest.importorskip("torchsort")
    with pytest.raises(ValueError, match="non-finite"):
        soft_rank(torch.tensor([[0.0, float("nan")]]), backend="torchsort")
