"""Every meta-architecture trained by two CPU processes through ``launch_processes`` (GLOO) and
DDP, as ``train_net.py --num-gpus 2`` trains them: finite losses, identical parameters after the
steps, loss normalisers averaged over the processes, and the logged ρ of the correlation term
computed per process (the default) or over both processes' positives
(``MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES``).

One launch trains every case; each process saves what it saw (its losses, parameters, the
samples it fed the correlation term, the normalisers, the ρ it logged) for the tests to compare.
"""

import datetime
import os

import detectron2.engine.defaults as engine_defaults
import pytest
import torch
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from corrloss_d2.engine import launch_processes
from corrloss_d2.engine.trainer import ddp_without_device_ids_for_cpu_models
from corrloss_d2.losses import correlation_coefficients
from corrloss_d2.modeling import ClassificationLoss, correlation_term
from tests.architectures import ARCHITECTURES
from tests.tiny import synthetic_batch, tiny_cfg, tiny_model

pytestmark = pytest.mark.slow

WORLD = 2
STEPS = 2
IMAGES_PER_PROCESS = 2
# A case for every architecture of tests/architectures.py: its own correlation type and
# classification loss.
CASES = {
    "CorrRetinaNet": ["MODEL.CORR_LOSS.TYPE", "pearson"],  # one ρ per FPN level
    "CorrFCOS": ["MODEL.CORR_LOSS.TYPE", "concordance", "MODEL.CLS_LOSS.TYPE", "ia_bce"],
    "CorrATSS": ["MODEL.CORR_LOSS.TYPE", "concordance"],
    "CorrSparseRCNN": [
        "MODEL.CORR_LOSS.TYPE",
        "spearman",
        "MODEL.CORR_LOSS.RANK_STRENGTH",
        1e-3,
        "MODEL.CLS_LOSS.TYPE",
        "ia_bce",
        "MODEL.SPARSE_RCNN.ONE_TO_MANY_K",
        2,
    ],
    "CorrDINO": [
        "MODEL.CORR_LOSS.TYPE",
        "pearson",
        "MODEL.CLS_LOSS.TYPE",
        "ia_bce",
        "MODEL.DINO.ONE_TO_MANY_K",
        2,
    ],
    "CorrYOLACT": ["MODEL.CORR_LOSS.TYPE", "concordance"],  # one ρ per image, summed
}
# The dense detectors' loss normaliser: (initial value, EMA momentum); detectron2's for RetinaNet
# and FCOS, the iteration's own count for ATSS (as released).
NORMALIZER_EMA = {"CorrRetinaNet": (100, 0.9), "CorrFCOS": (300, 0.9), "CorrATSS": (100, 0.0)}


