import importlib
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from corrloss_d2.losses import grouped_soft_rank, soft_rank

KERNELS = importlib.import_module("corrloss_d2.losses.soft_rank")
BACKENDS = ["numba", "torch"]  # the CPU kernel and the torch path (CUDA's), both run on the CPU


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("strength", [0.05, 0.3, 1.0, 4.0])
def test_matches_brute_force_projection(n, strength, backend):
    gen = torch.Generator().manual_seed(n * 100 + int(strength * 10))
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    assert_is_projection(x.numpy() / strength, soft_rank(x, strength, backend=backend).numpy())


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strength", [0.1, 1.0])
def test_gradcheck(strength, backend):
    gen = torch.Generator().manual_seed(1)
    # Well-separated values keep the finite differences inside one PAV block structure.
    x = (
        (
            torch.randperm(8, generator=gen).double() * 0.37
            + torch.rand(8, generator=gen, dtype=torch.float64) * 0.05
        )
        .reshape(2, 4)
        .requires_grad_()
    )
    assert torch.autograd.gradcheck(lambda t: soft_rank(t, strength, backend=backend), (x,))
    group = torch.tensor([0, 1, 0, 1, 1, 0, 2, 2])
    x1 = x.detach().reshape(-1).clone().requires_grad_()
    for centered in (False, True):
        assert torch.autograd.gradcheck(
            lambda t: grouped_soft_rank(t, group, 3, strength, centered=centered, backend=backend),
            (x1,),
        )


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


# --- The compiled kernel against plain numpy: sort order, ranks, blocks ------------------------


def reference_soft_rank(x, strength, groups=None, num_groups=1, centered=False):
    """Plain numpy/Python projection, the algorithm of the earlier implementation with a stable
    sort: per group, the members in np.argsort(-z, kind="stable") order, PAV on them minus
    (m, ..., 1) with the same floating-point operations. Returns (float64 ranks, blocks as lists
    of indices)."""
    z = np.asarray(x).astype(np.float64) / strength
    groups = np.zeros(z.size, np.int64) if groups is None else np.asarray(groups)
    order = np.argsort(-z, kind="stable")
    ranks = np.empty_like(z)
    blocks = []
    for g in range(num_groups):
        members = order[groups[order] == g]
        m = members.size
        starts, totals, counts = [], [], []
        for k, i in enumerate(members):
            starts.append(k)
            totals.append(z[i] - (m - k))
            counts.append(1.0)
            while len(totals) > 1 and totals[-2] * counts[-1] < totals[-1] * counts[-2]:
                total, count = totals.pop(), counts.pop()
                starts.pop()
                totals[-1] += total
                counts[-1] += count
        bounds = starts + [m]
        for b in range(len(totals)):
            offset = totals[b] / counts[b] + ((m + 1) / 2.0 if centered else 0.0)
            block = members[bounds[b] : bounds[b + 1]]
            ranks[block] = z[block] - offset
            blocks.append(sorted(block.tolist()))
    return ranks, blocks


def tricky_values(rng, n, dtype):
    """Mixed signs, both zeros, ties, huge and tiny magnitudes, subnormals, shuffled."""
    if dtype == np.float64:
        magnitudes = 10.0 ** rng.integers(-320, 290, n)
        specials = [
            0.0,
            -0.0,
            0.0,
            -0.0,
            5e-324,
            -5e-324,
            1e-310,
            2.2250738585072014e-308,
            1e289,
            -1e289,
            1.5,
            1.5,
            -1.5,
            1.5,
        ]
    else:
        magnitudes = 10.0 ** rng.integers(-45, 34, n)
        specials = [
            0.0,
            -0.0,
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            1e-40,
            1.1754944e-38,
            1e33,
            -1e33,
            1.5,
            1.5,
            -1.5,
            1.5,
        ]
    values = np.concatenate(
        [
            rng.standard_normal(n),
            rng.standard_normal(n) * magnitudes,
            rng.integers(-3, 4, n).astype(float),
            specials,
        ]
    )
    rng.shuffle(values)
    return values.astype(dtype)


def kernel_sort_order(x, strength):
    """Indices of ``x`` by non-increasing ``x / strength`` from the kernel's key map and radix
    sort (32-bit keys for float32 unless they would underflow, as in the kernel)."""
    n = x.size
    keys = np.empty(n, np.uint64)
    status = KERNELS._NEEDS_64_BIT_KEYS
    if x.dtype == np.float32:
        status, low, high, varying = KERNELS._keys_32(x.view(np.uint32), strength, keys)
    if status == KERNELS._NEEDS_64_BIT_KEYS:
        status, low, high, varying = KERNELS._keys_64(x.astype(np.float64) / strength, keys)
    assert status == 0
    items, _, mask = KERNELS._radix_sort(
        keys, np.empty(n, np.uint64), np.uint64(low), np.uint64(high), np.uint64(varying)
    )
    return (items & mask).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 2, 5, 300, 5000])
