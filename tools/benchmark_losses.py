"""Times forward+backward of soft_rank against torchsort, and of every loss of corrloss_d2.losses.

First the soft-rank comparison, on one thread, each group of cases timed in one interleaved loop
(one call of each in turn, so that another process loading the machine slows all of them alike):

* soft_rank (native) and torchsort's l2 soft_rank at n = 10^3, 10^4, 10^5, strengths 1 and 0.1/n,
  with their ratio (< 1: native is faster; the median over rounds of native / torchsort, each
  round's two calls back to back; torchsort only when importable);
* numpy's argsort of the same n float64 values alone, a reference for the machine's sort speed
  (it depends on the CPU's vector units: x86-simd-sort with AVX-512);
* the Spearman correlation loss over 10^4 positives (strengths 1 and 0.1/n), with the Pearson
  loss (the same code without the two soft ranks) beside it.

Times are the median over the repeats, in ms per call: wall time and the CPU time of the thread.
The CPU model, its AVX-512 flags and the load average are printed first: on a shared machine read
the ratios (same run, same conditions) rather than the absolute times.

Then the table of all losses over 10^2..10^5 samples and 1..8 groups (skip with --no-table).

    python tools/benchmark_losses.py [--rank-sizes 1000 10000 100000] [--seconds 3]
                                     [--sizes 100 1000 10000 100000] [--groups 1 8] [--no-table]
"""

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from corrloss_d2.losses import (
    CORRELATION_KINDS,
    correlation_loss,
    ia_bce_loss,
    quality_focal_loss,
    soft_rank,
    varifocal_loss,
)

NUM_CLASSES = 80


def cpu_description() -> str:
    """CPU model, AVX-512 flags and load average, from /proc/cpuinfo and os.getloadavg()."""
    model, flags = "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = value.split()
                    break
    except OSError:
        pass
    avx512 = sorted(flag for flag in flags if flag.startswith("avx512"))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"cpu: {model}, {os.cpu_count()} logical CPUs | avx512: "
        f"{'yes (' + ' '.join(avx512) + ')' if avx512 else 'no'} | load average: {load}"
    )


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


def interleaved_ms(
    cases: Dict[str, Callable[[], None]],
    seconds: float,
    min_repeats: int = 20,
    max_repeats: int = 20000,
) -> Dict[str, Tuple[List[float], List[float]]]:
    """Calls every case once per round until ``seconds`` have passed (and at least ``min_repeats``
    rounds); returns name -> (wall ms per round, thread CPU ms per round)."""
    for fn in cases.values():
        for _ in range(3):
            fn()
    times = {name: ([], []) for name in cases}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_repeats and (rounds < min_repeats or time.perf_counter() - start < seconds):
        for name, fn in cases.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            fn()
            times[name][1].append(1e3 * (time.thread_time() - c0))
            times[name][0].append(1e3 * (time.perf_counter() - w0))
        rounds += 1
    return times


def medians(times: Tuple[List[float], List[float]]) -> str:
    return f"{statistics.median(times[0]):.3f} / {statistics.median(times[1]):.3f}"


def median_ratio(a: List[float], b: List[float]) -> float:
    """Median over rounds of a / b: calls of one round ran back to back, under the same load."""
    return statistics.median(x / y for x, y in zip(a, b))


def fwd_bwd(make_loss: Callable[[torch.Tensor], torch.Tensor], values: torch.Tensor):
    def run():
        x = values.detach().requires_grad_()
        make_loss(x).backward()

    return run


def torchsort_rank() -> Optional[Callable]:
    try:
        import torchsort  # noqa: F401  (importable, not only installed)
    except ImportError:
        return None
    return lambda x, s: torchsort.soft_rank(x, regularization="l2", regularization_strength=s)


def samples(n: int, gen: torch.Generator, device: torch.device):
    """(scores, ious) as in detection: IoUs uniform, scores correlated with them, float32."""
    ious = torch.rand(n, generator=gen).to(device)
    scores = (0.5 * ious + 0.5 * torch.rand(n, generator=gen).to(device)).clamp(1e-4, 1 - 1e-4)
    return scores, ious


def soft_rank_comparison(sizes, seconds: float, gen: torch.Generator) -> None:
    reference_rank = torchsort_rank()
    print(
        "\nsoft_rank forward+backward of a (1, n) float32 row, ms per call: median wall / "
        "median thread CPU"
    )
    header = f"{'n':>7}{'strength':>10}{'native':>18}"
    if reference_rank is not None:
        header += f"{'torchsort':>18}{'ratio':>14}"
    header += f"{'np.argsort (f64)':>20}{'repeats':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        scores, _ = samples(n, gen, torch.device("cpu"))
        rows = scores.reshape(1, n)
        keys = -scores.double().numpy()
        for strength in (1.0, 0.1 / n):
            cases = {"native": fwd_bwd(lambda x: soft_rank(x, strength).sum(), rows)}
            if reference_rank is not None:
                cases["torchsort"] = fwd_bwd(lambda x: reference_rank(x, strength).sum(), rows)
            cases["argsort"] = lambda: np.argsort(keys)
            result = interleaved_ms(cases, seconds)
            line = f"{n:>7}{strength:>10.0e}{medians(result['native']):>18}"
            if reference_rank is not None:
                ratios = (
                    median_ratio(result["native"][0], result["torchsort"][0]),
                    median_ratio(result["native"][1], result["torchsort"][1]),
                )
                line += f"{medians(result['torchsort']):>18}{'{:.2f} / {:.2f}'.format(*ratios):>14}"
            line += f"{medians(result['argsort']):>20}{len(result['native'][0]):>9}"
            print(line)


