"""Set matching of query-based detectors: optimality against brute force, one-to-k structure,
Align-DETR's cap, empty and over-full ground truth, and the cost against its formula."""

import itertools
import math

import numpy as np
import pytest
import torch

from corrloss_d2.losses import capped_matches_per_target, one_to_k_assignment, set_matching_cost
from tests.references import reference_giou


def brute_force_one_to_k(cost: np.ndarray, k: int) -> float:
    """Minimum total cost over every way of giving each ground truth k distinct queries (or, with
    more ground truths than queries, of giving each query a distinct ground truth)."""
    num_queries, num_targets = cost.shape
    if k * num_targets <= num_queries:
        slots = [g for g in range(num_targets) for _ in range(k)]
        return min(
            sum(cost[q, g] for q, g in zip(chosen, slots))
            for chosen in itertools.permutations(range(num_queries), len(slots))
        )
    return min(
        sum(cost[q, g] for q, g in enumerate(targets))
        for targets in itertools.permutations(range(num_targets), num_queries)
    )


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("k", [1, 2])
def test_assignment_is_optimal_against_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    num_queries = int(rng.integers(2, 7))
    num_targets = int(rng.integers(1, 4 if k == 1 else num_queries // 2 + 1))
    cost = torch.from_numpy(rng.normal(size=(num_queries, num_targets)))
    queries, targets = one_to_k_assignment(cost, k)
    assert cost[queries, targets].sum().item() == pytest.approx(
        brute_force_one_to_k(cost.numpy(), k), abs=1e-9
    )


def test_one_to_k_gives_each_ground_truth_k_distinct_queries_and_no_query_two():
    rng = np.random.default_rng(0)
    cost = torch.from_numpy(rng.random((30, 7)))
    queries, targets = one_to_k_assignment(cost, 3)
    assert len(queries) == 21 and len(set(queries.tolist())) == 21
    assert torch.bincount(targets, minlength=7).tolist() == [3] * 7
    assert torch.equal(queries, torch.sort(queries).values)


def test_more_ground_truths_than_queries_matches_every_query_once_optimally():
    rng = np.random.default_rng(1)
    cost = torch.from_numpy(rng.random((3, 5)))
    queries, targets = one_to_k_assignment(cost, 1)
    assert queries.tolist() == [0, 1, 2] and len(set(targets.tolist())) == 3
    assert cost[queries, targets].sum().item() == pytest.approx(
        brute_force_one_to_k(cost.numpy(), 1)
    )


def test_empty_ground_truth_or_queries_give_no_pairs():
    for shape in [(10, 0), (0, 3)]:
        queries, targets = one_to_k_assignment(torch.zeros(shape), 2)
        assert queries.numel() == targets.numel() == 0 and queries.dtype == torch.int64


def test_cap_is_half_the_queries_per_ground_truth_and_at_least_one():
    assert capped_matches_per_target(2, 100, 10) == 2
    assert capped_matches_per_target(2, 100, 30) == 1  # ⌊50 / 30⌋ = 1
    assert capped_matches_per_target(6, 100, 10) == 5
    assert capped_matches_per_target(2, 100, 300) == 1
    assert capped_matches_per_target(1, 100, 10) == 1
    assert capped_matches_per_target(2, 100, 0) == 2


def test_non_finite_cost_is_rejected_with_a_clear_error():
    cost = torch.zeros(4, 2)
    cost[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        one_to_k_assignment(cost, 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        one_to_k_assignment(torch.zeros(4, 2), 0)


def test_matching_cost_equals_its_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.5]], dtype=torch.float64)
    pred = torch.tensor([[10.0, 10, 50, 40], [0, 5, 30, 60]], dtype=torch.float64)
    gt_classes = torch.tensor([2, 0, 2])
    gt = torch.tensor([[12.0, 8, 48, 44], [5, 0, 20, 70], [60, 60, 90, 99]], dtype=torch.float64)
    whwh = torch.tensor([100.0, 80, 100, 80])
    alpha, gamma = 0.25, 2.0
    cost = set_matching_cost(
        logits,
        pred,
        gt_classes,
        gt,
        whwh,
        class_weight=2.0,
        l1_weight=5.0,
        giou_weight=3.0,
        focal_alpha=alpha,
        focal_gamma=gamma,
    )
    assert cost.shape == (2, 3)
    for q in range(2):
        for g in range(3):
            p = 1 / (1 + math.exp(-logits[q, gt_classes[g]].item()))
            focal = alpha * (1 - p) ** gamma * -math.log(p) - (1 - alpha) * p**gamma * -math.log(
                1 - p
            )
            l1 = sum(abs(pred[q, i].item() - gt[g, i].item()) / whwh[i].item() for i in range(4))
            giou = reference_giou(pred[q].tolist(), gt[g].tolist())
            assert cost[q, g].item() == pytest.approx(2 * focal + 5 * l1 - 3 * giou, rel=1e-9)
