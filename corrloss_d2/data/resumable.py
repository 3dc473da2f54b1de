"""A train loader whose sample stream can be saved in a checkpoint and continued exactly.

:class:`ResumableTrainLoader`: the train loader's sample stream (detectron2's ``TrainingSampler``
order) with each sample's position in it; its state (the seed, and per process the positions
consumed) is saved in every checkpoint, and ``--resume`` continues the stream where it stopped,
without repeating or skipping a sample. Each sample's random augmentation is drawn from a
generator seeded by (seed, process, position), so it does not depend on which worker maps it or
when, and batches are formed in the main process, so they do not depend on the workers either.
"""

import itertools
import logging
import random
import uuid

import detectron2.utils.comm as comm
import numpy as np
import torch
from detectron2.data.common import AspectRatioGroupedDataset, ToIterableDataset
from detectron2.data.samplers import TrainingSampler

__all__ = ["ResumableTrainLoader", "random_states", "set_random_states"]

POSITION_KEY = "_stream_position"
logger = logging.getLogger(__name__)


# Per process (main or loader worker): stream sampler token -> position of the index it yielded
# last. The mapper reads it there: detectron2 pickles the mapper apart from the sampler for
# spawned workers, so the two hold copies of the sampler, not the same object.
_YIELDED_POSITIONS = {}


def random_states():
    """This process's (python, numpy, torch) global random states."""
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def set_random_states(states) -> None:
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
        stream = itertools.islice(
            self._infinite_indices(),
            self._rank + self.start * self._world_size,
            None,
            self._world_size,
        )
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
        caller_states = random_states()
        seed = np.random.SeedSequence([self.sampler._seed, self.sampler._rank, position])
        seed = int(seed.generate_state(1)[0])
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            mapped = self.mapper(dataset_dict)
        finally:
            set_random_states(caller_states)
        if mapped is not None:
            mapped[POSITION_KEY] = position
        return mapped


class ResumableTrainLoader:
    """Wraps ``build_loader(sampler=, mapper=, total_batch_size=, aspect_ratio_grouping=)`` (a
    detectron2 train loader builder) so that its sample stream can be saved and continued; a
    checkpointable (``state_dict``).

    The loader's workers deliver single samples in stream order (they take turns one sample at a
    time) and batches of ``batch_size`` are formed here, in the main process, grouped by aspect
    ratio like detectron2's ``AspectRatioGroupedDataset`` when ``aspect_ratio_grouping``. So a
    batch's samples and their order depend on the stream alone: not on the number of workers,
    and not on a resume (detectron2 batches inside each worker, from chunks of the stream that a
    resume would cut differently; samples in another order sum the losses in another order)."""

    def __init__(
        self, build_loader, mapper, seed: int, *, batch_size: int, aspect_ratio_grouping: bool
    ):
        self.sampler = _StreamSampler(1, seed)  # its size is the dataset's, known once built
        self.batch_size, self.aspect_ratio_grouping = batch_size, aspect_ratio_grouping
        self.loader = build_loader(
            sampler=self.sampler,
            mapper=_PositionSeededMapper(mapper, self.sampler),
            total_batch_size=comm.get_world_size(),
            aspect_ratio_grouping=False,
        )
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
        # which a resumed run restores after this call (RandomStateCheckpoint.before_train).
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
        return {
            "seed": self.sampler._seed,
            "processes": self.all_processes or [self.process_state()],
        }

    def load_state_dict(self, state):
        if len(state["processes"]) != comm.get_world_size():
            logger.warning(
                "The checkpoint's train stream is of %d processes, this run has %d: "
                "the sample stream starts again.",
                len(state["processes"]),
                comm.get_world_size(),
            )
            return
        self.sampler._seed = state["seed"]
        self.next_position, consumed = state["processes"][comm.get_rank()]
        self.consumed = set(consumed)