def test_radix_sort_is_the_stable_descending_order(dtype, n):
    rng = np.random.default_rng(n)
    x = tricky_values(rng, n, dtype)
    strengths = [1.0, 1e-3, 7.3]
    if dtype == np.float32:
        strengths.append(1e300)  # z underflows for tiny x: the 64-bit keys take over
    for strength in strengths:
        with np.errstate(over="ignore", under="ignore"):
            z = x.astype(np.float64) / strength
        if not np.isfinite(z).all():
            continue
        np.testing.assert_array_equal(kernel_sort_order(x, strength), np.argsort(-z, kind="stable"))
    # All keys equal; keys spanning (nearly) all bits, which leaves too few beside them for the
    # index in 64 bits at first (float64).
    np.testing.assert_array_equal(kernel_sort_order(np.full(n, -2.5, dtype), 1.0), np.arange(n))
    wide = np.concatenate([[np.finfo(dtype).max, -np.finfo(dtype).max], x]).astype(dtype)
    np.testing.assert_array_equal(
        kernel_sort_order(wide, 1.0), np.argsort(-wide.astype(np.float64), kind="stable")
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("strength", [1e-3, 0.3, 2.0])
def test_soft_rank_equals_plain_reference_on_tricky_values(dtype, strength):
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    rng = np.random.default_rng(int(strength * 1000))
    x = tricky_values(rng, 400, np_dtype)
    expected, _ = reference_soft_rank(x, strength)
    ranks = soft_rank(torch.from_numpy(x), strength)
    assert ranks.dtype == dtype
    # Same operations in the same order: equal to the last bit.
    np.testing.assert_array_equal(ranks.numpy(), expected.astype(np_dtype))


@pytest.mark.parametrize("centered", [False, True])
def test_many_groups_equal_plain_reference(centered):
    rng = np.random.default_rng(5)
    n, num_groups = 3000, 700  # about 4 values per group; some groups empty
    x = tricky_values(rng, n, np.float64)[:n]
    x[rng.random(n) < 0.2] = 0.5  # ties within groups
    groups = rng.integers(0, num_groups, n)
    strength = 0.01
    expected, blocks = reference_soft_rank(x, strength, groups, num_groups, centered)
    ranks = grouped_soft_rank(
        torch.from_numpy(x), torch.from_numpy(groups), num_groups, strength, centered=centered
    )
    np.testing.assert_array_equal(ranks.numpy(), expected)
    # Backward: the gradient minus its block mean, over the reference's blocks.
    xt = torch.from_numpy(x).requires_grad_()
    grad = torch.from_numpy(rng.standard_normal(n))
    grouped_soft_rank(
        xt, torch.from_numpy(groups), num_groups, strength, centered=centered
    ).backward(grad)
    expected_grad = grad.numpy().copy()
    for block in blocks:
        expected_grad[block] -= grad.numpy()[block].mean()
    np.testing.assert_allclose(xt.grad.numpy(), expected_grad / strength, rtol=1e-12, atol=1e-9)


def test_rows_equal_plain_reference_row_by_row():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3, 64)).astype(np.float32)
    x[0, 0, :10] = 0.25  # ties
    x[1, 1] = -0.0
    ranks = soft_rank(torch.from_numpy(x), 0.05)
    for index in np.ndindex(*x.shape[:-1]):
        expected, _ = reference_soft_rank(x[index], 0.05)
        np.testing.assert_array_equal(ranks[index].numpy(), expected.astype(np.float32))


