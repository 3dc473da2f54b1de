"""Stop signals: their names in messages, and the launching process's forwarding of them to the
training processes."""

import contextlib
import logging
import multiprocessing
import os
import signal

__all__ = [
    "STOP_SIGNALS",
    "FORWARDED_STOP_SIGNAL",
    "INTERRUPTED_EXIT_MESSAGE",
    "signal_name",
    "forward_stop_signals",
]

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# What the launching process sends its training processes on a stop signal: not a stop signal
# itself, so that one that reaches them twice (Ctrl-C signals the whole process group, the
# launcher forwards it) is not taken for the second signal that stops at once.
FORWARDED_STOP_SIGNAL = signal.SIGUSR1
INTERRUPTED_EXIT_MESSAGE = (
    "train_net.py: stopped by {signal} after iteration {iteration}; "
    "checkpoint {path}. Continue with the same command and --resume"
)


def signal_name(signum: int) -> str:
    if signum == FORWARDED_STOP_SIGNAL:
        return "SIGTERM/SIGINT (passed on by the launching process)"
    return signal.Signals(signum).name


@contextlib.contextmanager
def forward_stop_signals():
    """While it is open, a SIGTERM/SIGINT sent to this process (the launcher of the training
    processes, e.g. by a container runtime that signals its first process only) reaches every
    child process as ``FORWARDED_STOP_SIGNAL``, which :class:`StopOnSignal` takes as a stop
    request; this process goes on waiting for them. Yields the list of signals received."""
    received = []

    def forward(signum, frame):
        received.append(signum)
        logger.warning(
            "%s received: passed on to the training processes.", signal.Signals(signum).name
        )
        for child in multiprocessing.active_children():
            os.kill(child.pid, FORWARDED_STOP_SIGNAL)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
