"""Overhead of the correlation term: training iterations/s, inference images/s and peak training
memory, as ratios in one run.

For CorrRetinaNet, CorrFCOS, CorrSparseRCNN, CorrDINO and CorrYOLACT (the CPU configs:
ResNet-18/GN, small images, raccoon, YOLACT on the embedded shapes with their masks; Sparse R-CNN
with its 6 stages, DINO with 3 + 3 layers and the pure-PyTorch deformable attention) it trains,
from the same initial weights on the same batches, with each config's own optimiser
(``corrloss_d2.solver.build_optimizer``):

- ``detectron2``: detectron2's own RetinaNet / FCOS (the reference; detectron2 has no Sparse R-CNN
  nor DINO),
- ``weight0``: ours with λ = 0 (ρ is still measured for logging; the reference of the query
  detectors, focal loss with one-to-one matching, and of YOLACT),
- ``corr``: ours with the correlation term (``--kind``, ``--weight``; on every Sparse R-CNN stage,
  every DINO decoder layer),
- ``align_detr`` (DINO): λ = 0 with Align-DETR's IA-BCE, mixed matching (k = 2) and prime weights.

Timing interleaves the variants in blocks of iterations inside this one process, so that drifts
of the machine hit all of them alike; the ratio is the median block time against the reference's.
Inference (eval mode, ``no_grad``, the same images, normal outputs) is timed the same way; the
correlation term is a training loss, so its inference ratio should be 1. Peak memory of one
training iteration (forward, backward): on CUDA ``max_memory_allocated``; on the CPU the peak of
live tensor bytes, replayed from every allocation and free that the PyTorch profiler records
(deterministic, unlike the process's resident set size). ``--amp`` runs forward passes under
autocast (float16 with a GradScaler on CUDA, like detectron2's AMPTrainer; bfloat16 on the CPU).

    python tools/benchmark_training.py [--iters 200] [--archs retinanet fcos sparse_rcnn] \
        [--device cpu] [--amp]
    python tools/benchmark_training.py --archs dino yolact
"""

import argparse
import contextlib
import copy
import os
import statistics
import time
from typing import List

import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_train_loader
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.fcos import FCOS
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.utils.events import EventStorage
from torch.profiler import ProfilerActivity, profile

import corrloss_d2  # noqa: F401
from corrloss_d2 import add_corrloss_config
from corrloss_d2.solver import build_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The first variant of each architecture is the reference of its ratios.
VARIANTS = {
    "retinanet": ("detectron2", "weight0", "corr"),
    "fcos": ("detectron2", "weight0", "corr"),
    "sparse_rcnn": ("weight0", "corr"),
    "dino": ("weight0", "corr", "align_detr"),
    "yolact": ("weight0", "corr"),
}
CONFIGS = {
    "retinanet": "retinanet_R_18_FPN_raccoon_scratch.yaml",
    "fcos": "fcos_R_18_FPN_raccoon_scratch.yaml",
    "sparse_rcnn": "sparse_rcnn_R_18_FPN_raccoon_scratch.yaml",
    "dino": "dino_R_18_4scale_raccoon_scratch.yaml",
    "yolact": "yolact_R_18_FPN_shapes_scratch.yaml",
}
# Config overrides of a variant beyond its correlation weight.
VARIANT_OPTS = {
    "align_detr": ["MODEL.CLS_LOSS.TYPE", "ia_bce", "MODEL.DINO.ONE_TO_MANY_K", 2],
}


def make_cfg(arch: str, device: str, weight: float, kind: str, opts=()):
    cfg = get_cfg()
    add_corrloss_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, "configs", "CPU", CONFIGS[arch]))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            device,
            "MODEL.CORR_LOSS.WEIGHT",
            weight,
            "MODEL.CORR_LOSS.TYPE",
            kind,
            "DATALOADER.NUM_WORKERS",
            0,
            *opts,
        ]
    )
    return cfg


def make_model(arch: str, variant: str, device: str, weight: float, kind: str, amp: bool = False):
    """The variant's model, with its config's optimiser as ``model.bench_optimizer``."""
    torch.manual_seed(0)
    cfg = make_cfg(
        arch, device, weight if variant == "corr" else 0.0, kind, VARIANT_OPTS.get(variant, ())
    )
    model = build_model(cfg)
    if variant == "detectron2" and arch == "retinanet":
        reference = RetinaNet(cfg)
        reference.load_state_dict(model.state_dict())
        model = reference.to(device)
    elif variant == "detectron2":
        f = cfg.MODEL.FCOS
        model = FCOS(
            backbone=copy.deepcopy(model.backbone),
            head=copy.deepcopy(model.head),
            head_in_features=model.head_in_features,
            num_classes=f.NUM_CLASSES,
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
        ).to(device)
    model.bench_optimizer = build_optimizer(cfg, model)
    model.bench_iter = 0
    if amp and device == "cuda":
        model.bench_scaler = torch.amp.GradScaler("cuda")
    return model