def spearman_loss_timing(n: int, seconds: float, gen: torch.Generator) -> None:
    scores, ious = samples(n, gen, torch.device("cpu"))
    cases = {}
    for strength in (1.0, 0.1 / n):
        cases[f"spearman strength={strength:.0e}"] = fwd_bwd(
            lambda x, s=strength: correlation_loss(x, ious, "spearman", strength=s), scores
        )
    cases["pearson (no soft ranks)"] = fwd_bwd(
        lambda x: correlation_loss(x, ious, "pearson"), scores
    )
    result = interleaved_ms(cases, seconds)
    print(
        f"\ncorrelation_loss forward+backward over {n} positives, one group, ms per call: "
        "median wall / median thread CPU"
    )
    for name, times in result.items():
        print(f"  {name:<28}{medians(times):>18}   ({len(times[0])} repeats)")


def loss_table(sizes, group_counts, device: torch.device, gen: torch.Generator) -> None:
    reference_rank = torchsort_rank()
    print()
    header = f"{'case':<42}{'N':>8}{'groups':>8}{'ms':>10}"
    print(header + ("   ratio vs torchsort" if reference_rank else ""))
    print("-" * (len(header) + (21 if reference_rank else 0)))

    def report(case, n, groups, ms, ratio=None):
        line = f"{case:<42}{n:>8}{groups:>8}{ms:>10.3f}"
        print(line + (f"{ratio:>21.2f}" if ratio is not None else ""))

    for n in sizes:
        scores, ious = samples(n, gen, device)
        for num_groups in group_counts:
            groups = torch.randint(0, num_groups, (n,), generator=gen).to(device)
            for kind in CORRELATION_KINDS:
                strengths = [1.0, 0.1 / n] if kind == "spearman" else [1.0]
                for strength in strengths:
                    ms = median_ms(
                        fwd_bwd(
                            lambda s: correlation_loss(
                                s,
                                ious,
                                kind,
                                groups=groups if num_groups > 1 else None,
                                strength=strength,
                            ),
                            scores,
                        ),
                        device,
                    )
                    report(f"correlation_loss {kind} eps={strength:.0e}", n, num_groups, ms)
        rows = scores.reshape(1, n)
        for strength in (1.0, 0.1 / n):
            ms = median_ms(fwd_bwd(lambda x: soft_rank(x, strength).sum(), rows), device)
            ratio = None
            if reference_rank is not None:
                ref_ms = median_ms(
                    fwd_bwd(lambda x: reference_rank(x, strength).sum(), rows), device
                )
                ratio = ms / ref_ms
            report(f"soft_rank eps={strength:.0e}", n, 1, ms, ratio)
        # Dense classification losses over n predictions x 80 classes, 10% positives.
        num_rows = max(1, n // NUM_CLASSES)
        logits = torch.randn(num_rows, NUM_CLASSES, generator=gen).to(device)
        labels = torch.full((num_rows,), NUM_CLASSES, dtype=torch.long)
        positive = torch.rand(num_rows, generator=gen) < 0.1
        labels[positive] = torch.randint(0, NUM_CLASSES, (int(positive.sum()),), generator=gen)
        labels, row_ious = labels.to(device), ious[:num_rows]
        for name, loss_fn in (
            ("ia_bce_loss", ia_bce_loss),
            ("quality_focal_loss", quality_focal_loss),
            ("varifocal_loss", varifocal_loss),
        ):
            ms = median_ms(
                fwd_bwd(lambda x: loss_fn(x, labels, row_ious, normalizer=1.0), logits), device
            )
            report(f"{name} ({num_rows}x{NUM_CLASSES})", num_rows * NUM_CLASSES, 1, ms)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rank-sizes",
        type=int,
        nargs="+",
        default=[1000, 10000, 100000],
        help="n for the soft_rank / torchsort comparison",
    )
    parser.add_argument(
        "--spearman-size", type=int, default=10000, help="positives for the Spearman loss timing"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="time spent on each interleaved group of cases (default 3)",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100, 1000, 10000, 100000],
        help="N for the table of all losses",
    )
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu", help="device of the table of all losses")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--no-table", action="store_true", help="skip the table of all losses")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    try:
        from importlib.metadata import version

        import torchsort  # noqa: F401  (importable, not only installed)

        torchsort_version = version("torchsort")
    except ImportError:
        torchsort_version = "not installed"
    print(cpu_description())
    print(
        f"threads={args.threads} torch={torch.__version__} numpy={np.__version__} "
        f"torchsort={torchsort_version}"
    )
    soft_rank_comparison(args.rank_sizes, args.seconds, gen)
    spearman_loss_timing(args.spearman_size, args.seconds, gen)
    if not args.no_table:
        loss_table(args.sizes, args.groups, torch.device(args.device), gen)


if __name__ == "__main__":
    main()
