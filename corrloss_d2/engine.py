"""Exact stop-and-resume for ``train_net.py``'s trainer.

- :class:`ResumableTrainLoader`: the train loader's sample stream (detectron2's
  ``TrainingSampler`` order) with each sample's position in it; its state (the seed, and per
  process the positions consumed) is saved in every checkpoint, and ``--resume`` continues the
  stream where it stopped, without repeating or skipping a sample. Each sample's random
  augmentation is drawn from a generator seeded by (seed, process, position), so it does not
  depend on which worker maps it or when.
- :class:`RandomState`: the main process's torch/numpy/python random state, saved with the
  checkpoint and restored when training resumes (the model's own randomness, e.g. dropout).
- :class:`StopOnSignal`: on SIGTERM/SIGINT the current iteration ends, every process stops at
  the same iteration, ``model_<iter>.pth`` is saved (``last_checkpoint`` points to it) and the
  program exits with status 1 and a one-line message saying how to resume.
- :func:`forward_stop_signals`: in the process that launched the training processes, a
  SIGTERM/SIGINT is passed on to them (as ``FORWARDED_STOP_SIGNAL``) instead of ending it alone.
"""
import contextlib
import itertools
import logging
import multiprocessing
import os
import random
import signal
import sys
import uuid

import numpy as np
import torch

import detectron2.utils.comm as comm
from detectron2.data.common import AspectRatioGroupedDataset, ToIterableDataset
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase

__all__ = ["ResumableTrainLoader", "RandomState", "Normalizers", "StopOnSignal",
           "forward_stop_signals", "INTERRUPTED_EXIT_MESSAGE", "FORWARDED_STOP_SIGNAL"]

POSITION_KEY = "_stream_position"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What the launching process sends its training processes on a stop signal: not a stop signal
# itself, so that one that reaches them twice (Ctrl-C signals the whole process group, the
# launcher forwards it) is not taken for the second signal that stops at once.
FORWARDED_STOP_SIGNAL = signal.SIGUSR1
INTERRUPTED_EXIT_MESSAGE = ("train_net.py: stopped by {signal} after iteration {iteration}; "
                            "checkpoint {path}. Continue with the same command and --resume")
logger = logging.getLogger(__name__)


# Per process (main or loader worker): stream sampler token -> position of the index it yielded
# last. The mapper reads it there: detectron2 pickles the mapper apart from the sampler for
# spawned workers, so the two hold copies of the sampler, not the same object.
_YIELDED_POSITIONS = {}


