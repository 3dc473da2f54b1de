"""Gathering samples across processes: two CPU processes with the gloo backend."""

import ast
import os
import pathlib
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from corrloss_d2.losses import CORRELATION_KINDS, correlation_loss

WORLD = 2
SIZES = [5, 8]  # processes hold different numbers of positives


def data(rank):
    gen = torch.Generator().manual_seed(rank)
    ious = torch.rand(SIZES[rank], generator=gen, dtype=torch.float64)
    scores = 0.5 * ious + 0.5 * torch.rand(SIZES[rank], generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 2, (SIZES[rank],), generator=gen)
    return scores, ious, groups


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    scores, ious, groups = data(rank)
    results = {}
    for kind in CORRELATION_KINDS:
        s = scores.clone().requires_grad_()
        loss = correlation_loss(
            s, ious, kind, groups=groups, strength=0.01, gather_across_processes=True
        )
        loss.backward()
        results[kind] = (loss.detach(), s.grad)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_and_gradient_match_one_process():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        results = [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(WORLD)]
    parts = [data(r) for r in range(WORLD)]
    scores = torch.cat([p[0] for p in parts]).requires_grad_()
    ious = torch.cat([p[1] for p in parts])
    groups = torch.cat([p[2] for p in parts])
    for kind in CORRELATION_KINDS:
        scores.grad = None
        loss = correlation_loss(scores, ious, kind, groups=groups, strength=0.01)
        loss.backward()
        for rank in range(WORLD):
            rank_loss, rank_grad = results[rank][kind]
            # The gathered samples in rank order are this process's: the same operations on the
            # same values, so the same rounding, on any CPU.
            assert rank_loss.item() == pytest.approx(loss.item(), abs=1e-12)
            # DDP divides the summed gradients by the world size: each process carries W times
            # its share so that the average is the gradient of the global loss.
            lo = sum(SIZES[:rank])
            torch.testing.assert_close(rank_grad / WORLD, scores.grad[lo : lo + SIZES[rank]])


def test_loss_library_does_not_import_detectron2():
    package = pathlib.Path(__file__).resolve().parents[2] / "corrloss_d2" / "losses"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "detectron2" for n in names), path