@pytest.mark.parametrize("centered", [False, True])
def test_groups_spanning_less_than_one_are_single_blocks(centered):
    """Values within a span below 1 skip the sort: one PAV block per group, ranks
    z - mean(z) + (m + 1) / 2 up to rounding (the sum is taken in another order)."""
    rng = np.random.default_rng(7)
    n, num_groups = 2000, 3
    x = rng.random(n) * 0.999
    groups = rng.integers(0, num_groups, n)
    for group_arg, count in ((None, 1), (groups, num_groups)):
        index = np.zeros(n, np.int64) if group_arg is None else group_arg
        expected, blocks = reference_soft_rank(x, 1.0, index, count, centered)
        assert len(blocks) == count
        xt = torch.from_numpy(x).requires_grad_()
        ranks = grouped_soft_rank(xt, torch.from_numpy(index), count, 1.0, centered=centered)
        np.testing.assert_allclose(ranks.detach().numpy(), expected, rtol=1e-13, atol=1e-11)
        grad = torch.from_numpy(rng.standard_normal(n))
        ranks.backward(grad)
        expected_grad = grad.numpy().copy()
        for block in blocks:
            expected_grad[block] -= grad.numpy()[block].mean()
        np.testing.assert_allclose(xt.grad.numpy(), expected_grad, rtol=1e-12, atol=1e-12)
    # A span of exactly 1 takes the general path (PAV does not merge equal means).
    x = np.array([0.0, 1.0])
    expected, _ = reference_soft_rank(x, 1.0)
    np.testing.assert_array_equal(soft_rank(torch.from_numpy(x)).numpy(), expected)


def test_kernel_rejects_overflow_underflow_and_bad_groups():
    with pytest.raises(ValueError, match="non-finite"):  # float32 x / strength overflows
        soft_rank(torch.tensor([1e30, 1.0, -2.0]), 1e-300)
    with pytest.raises(ValueError, match="non-finite"):
        soft_rank(torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64), 1e-3)
    with pytest.raises(ValueError, match="non-finite"):  # also on the single-block path
        soft_rank(torch.tensor([0.1, float("nan"), 0.3]), 1.0)
    with pytest.raises(ValueError, match="group_index"):
        grouped_soft_rank(torch.rand(4), torch.tensor([0, 1, 2, 3]), 3, 0.1)
    # float32 values whose quotient is subnormal still rank exactly (64-bit keys).
    x = np.array([1e-30, 2e-30, -1e-30, 0.0, 3e-30], np.float32)
    expected, _ = reference_soft_rank(x, 1e300)
    np.testing.assert_array_equal(
        soft_rank(torch.from_numpy(x), 1e300).numpy(), expected.astype(np.float32)
    )


def test_gradient_dtype_device_and_shape_follow_the_input():
    x = torch.randn(2, 3, 5, dtype=torch.float32, requires_grad=True)
    ranks = soft_rank(x, 0.1)
    ranks.backward(torch.ones_like(ranks).expand(2, 3, 5))
    assert x.grad.shape == x.shape and x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, torch.zeros_like(x))  # rows of ranks have a fixed sum
    half = torch.rand(50, dtype=torch.float16, requires_grad=True)
    grouped_soft_rank(half, torch.zeros(50, dtype=torch.long), 1, 0.01).sum().backward()
    assert half.grad.dtype == torch.float16


# --- The torch path (CUDA's) against the numba kernel, both forced on the CPU -----------------


def grouped_inputs(case, gen):
    """(x float64, group ids, number of groups): "random" values in one group; "ties" (ten
    distinct values and both zeros) in three groups; "grouped" random values in groups of sizes
    0, 1, 1, 2, 3, 17, 60 and 200, the ids shuffled."""
    if case == "random":
        return torch.randn(300, generator=gen, dtype=torch.float64), torch.zeros(300).long(), 1
    if case == "ties":
        values = torch.randn(10, generator=gen, dtype=torch.float64)
        values = torch.cat([values, torch.tensor([0.0, -0.0], dtype=torch.float64)])
        x = values[torch.randint(0, 12, (300,), generator=gen)]
        return x, torch.randint(0, 3, (300,), generator=gen), 3
    groups = torch.repeat_interleave(torch.arange(8), torch.tensor([0, 1, 1, 2, 3, 17, 60, 200]))
    groups = groups[torch.randperm(groups.numel(), generator=gen)]
    return torch.randn(groups.numel(), generator=gen, dtype=torch.float64), groups, 8


