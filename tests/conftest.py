"""Fixtures the tests share: tiny configs, models and batches, the train_net.py runner and its
metrics, losses with gradients, and the development datasets.

The development data (raccoon, COCO128) is passed to the package through $CORRLOSS_DATA_ROOT; when
it is not set, the tests use the project's development copy beside the checkout
(``../shared/data``). Set before ``corrloss_d2`` is imported: it registers datasets on import.
"""

import importlib
import json
import os
import random
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("CORRLOSS_DATA_ROOT", os.path.join(os.path.dirname(REPO), "shared", "data"))

import pytest  # noqa: E402
import torch  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from tests import tiny  # noqa: E402


def pytest_configure(config):
    # Under pytest-xdist, share the cores among the workers (and the train_net.py processes they
    # start, which read OMP_NUM_THREADS) instead of each taking them all.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


# Modules whose tests share an expensive module-scoped fixture (trainings, a dataset written to
# disk): one worker runs each whole, so that the fixture runs once.
ONE_WORKER_MODULES = (
    "tests/integration/test_demo.py",
    "tests/integration/test_distributed_archs.py",
    "tests/integration/test_cityscapes_eval.py",
)


def module_of(nodeid: str) -> str:
    """The test module of a pytest node id ("tests/x/test_y.py::test_z[a]" -> its file)."""
    return nodeid.split("::")[0]


def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling, a few tests at a time to each worker, with the modules of
    ONE_WORKER_MODULES as single units (xdist's own ``--dist loadgroup`` marks tests by rewriting
    a node id attribute that pytest 9 no longer has)."""
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModulesScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = module_of(nodeid)
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModulesScheduling(config, log)


def pytest_addoption(parser):
    parser.addoption(
        "--shuffle-seed",
        type=int,
        default=None,
        help="shuffle the order of the test modules and of the tests in each module with this "
        "seed (the long tests still first); tools/run_tests.sh --repeat N runs N seeds",
    )


def pytest_collection_modifyitems(config, items):
    seed = config.getoption("--shuffle-seed")
    if seed is not None:
        # Modules stay contiguous, so module fixtures still run once; every pytest-xdist worker
        # collects the same items, so the same seed gives each the same order, as xdist requires.
        rng = random.Random(seed)
        modules = {}
        for item in items:
            modules.setdefault(module_of(item.nodeid), []).append(item)
        groups = list(modules.values())
        rng.shuffle(groups)
        for group in groups:
            rng.shuffle(group)
        items[:] = [item for group in groups for item in group]
    # The long tests (trainings, several processes) first, so that workers share them out and the
    # short ones fill the gaps, instead of one worker finishing the suite alone with a long test.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def data_root():
    """The development datasets' folder ($CORRLOSS_DATA_ROOT)."""
    root = os.environ["CORRLOSS_DATA_ROOT"]
    if not os.path.isdir(os.path.join(root, "raccoon")):
        pytest.fail(
            f"CORRLOSS_DATA_ROOT={root} holds no raccoon/ dataset: set it to the folder "
            "with the development datasets (raccoon, coco128)"
        )
    return root


@pytest.fixture
def tiny_cfg():
    return tiny.tiny_cfg


@pytest.fixture
def tiny_model():
    return tiny.tiny_model


@pytest.fixture
def synthetic_batch():
    return tiny.synthetic_batch


@pytest.fixture
def train_net(data_root):
    """Runs train_net.py in a subprocess (``cwd`` keyword); returns its output. It must succeed,
    or fail when ``expect_failure``."""

    def run(*args, cwd, expect_failure=False):
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "train_net.py"), *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=900,  # a hang guard: the longest run here takes about 1 min on 2 busy cores
        )
        assert (result.returncode != 0) == expect_failure, (
            result.stdout[-3000:] + result.stderr[-5000:]
        )
        return result.stdout + result.stderr

    return run


@pytest.fixture
def metrics():
    """The records of a run's ``metrics.json``, given its output folder."""

    def read(output_dir):
        with open(os.path.join(output_dir, "metrics.json")) as f:
            return [json.loads(line) for line in f]

    return read


@pytest.fixture
def losses_and_grads():
    """One training forward and backward of a model on a batch: (detached losses, gradients by
    parameter name, the event storage)."""

    def run(model, batch):
        model.train()
        model.zero_grad()
        with EventStorage() as storage:
            losses = model(batch)
            sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return {k: v.detach() for k, v in losses.items()}, grads, storage

    return run


@pytest.fixture
def matching_ks(monkeypatch):
    """The k of every one-to-k assignment the set criterion solves, in call order."""
    from corrloss_d2.modeling import set_criterion

    calls = []
    real = set_criterion.one_to_k_assignment

    def spy(cost, k):
        calls.append(k)
        return real(cost, k)

    monkeypatch.setattr(set_criterion, "one_to_k_assignment", spy)
    return calls


@pytest.fixture
def forbid_nms(monkeypatch):
    """Makes any call of torchvision's or detectron2's NMS fail (NMS-free detectors)."""

    def nms_called(*args, **kwargs):
        raise AssertionError("NMS was called on an NMS-free detector's path")

    for module in ("torchvision.ops", "torchvision.ops.boxes", "detectron2.layers.nms"):
        for name in ("nms", "batched_nms"):
            monkeypatch.setattr(importlib.import_module(module), name, nms_called)
