"""Training: the trainer ``train_net.py`` runs, its hooks for exact stop-and-resume, and the
launcher around detectron2's ``launch``."""

from .hooks import RandomStateCheckpoint, StopOnSignal
from .launch import input_error_message, launch_main, launch_processes
from .signals import (
    FORWARDED_STOP_SIGNAL,
    INTERRUPTED_EXIT_MESSAGE,
    forward_stop_signals,
    signal_name,
)
from .trainer import CorrLossTrainer, main, setup

__all__ = [
    "CorrLossTrainer",
    "FORWARDED_STOP_SIGNAL",
    "INTERRUPTED_EXIT_MESSAGE",
    "RandomStateCheckpoint",
    "StopOnSignal",
    "forward_stop_signals",
    "input_error_message",
    "launch_main",
    "launch_processes",
    "main",
    "setup",
    "signal_name",
]