def train_one_case(arch, gather, rank):
    """Trains ``arch`` for STEPS SGD steps under DDP on this process's own images."""
    model = tiny_model(
        arch,
        "MODEL.CORR_LOSS.WEIGHT",
        0.2,
        "MODEL.CORR_LOSS.GATHER_ACROSS_PROCESSES",
        gather,
        *CASES[arch],
    )
    model.train()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ddp_without_device_ids_for_cpu_models():  # as CorrLossTrainer builds it
        ddp = engine_defaults.create_ddp_model(model, broadcast_buffers=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    seen = {"samples": [], "normalizers": [], "losses": [], "num_gt": [], "max_gt": []}
    real_coefficients, real_classification = correlation_coefficients, ClassificationLoss.forward

    def coefficients_spy(scores, ious, kind, **kwargs):
        groups = kwargs.get("groups")
        seen["samples"][-1].append(
            {
                "scores": scores.detach().clone(),
                "ious": ious.clone(),
                "groups": None if groups is None else groups.clone(),
                "kind": kind,
                **kwargs,
            }
        )
        return real_coefficients(scores, ious, kind, **kwargs)

    def classification_spy(self, logits, labels, ious, normalizer, weights=None):
        seen["normalizers"][-1].append(float(normalizer))
        return real_classification(self, logits, labels, ious, normalizer, weights)

    correlation_term.correlation_coefficients = coefficients_spy
    ClassificationLoss.forward = classification_spy
    try:
        with EventStorage() as storage:
            for step in range(STEPS):
                seen["samples"].append([])
                seen["normalizers"].append([])
                batch = synthetic_batch(IMAGES_PER_PROCESS, seed=100 * rank + step)
                seen["num_gt"].append(sum(len(x["instances"]) for x in batch))
                seen["max_gt"].append(max(len(x["instances"]) for x in batch))
                losses = ddp(batch)
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
                seen["losses"].append({k: v.item() for k, v in losses.items()})
                storage.step()
    finally:
        correlation_term.correlation_coefficients = real_coefficients
        ClassificationLoss.forward = real_classification
    seen["logged"] = {
        name: dict((it, value) for value, it in history.values())
        for name, history in storage.histories().items()
        if name.startswith("corr/rho") or name == "num_pos_anchors"
    }
    seen["initial"] = initial
    seen["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return seen


def train_every_case(out_dir):
    rank = comm.get_rank()
    torch.set_num_threads(1)
    results = {
        (arch, gather): train_one_case(arch, gather, rank)
        for arch in ARCHITECTURES
        for gather in (False, True)
    }
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``runs[arch, gather][rank]``: what process ``rank`` saw."""
    out_dir = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "")  # GLOO on the CPU even where GPUs exist
        launch_processes(
            train_every_case,
            WORLD,
            dist_url=f"file://{out_dir / 'rendezvous'}",
            args=(str(out_dir),),
            # How long a process waits for the other at a collective: the steps here take seconds,
            # and a process that fails ends the launch at once (torch.multiprocessing.spawn).
            timeout=datetime.timedelta(minutes=10),
        )
    per_rank = [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]
    return {case: [per_rank[r][case] for r in range(WORLD)] for case in per_rank[0]}


def logged_rho(seen, step, call, arch):
    """The ρ a process logged for correlation call ``call`` of ``step``, None if none."""
    suffix = ARCHITECTURES[arch].corr_suffixes()[call]
    return seen["logged"].get("corr/rho" + suffix, {}).get(step)


def rho_of(samples):
    """(ρ as the hook logs it: mean over valid groups, or None without one) of the samples of
    one or more processes, computed here in one process."""
    scores, ious = (torch.cat([s[key] for s in samples]) for key in ("scores", "ious"))
    groups = None if samples[0]["groups"] is None else torch.cat([s["groups"] for s in samples])
    first = samples[0]
    corr = correlation_coefficients(
        scores,
        ious,
        first["kind"],
        groups=groups,
        strength=first["strength"],
        min_samples=first["min_samples"],
    )
    return 1 - corr.loss().item() if bool(corr.valid.any()) else None


@pytest.mark.parametrize("gather", [False, True])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_processes_stay_in_step(runs, arch, gather):
    ranks = runs[arch, gather]
    for seen in ranks:
        assert len(seen["losses"]) == STEPS
        for losses in seen["losses"]:
            assert any(k.startswith("loss_corr") for k in losses)
            assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert ranks[0]["losses"][0] != ranks[1]["losses"][0], "the processes must see different images"
    reference = ranks[0]["params"]
    assert any(not torch.equal(reference[n], ranks[0]["initial"][n]) for n in reference)
    # Exact on any CPU: both processes apply the same update to the same weights, with the same
    # all-reduced gradient (a sum of two values, the same in either order).
    for seen in ranks[1:]:
        assert seen["params"].keys() == reference.keys()
        for name, value in seen["params"].items():
            assert torch.equal(value, reference[name]), f"{name} differs across processes"


# YOLACT divides by each process's own positive count, as released (mmdetection's YOLACT head).
@pytest.mark.parametrize("arch", [arch for arch in ARCHITECTURES if arch != "CorrYOLACT"])
def test_loss_normalisers_are_averaged_over_processes(runs, arch):
    ranks = runs[arch, False]
    # The dense detectors: an EMA of the positive count, each step's averaged over processes.
    if ARCHITECTURES[arch].family == "dense":
        counts = [
            [seen["logged"]["num_pos_anchors"][s] * IMAGES_PER_PROCESS for s in range(STEPS)]
            for seen in ranks
        ]
        expected, (ema, momentum) = [], NORMALIZER_EMA[arch]
        for step in range(STEPS):
            ema = momentum * ema + (1 - momentum) * max(sum(c[step] for c in counts) / WORLD, 1)
            expected.append(ema)
    else:  # ground-truth boxes averaged over processes
        counts = [seen["num_gt"] for seen in ranks]
        expected = [max(sum(c[step] for c in counts) / WORLD, 1) for step in range(STEPS)]
    assert counts[0] != counts[1], "the processes must have different counts to average"
    for seen in ranks:
        for step, normalizers in enumerate(seen["normalizers"]):
            if arch == "CorrDINO":  # encoder, 2 layers; then the 2 layers' denoising queries,
                # normalised by the averaged count times this process's denoising groups
                groups = tiny_cfg(arch).MODEL.DINO.DN_NUMBER // seen["max_gt"][step]
                assert normalizers[3:] == pytest.approx([expected[step] * groups] * 2)
                normalizers = normalizers[:3]
            assert normalizers and all(n == pytest.approx(expected[step]) for n in normalizers)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_gathered_rho_is_rho_over_all_processes_samples(runs, arch):
    ranks = runs[arch, True]
    compared = pooled_differs = 0
    for step in range(STEPS):
        for call in range(len(ARCHITECTURES[arch].corr_suffixes())):
            samples = [seen["samples"][step][call] for seen in ranks]
            assert all(s["gather_across_processes"] for s in samples)
            expected = rho_of(samples)
            logged = [logged_rho(seen, step, call, arch) for seen in ranks]
            if expected is None:
                assert logged == [None] * WORLD
                continue
            assert logged[0] == logged[1]
            assert logged[0] == pytest.approx(expected, rel=1e-5, abs=1e-6)
            compared += 1
            own = [rho_of([s]) for s in samples]
            pooled_differs += any(r is None or abs(r - expected) > 1e-4 for r in own)
    assert compared and pooled_differs, "the pooled ρ must be measured and differ from a process's"


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_rho_per_process_by_default(runs, arch):
    compared = 0
    for seen in runs[arch, False]:
        for step in range(STEPS):
            for call, samples in enumerate(seen["samples"][step]):
                assert not samples["gather_across_processes"]
                expected = rho_of([samples])
                logged = logged_rho(seen, step, call, arch)
                assert (logged is None) == (expected is None)
                if expected is not None:
                    assert logged == pytest.approx(expected, rel=1e-5, abs=1e-6)
                    compared += 1
    assert compared