def ranks_and_gradient(backend, x, groups, num_groups, strength, weights, centered=False):
    """grouped_soft_rank by ``backend`` and the gradient of ``(ranks * weights).sum()``."""
    leaf = x.clone().requires_grad_()
    ranks = grouped_soft_rank(
        leaf, groups, num_groups, strength, centered=centered, backend=backend
    )
    (ranks * weights).sum().backward()
    return ranks.detach(), leaf.grad


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("strength", [1e-4, 1e-2, 0.3, 1.0, 10.0])
@pytest.mark.parametrize("case", ["random", "ties", "grouped"])
def test_torch_path_equals_numba_kernel(case, strength, centered):
    """Same blocks, so the same ranks and gradients up to the rounding of the torch path's
    cumulative sums (about 1e-12 here); no mean of two adjacent blocks is equal (which would let
    rounding decide whether to pool them)."""
    gen = torch.Generator().manual_seed(11)
    x, groups, num_groups = grouped_inputs(case, gen)
    weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    expected = ranks_and_gradient("numba", x, groups, num_groups, strength, weights, centered)
    result = ranks_and_gradient("torch", x, groups, num_groups, strength, weights, centered)
    torch.testing.assert_close(result[0], expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(result[1], expected[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_path_rows_follow_dtype_and_shape(dtype):
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 4, 25, generator=gen).to(dtype)
    x[0, 0, :5] = 0.5  # ties
    grad = torch.linspace(-1, 1, 25, dtype=dtype).expand(3, 4, 25)  # not contiguous
    results = []
    for backend in BACKENDS:
        leaf = x.clone().requires_grad_()
        ranks = soft_rank(leaf, 0.05, backend=backend)
        ranks.backward(grad)
        assert ranks.dtype == leaf.grad.dtype == dtype and leaf.grad.shape == x.shape
        results.append((ranks.detach(), leaf.grad))
    torch.testing.assert_close(results[1], results[0])


def test_torch_path_short_reach_and_small_chunks(monkeypatch):
    """A first reach of one point and chunks of 16 pairs: the spurious cuts of a short reach
    leave a block's mean above the previous one's, so the reach grows until the blocks are PAV's
    (a true block that spans past the reach, as the cluster of ties pooled with one value above it
    after another in PAV)."""
    reaches = []
    concave_vertices = KERNELS._concave_vertices

    def spy(*args):
        reaches.append(args[-1])
        return concave_vertices(*args)

    monkeypatch.setattr(KERNELS, "_FIRST_PAIRS", 1)
    monkeypatch.setattr(KERNELS, "_PAIRS_PER_CHUNK", 16)
    monkeypatch.setattr(KERNELS, "_concave_vertices", spy)
    gen = torch.Generator().manual_seed(13)
    cascade = torch.cat([2.0 * torch.arange(30, 0, -1), torch.zeros(40)]).double()
    random = torch.randn(200, generator=gen, dtype=torch.float64)
    for x, strength in ((cascade, 1.0), (random, 0.01), (random, 0.3)):
        groups = torch.zeros(x.shape, dtype=torch.long)
        weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        expected = ranks_and_gradient("numba", x, groups, 1, strength, weights)
        result = ranks_and_gradient("torch", x, groups, 1, strength, weights)
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)
    assert reaches[:3] == [1, 4, 16]  # the cascade's reach grew


def test_torch_path_rejects_what_the_kernel_rejects():
    with pytest.raises(ValueError, match="non-finite"):
        soft_rank(torch.tensor([1.0, float("nan")]), backend="torch")
    with pytest.raises(ValueError, match="non-finite"):  # x / strength overflows
        soft_rank(torch.tensor([1e300, 1.0], dtype=torch.float64), 1e-10, backend="torch")
    with pytest.raises(ValueError, match="group_index"):
        grouped_soft_rank(torch.rand(4), torch.tensor([0, 1, 2, 3]), 3, 0.1, backend="torch")
    with pytest.raises(ValueError, match="backend"):
        grouped_soft_rank(torch.rand(4), torch.zeros(4).long(), 1, backend="torchsort")


def test_native_backend_is_the_torch_path_for_cuda_tensors():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert KERNELS._projection("native", cuda) is KERNELS._torch_projection
    assert KERNELS._projection("native", cpu) is KERNELS._numba_projection
    for device in (cuda, cpu):
        assert KERNELS._projection("numba", device) is KERNELS._numba_projection
        assert KERNELS._projection("torch", device) is KERNELS._torch_projection


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_rank_on_the_device(monkeypatch):
    gen = torch.Generator().manual_seed(14)
    x, groups, num_groups = grouped_inputs("grouped", gen)
    weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    expected = ranks_and_gradient("numba", x, groups, num_groups, 0.01, weights)

    def no_kernel(*args):
        raise AssertionError("the numba kernel ran for a CUDA tensor")

    monkeypatch.setattr(KERNELS, "_numba_projection", no_kernel)
    cuda = torch.device("cuda")
    ranks, grad = ranks_and_gradient(
        "native", x.to(cuda), groups.to(cuda), num_groups, 0.01, weights.to(cuda)
    )
    assert ranks.device.type == grad.device.type == "cuda"
    torch.testing.assert_close((ranks.cpu(), grad.cpu()), expected, rtol=0, atol=1e-6)
