"""Launching ``train_net.py``'s processes: detectron2's ``launch`` with stop signals passed on to
the training processes and input errors reported in one line, whichever process met them."""

import contextlib
import functools
import logging
import re
import sys
from typing import Callable, Optional

import torch.distributed as dist
from detectron2.engine import launch
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from .. import errors
from ..config import load_corrloss_config
from ..errors import InputError
from .signals import forward_stop_signals, signal_name

__all__ = ["launch_main", "launch_processes", "input_error_message"]

# How an InputError is named in a traceback: 'corrloss_d2.errors.DatasetError: <message>'.
_NAMED_INPUT_ERROR = re.compile(rf"{re.escape(errors.__name__)}\.(\w+): ")


def input_error_message(error: Exception) -> Optional[str]:
    """The message of an InputError, or of the last InputError named in the text of an error
    that carries one with its traceback (a DataLoader worker's, another process's); None when
    there is none."""
    text = str(error)
    named = [
        match
        for match in _NAMED_INPUT_ERROR.finditer(text)
        if issubclass(getattr(errors, match.group(1), type(None)), InputError)
    ]
    if named:
        return text[named[-1].end() :].strip()
    return text if isinstance(error, InputError) else None


def _call_then_close_process_group(main_func: Callable, *args):
    result = main_func(*args)
    if dist.is_initialized():
        # A GLOO group left to the interpreter's exit can abort the process ("terminate called
        # without an active exception") once its peers are gone: wait for them, then close it.
        dist.barrier()
        dist.destroy_process_group()
    return result


def launch_processes(main_func: Callable, num_gpus_per_machine: int, **kwargs) -> None:
    """detectron2's ``launch(main_func, num_gpus_per_machine, **kwargs)``, whose processes close
    their process group once ``main_func`` returned in all of them, so that none exits with a
    live GLOO/NCCL group. ``main_func`` must be picklable (a module-level function)."""
    launch(
        functools.partial(_call_then_close_process_group, main_func),
        num_gpus_per_machine,
        **kwargs,
    )


def launch_main(main_func: Callable, args) -> None:
    """Runs ``main_func(args)`` in ``args.num_gpus`` processes per machine (detectron2's
    ``launch``; ``args`` from ``default_argument_parser``). The config is checked first, before
    any process starts. A wrong input (config file, config value, dataset, image) ends the
    program with its message alone on stderr (``train_net.py: error: ...``, exit status 1),
    without a traceback, whichever process met it. With several processes, a SIGTERM/SIGINT
    sent to this one is passed on to them (see :func:`forward_stop_signals`)."""
    logging.getLogger("corrloss_d2").info("Command line arguments: %s", args)
    try:
        load_corrloss_config(args.config_file, args.opts)
        # With more than one process this one only waits for the training processes.
        spawns = args.num_gpus * args.num_machines > 1
        with forward_stop_signals() if spawns else contextlib.nullcontext([]) as stop_signals:
            launch_processes(
                main_func,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(args,),
            )
    except (InputError, ProcessRaisedException) as error:
        message = input_error_message(error)
        if message is None:
            raise
        sys.exit(f"train_net.py: error: {message}")
    except ProcessExitedException as error:
        if not stop_signals:
            raise
        # The training processes stopped on the signal and said how to resume (exit status 1).
        sys.exit(
            1
            if error.exit_code == 1
            else f"train_net.py: stopped by {signal_name(stop_signals[0])} before training started"
        )
