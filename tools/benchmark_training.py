"""Training overhead of the correlation term: iteration-time and peak-memory ratios.

For CorrRetinaNet, CorrFCOS and CorrSparseRCNN (the CPU configs: ResNet-18/GN, raccoon, small
images; Sparse R-CNN with its 6 stages) it trains, from the same initial weights on the same
batches, with each config's own optimiser (``corrloss_d2.solver.build_optimizer``):

- ``detectron2``: detectron2's own RetinaNet / FCOS (the reference; detectron2 has no Sparse R-CNN),
- ``weight0``: ours with λ = 0 (ρ is still measured for logging; Sparse R-CNN's reference),
- ``corr``: ours with the correlation term (``--kind``, ``--weight``; on every Sparse R-CNN stage).

Timing interleaves the variants in blocks of iterations inside this one process, so that drifts
of the machine hit all of them alike; the ratio is the median block time against the reference's.
Peak memory of one training iteration (forward, backward): on CUDA ``max_memory_allocated``; on
the CPU the peak of live tensor bytes, replayed from every allocation and free that the PyTorch
profiler records (deterministic, unlike the process's resident set size).

    python tools/benchmark_training.py [--iters 200] [--archs retinanet fcos sparse_rcnn] [--device cpu]
"""
import argparse
import copy
import os
import statistics
import time
from typing import Dict, List

import torch
from torch.profiler import ProfilerActivity, profile

import corrloss_d2  # noqa: F401
from corrloss_d2 import add_corrloss_config
from corrloss_d2.solver import build_optimizer
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import EventStorage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first variant of each architecture is the reference of its ratios.
VARIANTS = {"retinanet": ("detectron2", "weight0", "corr"), "fcos": ("detectron2", "weight0", "corr"),
            "sparse_rcnn": ("weight0", "corr")}


def make_cfg(arch: str, device: str, weight: float, kind: str):
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "CPU", f"{arch}_R_18_FPN_raccoon_scratch.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.CORR_LOSS.WEIGHT", weight,
                         "MODEL.CORR_LOSS.TYPE", kind, "DATALOADER.NUM_WORKERS", 0])
    return cfg


def make_model(arch: str, variant: str, device: str, weight: float, kind: str):
    """The variant's model, with its config's optimiser as ``model.bench_optimizer``."""
    torch.manual_seed(0)
    cfg = make_cfg(arch, device, weight if variant == "corr" else 0.0, kind)
    model = build_model(cfg)
    if variant == "detectron2" and arch == "retinanet":
        reference = RetinaNet(cfg)
        reference.load_state_dict(model.state_dict())
        model = reference.to(device)
    elif variant == "detectron2":
        f = cfg.MODEL.FCOS
        model = FCOS(backbone=copy.deepcopy(model.backbone), head=copy.deepcopy(model.head),
                     head_in_features=model.head_in_features, num_classes=f.NUM_CLASSES,
                     pixel_mean=cfg.MODEL.PIXEL_MEAN, pixel_std=cfg.MODEL.PIXEL_STD).to(device)
    model.bench_optimizer = build_optimizer(cfg, model)
    model.bench_iter = 0
    return model


def fixed_batches(arch: str, device: str, count: int) -> List:
    torch.manual_seed(0)
    loader = iter(build_detection_train_loader(make_cfg(arch, device, 0.0, "pearson")))
    return [next(loader) for _ in range(count)]


def train(model, batches, iters: int, device: str) -> float:
    """Runs ``iters`` optimiser steps cycling through ``batches``, continuing the model's own
    optimizer and iteration count across calls; returns seconds."""
    model.train()
    start = time.perf_counter()
    with EventStorage(model.bench_iter) as storage:
        for i in range(iters):
            losses = model(batches[i % len(batches)])
            model.bench_optimizer.zero_grad()
            sum(losses.values()).backward()
            model.bench_optimizer.step()
            storage.iter += 1
        model.bench_iter = storage.iter
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory(model, batch, device: str) -> int:
    """Peak bytes of tensors alive during one training iteration (after a warm-up one)."""
    model.train()
    with EventStorage():
        sum(model(batch).values()).backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            sum(model(batch).values()).backward()
            return torch.cuda.max_memory_allocated() - start
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            sum(model(batch).values()).backward()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--iters", type=int, default=200, help="timed iterations per variant")
    parser.add_argument("--block", type=int, default=10, help="iterations per interleaved block")
    parser.add_argument("--archs", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weight", type=float, default=0.2)
    parser.add_argument("--kind", default="spearman")
    args = parser.parse_args()

    print(f"device={args.device} threads={torch.get_num_threads()} iters={args.iters} "
          f"block={args.block} correlation: {args.kind}, λ={args.weight}")
    print(f"{'arch':<12}{'variant':<12}{'s/iter':>10}{'time ratio':>12}{'peak MiB':>10}{'mem ratio':>11}")
    for arch in args.archs:
        variants = VARIANTS[arch]
        batches = fixed_batches(arch, args.device, 8)
        models = {v: make_model(arch, v, args.device, args.weight, args.kind) for v in variants}
        for model in models.values():  # warm-up: allocator, numba compilation, dataloader-free
            train(model, batches, 3, args.device)
        blocks = {v: [] for v in variants}
        for round_index in range(max(1, args.iters // args.block)):
            shift = round_index % len(variants)  # rotate the order: no variant always runs first
            for variant in variants[shift:] + variants[:shift]:
                blocks[variant].append(train(models[variant], batches, args.block, args.device)
                                       / args.block)
        peaks = {v: peak_memory(models[v], batches[0], args.device) for v in variants}
        reference = variants[0]
        base_time = statistics.median(blocks[reference])
        for variant in variants:
            t = statistics.median(blocks[variant])
            print(f"{arch:<12}{variant:<12}{t:>10.4f}{t / base_time:>12.3f}"
                  f"{peaks[variant] / 2**20:>10.0f}{peaks[variant] / peaks[reference]:>11.3f}")


if __name__ == "__main__":
    main()
