"""Times forward+backward of every loss of corrloss_d2.losses and of soft_rank.

For 10^2..10^5 samples and 1..8 groups it prints the median time per call on one CPU thread (or
the device given), and the ratio against torchsort's soft rank when torchsort is importable
(ratio < 1: ours is faster).

    python tools/benchmark_losses.py [--sizes 100 1000 10000 100000] [--groups 1 8] [--device cpu]
"""
import argparse
import statistics
import time
from typing import Callable, Optional

import torch

from corrloss_d2.losses import (CORRELATION_KINDS, correlation_loss, ia_bce_loss, quality_focal_loss,
                                soft_rank, varifocal_loss)

NUM_CLASSES = 80


def median_ms(fn: Callable[[], None], device: torch.device, min_time_s: float = 0.3) -> float:
    def synced():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        synced()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time_s or len(times) < 5:
        t0 = time.perf_counter()
        synced()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def fwd_bwd(make_loss: Callable[[torch.Tensor], torch.Tensor], values: torch.Tensor):
    def run():
        x = values.detach().requires_grad_()
        make_loss(x).backward()
    return run


def torchsort_rank() -> Optional[Callable]:
    try:
        import torchsort
    except ImportError:
        return None
    return lambda x, s: torchsort.soft_rank(x, regularization="l2", regularization_strength=s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reference_rank = torchsort_rank()
    gen = torch.Generator().manual_seed(0)

    print(f"device={device} threads={args.threads} torch={torch.__version__} "
          f"torchsort={'yes' if reference_rank else 'not installed'}")
    header = f"{'case':<42}{'N':>8}{'groups':>8}{'ms':>10}"
    print(header + ("   ratio vs torchsort" if reference_rank else ""))
    print("-" * (len(header) + (21 if reference_rank else 0)))

    def report(case, n, groups, ms, ratio=None):
        line = f"{case:<42}{n:>8}{groups:>8}{ms:>10.3f}"
        print(line + (f"{ratio:>21.2f}" if ratio is not None else ""))

    for n in args.sizes:
        ious = torch.rand(n, generator=gen).to(device)
        scores = (0.5 * ious + 0.5 * torch.rand(n, generator=gen).to(device)).clamp(1e-4, 1 - 1e-4)
        for num_groups in args.groups:
            groups = torch.randint(0, num_groups, (n,), generator=gen).to(device)
            for kind in CORRELATION_KINDS:
                strengths = [1.0, 0.1 / n] if kind == "spearman" else [1.0]
                for strength in strengths:
                    ms = median_ms(fwd_bwd(lambda s: correlation_loss(
                        s, ious, kind, groups=groups if num_groups > 1 else None,
                        strength=strength), scores), device)
                    report(f"correlation_loss {kind} eps={strength:.0e}", n, num_groups, ms)
        rows = scores.reshape(1, n)
        for strength in (1.0, 0.1 / n):
            ms = median_ms(fwd_bwd(lambda x: soft_rank(x, strength).sum(), rows), device)
            ratio = None
            if reference_rank is not None:
                ref_ms = median_ms(fwd_bwd(lambda x: reference_rank(x, strength).sum(), rows), device)
                ratio = ms / ref_ms
            report(f"soft_rank eps={strength:.0e}", n, 1, ms, ratio)
        # Dense classification losses over n predictions x 80 classes, 10% positives.
        num_rows = max(1, n // NUM_CLASSES)
        logits = torch.randn(num_rows, NUM_CLASSES, generator=gen).to(device)
        labels = torch.full((num_rows,), NUM_CLASSES, dtype=torch.long)
        positive = torch.rand(num_rows, generator=gen) < 0.1
        labels[positive] = torch.randint(0, NUM_CLASSES, (int(positive.sum()),), generator=gen)
        labels, row_ious = labels.to(device), ious[:num_rows]
        for name, loss_fn in (("ia_bce_loss", ia_bce_loss), ("quality_focal_loss", quality_focal_loss),
                              ("varifocal_loss", varifocal_loss)):
            ms = median_ms(fwd_bwd(lambda x: loss_fn(x, labels, row_ious, normalizer=1.0), logits), device)
            report(f"{name} ({num_rows}x{NUM_CLASSES})", num_rows * NUM_CLASSES, 1, ms)


if __name__ == "__main__":
    main()