def _rng_states():
    """This process's (python, numpy, torch) global random states."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _set_rng_states(states) -> None:
    python, numpy_state, torch_state = states
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(torch_state)


class _StreamSampler(TrainingSampler):
    """detectron2's TrainingSampler stream for this process, started at position ``start``
    without the positions in ``skip``; publishes the position of the index it yields last in
    ``_YIELDED_POSITIONS[self.token]``."""

    def __init__(self, size: int, seed: int):
        super().__init__(size, shuffle=True, seed=seed)
        self.start, self.skip, self.token = 0, frozenset(), uuid.uuid4().hex

    def __iter__(self):
        stream = itertools.islice(self._infinite_indices(),
                                  self._rank + self.start * self._world_size, None, self._world_size)
        for position, index in zip(itertools.count(self.start), stream):
            if position not in self.skip:
                _YIELDED_POSITIONS[self.token] = position
                yield index


class _PositionSeededMapper:
    """Maps a dataset dict with python/numpy/torch random state seeded from (seed, process,
    stream position), the caller's random state left as it was; the result carries the position."""

    def __init__(self, mapper, sampler: _StreamSampler):
        self.mapper, self.sampler = mapper, sampler

    def __call__(self, dataset_dict):
        position = _YIELDED_POSITIONS[self.sampler.token]
        caller_states = _rng_states()
        seed = np.random.SeedSequence([self.sampler._seed, self.sampler._rank, position])
        seed = int(seed.generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            mapped = self.mapper(dataset_dict)
        finally:
            _set_rng_states(caller_states)
        if mapped is not None:
            mapped[POSITION_KEY] = position
        return mapped


class ResumableTrainLoader:
    """Wraps ``build_loader(sampler=..., mapper=..., total_batch_size=..., aspect_ratio_grouping=...)``
    (a detectron2 train loader builder) so that its sample stream can be saved and continued; a
    checkpointable (``state_dict``).

    The loader's workers deliver single samples in stream order (they take turns one sample at a
    time) and batches of ``batch_size`` are formed here, in the main process, grouped by aspect
    ratio like detectron2's ``AspectRatioGroupedDataset`` when ``aspect_ratio_grouping``. So a
    batch's samples and their order depend on the stream alone: not on the number of workers,
    and not on a resume (detectron2 batches inside each worker, from chunks of the stream that a
    resume would cut differently; samples in another order sum the losses in another order)."""

    def __init__(self, build_loader, mapper, seed: int, *, batch_size: int,
                 aspect_ratio_grouping: bool):
        self.sampler = _StreamSampler(1, seed)  # its size is the dataset's, known once built
        self.batch_size, self.aspect_ratio_grouping = batch_size, aspect_ratio_grouping
        self.loader = build_loader(sampler=self.sampler,
                                   mapper=_PositionSeededMapper(mapper, self.sampler),
                                   total_batch_size=comm.get_world_size(),
                                   aspect_ratio_grouping=False)
        inner = self.loader
        while not isinstance(inner, ToIterableDataset):
            inner = inner.dataset
        self.sampler._size = len(inner.dataset)
        self.next_position, self.consumed = 0, set()  # all positions < next_position consumed
        self.all_processes = None  # every process's (next_position, consumed), see StopOnSignal

    def _batches(self, samples):
        if self.aspect_ratio_grouping:
            yield from AspectRatioGroupedDataset(samples, self.batch_size)
            return
        while True:
            yield list(itertools.islice(samples, self.batch_size))

    def __iter__(self):
        # Samples waiting in a batch not yet complete were not consumed: a resumed stream
        # delivers them first, in their order, and so refills the batches as they were.
        self.sampler.start = self.next_position
        self.sampler.skip = frozenset(self.consumed)
        # The loader's iterator now, not at the first batch: it draws from torch's random state,
        # which a resumed run restores after this call (StopOnSignal.before_train).
        singles = iter(self.loader)
        return self._consumed_batches(itertools.chain.from_iterable(singles))

    def _consumed_batches(self, samples):
        for batch in self._batches(samples):
            self.consumed.update(d.pop(POSITION_KEY) for d in batch)
            while self.next_position in self.consumed:
                self.consumed.discard(self.next_position)
                self.next_position += 1
            yield batch

    def process_state(self):
        return self.next_position, sorted(self.consumed)

    def state_dict(self):
        return {"seed": self.sampler._seed,
                "processes": self.all_processes or [self.process_state()]}

    def load_state_dict(self, state):
        if len(state["processes"]) != comm.get_world_size():
            logger.warning("The checkpoint's train stream is of %d processes, this run has %d: "
                           "the sample stream starts again.", len(state["processes"]),
                           comm.get_world_size())
            return
        self.sampler._seed = state["seed"]
        self.next_position, consumed = state["processes"][comm.get_rank()]
        self.consumed = set(consumed)


class RandomState:
    """This process's python/numpy/torch random state as a checkpointable; a loaded state is
    applied by :meth:`restore` (when training starts, after the data loader iterator exists)."""

    def __init__(self):
        self.loaded = None

    def state_dict(self):
        python, (name, keys, pos, has_gauss, gauss), torch_state = _rng_states()
        # numpy's key array as a tensor: torch.load(weights_only=True) reads no numpy arrays.
        return {"python": python, "torch": torch_state,
                "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}

    def load_state_dict(self, state):
        self.loaded = state

    def restore(self):
        if self.loaded is None:
            return
        version, internal, gauss = self.loaded["python"]
        name, keys, pos, has_gauss, cached = self.loaded["numpy"]
        _set_rng_states(((version, tuple(internal), gauss),
                         (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached),
                         self.loaded["torch"]))
        self.loaded = None


class Normalizers:
    """The model's loss normalisers (detectron2's dense detectors keep an EMA of the positive
    count in a float attribute, outside the state dict) as a checkpointable."""

    def __init__(self, model):
        self.modules = dict(getattr(model, "module", model).named_modules())

    def state_dict(self):
        return {f"{name}.{key}": value for name, module in self.modules.items()
                for key, value in vars(module).items()
                if key.endswith("normalizer") and isinstance(value, (int, float))}

    def load_state_dict(self, state):
        for path, value in state.items():
            name, key = path.rsplit(".", 1)
            setattr(self.modules[name], key, value)


def signal_name(signum: int) -> str:
    if signum == FORWARDED_STOP_SIGNAL:
        return "SIGTERM/SIGINT (passed on by the launching process)"
    return signal.Signals(signum).name


class StopOnSignal(HookBase):
    """Place it before detectron2's PeriodicCheckpointer. See the module's docstring."""

    SIGNALS = (*STOP_SIGNALS, FORWARDED_STOP_SIGNAL)

    def __init__(self, checkpointer, train_loader=None, random_state=None):
        self.checkpointer, self.train_loader, self.random_state = checkpointer, train_loader, random_state
        self.received, self.received_directly, self.previous = None, None, {}

    def _handle(self, signum, frame):
        if signum != FORWARDED_STOP_SIGNAL:
            if self.received_directly is not None:  # a second one: stop now, the default way
                signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))
                signal.raise_signal(signum)
            self.received_directly = signum
        if self.received is None:
            self.received = signum
            logger.warning("%s received: stopping after this iteration.", signal_name(signum))

    def before_train(self):
        self.trainer._trainer._data_loader_iter  # create it now: it draws from torch's RNG
        if self.random_state is not None:
            self.random_state.restore()
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)

    def after_train(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def after_step(self):
        received = self.received or 0
        if comm.get_world_size() > 1:
            own = self.train_loader.process_state() if self.train_loader is not None else None
            gathered = comm.all_gather((received, own))
            received = max(r for r, _ in gathered)
            if self.train_loader is not None:
                self.train_loader.all_processes = [state for _, state in gathered]
        if not received:
            return
        iteration = self.trainer.iter
        name = f"model_{iteration:07d}"
        self.checkpointer.save(name, iteration=iteration)  # writes on the main process only
        comm.synchronize()
        message = INTERRUPTED_EXIT_MESSAGE.format(
            signal=signal_name(received), iteration=iteration,
            path=f"{self.checkpointer.save_dir}/{name}.pth")
        if comm.is_main_process():
            print(message, file=sys.stderr, flush=True)
        comm.synchronize()  # a launcher ends every process once one has exited: print first
        sys.exit(1)


@contextlib.contextmanager
def forward_stop_signals():
    """While it is open, a SIGTERM/SIGINT sent to this process (the launcher of the training
    processes, e.g. by a container runtime that signals its first process only) reaches every
    child process as ``FORWARDED_STOP_SIGNAL``, which :class:`StopOnSignal` takes as a stop
    request; this process goes on waiting for them. Yields the list of signals received."""
    received = []

    def forward(signum, frame):
        received.append(signum)
        logger.warning("%s received: passed on to the training processes.",
                       signal.Signals(signum).name)
        for child in multiprocessing.active_children():
            os.kill(child.pid, FORWARDED_STOP_SIGNAL)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
