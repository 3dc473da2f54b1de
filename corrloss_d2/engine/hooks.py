"""Trainer hooks for exact stop-and-resume: the random state in every checkpoint, and a clean
stop on SIGTERM/SIGINT."""

import logging
import signal
import sys

import detectron2.utils.comm as comm
import numpy as np
import torch
from detectron2.engine import HookBase

from ..data.resumable import random_states, set_random_states
from .signals import FORWARDED_STOP_SIGNAL, INTERRUPTED_EXIT_MESSAGE, STOP_SIGNALS, signal_name

__all__ = ["RandomStateCheckpoint", "StopOnSignal"]

logger = logging.getLogger(__name__)


class RandomStateCheckpoint(HookBase):
    """Saves this process's python/numpy/torch random state in every checkpoint (through
    detectron2's hook ``state_dict``) and restores a loaded one when training starts, after the
    train loader's iterator exists (creating it draws from torch's random state): the model's
    own randomness (dropout, ...) continues as in a run that was never stopped."""

    def __init__(self):
        self.loaded = None

    def before_train(self):
        self.trainer._trainer._data_loader_iter  # creates the iterator now
        self.restore()

    def state_dict(self):
        python, (name, keys, pos, has_gauss, gauss), torch_state = random_states()
        # numpy's key array as a tensor: torch.load(weights_only=True) reads no numpy arrays.
        return {
            "python": python,
            "torch": torch_state,
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        }

    def load_state_dict(self, state):
        self.loaded = state

    def restore(self):
        if self.loaded is None:
            return
        version, internal, gauss = self.loaded["python"]
        name, keys, pos, has_gauss, cached = self.loaded["numpy"]
        set_random_states(
            (
                (version, tuple(internal), gauss),
                (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached),
                self.loaded["torch"],
            )
        )
        self.loaded = None


class StopOnSignal(HookBase):
    """On SIGTERM/SIGINT the current iteration ends, every process stops at the same iteration,
    ``model_<iter>.pth`` is saved (``last_checkpoint`` points to it) and the program exits with
    status 1 and a one-line message saying how to resume. Every process's position in the train
    stream (a :class:`~corrloss_d2.data.ResumableTrainLoader`) is gathered at each step with the
    stop flag, so the main process's checkpoints hold them all. Place it before detectron2's
    PeriodicCheckpointer."""

    SIGNALS = (*STOP_SIGNALS, FORWARDED_STOP_SIGNAL)

    def __init__(self, checkpointer, train_loader=None):
        self.checkpointer, self.train_loader = checkpointer, train_loader
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
            signal=signal_name(received),
            iteration=iteration,
            path=f"{self.checkpointer.save_dir}/{name}.pth",
        )
        if comm.is_main_process():
            print(message, file=sys.stderr, flush=True)
        comm.synchronize()  # a launcher ends every process once one has exited: print first
        sys.exit(1)
