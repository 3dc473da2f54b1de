"""Times forward+backward of soft_rank's two exact paths, and torchsort's, on the same inputs.

For each n (values), G (groups, random ids as in correlation_loss) and strength (1, 1/m and 0.1/m
for m = n / G values per group: one block per group, blocks of all sizes, nearly exact ranks),
one interleaved loop (one call of each case in turn, --repeats rounds) times grouped_soft_rank
forward+backward of float32 scores (as in tools/benchmark_losses.py) by:

* numba: the compiled CPU kernel (backend="numba"), the baseline of every ratio;
* torch cpu: the torch path (backend="torch") on the CPU;
* torchsort: torchsort's l2 soft_rank of the values as one row (G = 1 only), when importable;
* with CUDA: the torch path on the device (what CUDA tensors get by default) and the numba kernel
  on CUDA tensors (through the host and back), each call followed by a synchronisation.

Each cell: the median wall time in ms per call and, in brackets, the median over rounds of its
time / numba's in the same round (> 1: slower than the numba kernel). One torch CPU thread.

    python tools/benchmark_soft_rank.py [--sizes 100 1000 4000] [--groups 1 16 256] [--repeats 30]
"""

import argparse
import statistics
from typing import Callable, Dict, List, Tuple

import torch
from benchmark_losses import (
    cpu_description,
    fwd_bwd,
    interleaved_ms,
    median_ratio,
    samples,
    torchsort_rank,
)

from corrloss_d2.losses import grouped_soft_rank

# label -> strength for m values per group.
STRENGTHS = {"1": lambda m: 1.0, "1/m": lambda m: 1.0 / m, "0.1/m": lambda m: 0.1 / m}
CELL = 18


def synchronised(run: Callable[[], None]) -> Callable[[], None]:
    def run_and_wait():
        run()
        torch.cuda.synchronize()

    return run_and_wait


def rank_cases(values, groups, num_groups, strength, cuda, reference_rank):
    """name -> forward+backward of one call, for the cases that apply (numba first)."""

    def path(backend, device):
        g = groups.to(device)
        run = fwd_bwd(
            lambda x: grouped_soft_rank(x, g, num_groups, strength, backend=backend).sum(),
            values.to(device),
        )
        return synchronised(run) if device.type == "cuda" else run

    cpu = torch.device("cpu")
    cases = {"numba": path("numba", cpu), "torch cpu": path("torch", cpu)}
    if reference_rank is not None and num_groups == 1:
        cases["torchsort"] = fwd_bwd(
            lambda x: reference_rank(x.reshape(1, -1), strength).sum(), values
        )
    if cuda is not None:
        cases["torch cuda"] = path("native", cuda)  # the default for CUDA tensors
        cases["numba cuda"] = path("numba", cuda)
    return cases


def cell(name: str, times: Dict[str, Tuple[List[float], List[float]]], missing: str) -> str:
    """``name``'s median ms and ratio to numba's, or ``missing`` where it did not run."""
    if name not in times:
        return missing
    wall = times[name][0]
    if name == "numba":
        return f"{statistics.median(wall):.3f}"
    return f"{statistics.median(wall):.3f} ({median_ratio(wall, times['numba'][0]):.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000], help="n")
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 16, 256], help="G")
    parser.add_argument("--repeats", type=int, default=30, help="rounds per row (default 30)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    reference_rank = torchsort_rank()
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    print(cpu_description())
    print(
        f"torch={torch.__version__} torchsort="
        f"{'importable' if reference_rank is not None else 'not installed'} cuda="
        f"{torch.cuda.get_device_name(cuda) if cuda is not None else 'not available'}"
    )
    missing = {
        "torchsort": "not installed" if reference_rank is None else "n/a (groups)",
        "torch cuda": "no CUDA",
        "numba cuda": "no CUDA",
    }
    names = ["numba", "torch cpu", "torchsort", "torch cuda", "numba cuda"]
    print("\ngrouped_soft_rank forward+backward, median wall ms per call (time / numba's)")
    header = f"{'n':>6}{'G':>5}{'strength':>10}" + "".join(f"{name:>{CELL}}" for name in names)
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        values, _ = samples(n, gen, torch.device("cpu"))
        for num_groups in args.groups:
            groups = torch.randint(0, num_groups, (n,), generator=gen)
            for label, strength_for in STRENGTHS.items():
                strength = strength_for(n / num_groups)
                cases = rank_cases(values, groups, num_groups, strength, cuda, reference_rank)
                times = interleaved_ms(cases, 0.0, args.repeats, args.repeats)
                line = f"{n:>6}{num_groups:>5}{label:>10}"
                print(
                    line
                    + "".join(f"{cell(name, times, missing.get(name)):>{CELL}}" for name in names)
                )


if __name__ == "__main__":
    main()