def fixed_batches(arch: str, device: str, count: int) -> List:
    torch.manual_seed(0)
    loader = iter(build_detection_train_loader(make_cfg(arch, device, 0.0, "pearson")))
    return [next(loader) for _ in range(count)]


def autocast(device: str, amp: bool):
    """The forward passes' precision context: float16 on CUDA, bfloat16 on the CPU, or none."""
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.float16 if device == "cuda" else torch.bfloat16)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def train(model, batches, iters: int, device: str, amp: bool = False) -> float:
    """Runs ``iters`` optimiser steps cycling through ``batches``, continuing the model's own
    optimizer and iteration count across calls; returns seconds."""
    model.train()
    scaler = getattr(model, "bench_scaler", None)
    start = time.perf_counter()
    with EventStorage(model.bench_iter) as storage:
        for i in range(iters):
            with autocast(device, amp):
                losses = model(batches[i % len(batches)])
            model.bench_optimizer.zero_grad()
            loss = sum(losses.values())
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(model.bench_optimizer)
                scaler.update()
            else:
                loss.backward()
                model.bench_optimizer.step()
            storage.iter += 1
        model.bench_iter = storage.iter
    synchronize(device)
    return time.perf_counter() - start


@torch.no_grad()
def infer(model, batches, iters: int, device: str, amp: bool = False) -> float:
    """Runs inference on ``iters`` batches cycling through ``batches``; returns seconds."""
    model.eval()
    start = time.perf_counter()
    for i in range(iters):
        with autocast(device, amp):
            model(batches[i % len(batches)])
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(models, variants, run, iters: int, block: int):
    """Median seconds per iteration of ``run(model, block)`` for each variant, timed in blocks
    whose order rotates so that no variant always runs first."""
    blocks = {v: [] for v in variants}
    for round_index in range(max(1, iters // block)):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            blocks[variant].append(run(models[variant], block) / block)
    return {v: statistics.median(times) for v, times in blocks.items()}


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
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=200, help="timed iterations per variant")
    parser.add_argument("--block", type=int, default=10, help="iterations per interleaved block")
    parser.add_argument("--archs", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weight", type=float, default=0.2)
    parser.add_argument("--kind", default="spearman")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="autocast forward passes (float16 + GradScaler on CUDA, bfloat16 on CPU)",
    )
    args = parser.parse_args()

    print(
        f"device={args.device} threads={torch.get_num_threads()} iters={args.iters} "
        f"block={args.block} amp={args.amp} correlation: {args.kind}, λ={args.weight}"
    )
    print(
        f"{'arch':<12}{'variant':<12}{'train it/s':>11}{'ratio':>7}{'infer img/s':>12}{'ratio':>7}"
        f"{'peak MiB':>10}{'ratio':>7}"
    )
    for arch in args.archs:
        variants = VARIANTS[arch]
        batches = fixed_batches(arch, args.device, 8)
        images_per_batch = len(batches[0])
        models = {
            v: make_model(arch, v, args.device, args.weight, args.kind, args.amp) for v in variants
        }
        for model in models.values():  # warm-up: allocator, numba compilation, dataloader-free
            train(model, batches, 3, args.device, args.amp)
            infer(model, batches, 2, args.device, args.amp)
        train_time = interleaved_medians(
            models,
            variants,
            lambda m, n: train(m, batches, n, args.device, args.amp),
            args.iters,
            args.block,
        )
        infer_time = interleaved_medians(
            models,
            variants,
            lambda m, n: infer(m, batches, n, args.device, args.amp),
            max(args.block, args.iters // 4),
            args.block,
        )
        peaks = {v: peak_memory(models[v], batches[0], args.device) for v in variants}
        reference = variants[0]
        for variant in variants:
            print(
                f"{arch:<12}{variant:<12}{1 / train_time[variant]:>11.3f}"
                f"{train_time[reference] / train_time[variant]:>7.3f}"
                f"{images_per_batch / infer_time[variant]:>12.2f}"
                f"{infer_time[reference] / infer_time[variant]:>7.3f}"
                f"{peaks[variant] / 2**20:>10.0f}{peaks[variant] / peaks[reference]:>7.3f}"
            )


if __name__ == "__main__":
    main()
