"""train_net.py stopped by SIGTERM mid-run and continued with --resume: it starts at the next
iteration with the saved optimiser, scheduler, normaliser, random and data-stream state, and every
later iteration's losses, the final weights and the final AP equal an uninterrupted run's to the
bit (same seed, CPU): CorrRetinaNet in two processes (--num-gpus 2, GLOO; the signal sent to the
launching process only; its loss normaliser, a buffer), CorrDINO in one process, whose denoising
queries draw their noise from the restored random state, and CorrYOLACT in one process with two
data-loading workers drawing YOLACT's random distortions, zoom-outs and crops, evaluated (box and
mask AP). (--eval-only of saved weights: tests/integration/test_train_net.py.)"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch

from corrloss_d2.data.datasets import COCO_DATASETS_ENV
from corrloss_d2.engine import FORWARDED_STOP_SIGNAL, StopOnSignal
from tests.architectures import ARCHITECTURES
from tests.tiny import FAST, REPO, shapes_heads

pytestmark = pytest.mark.slow

MAX_ITER = 10
COMMON = [
    *FAST,
    "DATALOADER.NUM_WORKERS",
    "2",
    "SOLVER.MAX_ITER",
    str(MAX_ITER),
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SEED",
    "7",
    "SOLVER.CHECKPOINT_PERIOD",
    "3",
    "TEST.EVAL_PERIOD",
    "0",
    "CUDNN_BENCHMARK",
    "False",
]

STOP_AFTER = 3  # the iteration after which the interrupted run stops
# train_net.py's trainer with two more hooks: every iteration's losses to OUTPUT_DIR/losses.jsonl
# (the metrics.json writer reports medians over 20 iterations); and, with
# $WAIT_FOR_STOP_SIGNAL_AFTER = 2, a pause of the main process after iteration 2 (its checkpoint
# written) until the stop signal arrives (announced by the file OUTPUT_DIR/waiting): the run
# stops after iteration 3 however slowly a busy machine runs the test beside it (it used to
# signal once the checkpoint appeared, and the stop iteration depended on the load).
LOGGED_TRAIN_NET = textwrap.dedent("""
    import json, os, time
    import detectron2.utils.comm as comm
    from corrloss_d2.engine import CorrLossTrainer, StopOnSignal, launch_main, main
    from detectron2.engine import HookBase, default_argument_parser

    class LossLog(HookBase):
        def after_step(self):
            if comm.get_rank() != 0:
                return
            histories = self.trainer.storage.histories()
            losses = {name: buffer.latest() for name, buffer in histories.items()
                      if name.startswith("loss") or name == "total_loss"}
            with open(os.path.join(self.trainer.cfg.OUTPUT_DIR, "losses.jsonl"), "a") as f:
                f.write(json.dumps({"iteration": self.trainer.iter, **losses}) + "\\n")

    class WaitForStopSignal(HookBase):
        def __init__(self, after):
            self.after = after

        def after_step(self):
            if self.trainer.iter != self.after or not comm.is_main_process():
                return
            stop = next(h for h in self.trainer._hooks if isinstance(h, StopOnSignal))
            open(os.path.join(self.trainer.cfg.OUTPUT_DIR, "waiting"), "w").close()
            deadline = time.time() + 600  # a test that never signals fails instead of hanging
            while stop.received is None and time.time() < deadline:
                time.sleep(0.01)

    class LoggedTrainer(CorrLossTrainer):
        def build_hooks(self):
            after = os.environ.get("WAIT_FOR_STOP_SIGNAL_AFTER")
            waits = [] if after is None else [WaitForStopSignal(int(after))]
            return super().build_hooks() + [LossLog(), *waits]

    def logged_main(args):
        return main(args, LoggedTrainer)

    if __name__ == "__main__":  # the spawned training processes import this file
        launch_main(logged_main, default_argument_parser().parse_args())
""")


def logged_train_net(script, config, *args, cwd, wait_for_stop_signal=False):
    # The output goes to a file, not a pipe: a run that fills a pipe nobody reads (while the
    # test waits for a checkpoint) would block on its next log line.
    output = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, script, "--config-file", config, *args],
        cwd=cwd,
        text=True,
        stdout=output,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "CUDA_VISIBLE_DEVICES": "",  # GLOO, CPU
            **({"WAIT_FOR_STOP_SIGNAL_AFTER": str(STOP_AFTER - 1)} if wait_for_stop_signal else {}),
        },
    )
    process.output_file = output
    return process


def output_of(process) -> str:
    process.output_file.seek(0)
    return process.output_file.read()


def finished(process, expected_status=0):
    process.wait(timeout=900)  # a hang guard: these runs take well under a minute
    output = output_of(process)
    assert process.returncode == expected_status, output[-5000:]
    return output


def interrupted_run(script, config, args, out, cwd):
    """Starts training; sends SIGTERM (to the launching process) once the run waits for it
    after iteration 2's checkpoint; returns the output of the run, which must exit with status 1.
    """
    process = logged_train_net(
        script, config, *args, "OUTPUT_DIR", out, cwd=cwd, wait_for_stop_signal=True
    )
    deadline = time.time() + 600  # only a run that never gets there: a failure, not a hang
    while not os.path.exists(os.path.join(out, "waiting")):
        assert process.poll() is None and time.time() < deadline, output_of(process)[-3000:]
        time.sleep(0.05)
    assert os.path.exists(os.path.join(out, "model_0000002.pth"))
    process.send_signal(signal.SIGTERM)
    return finished(process, expected_status=1)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def logged_losses(out):
    with open(os.path.join(out, "losses.jsonl")) as f:
        return {record.pop("iteration"): record for record in map(json.loads, f)}


# Two processes (GLOO): the processes' own state (the signal passed on, each one's stream and
# random state); loading in the main process and no evaluation keep it short (loader workers and
# evaluation are checked with one process).
RETINANET_OPTS = ("MODEL.RETINANET.SCORE_THRESH_TEST", "0.01")
DINO_OPTS = (
    "MODEL.CORR_LOSS.WEIGHT",
    "0.2",
    "MODEL.DINO.NUM_ENCODER_LAYERS",
    "1",
    "MODEL.DINO.NUM_DECODER_LAYERS",
    "2",
    "DATASETS.TEST",
    "()",
)

# YOLACT on the embedded shapes with its released augmentation: random photometric distortion,
# zoom-out and crops (numpy's and Python's random state) in the loader's two workers; it is the
# one-process case whose evaluation (box and mask AP) is compared.
YOLACT_OPTS = (
    "MODEL.CORR_LOSS.WEIGHT",
    "0.4",
    "INPUT.TRAIN_AUGMENTATION",
    "yolact",
    "DATASETS.TEST",
    "('shapes_val_head',)",  # the first 16 held-out images, registered by the test
)


@pytest.mark.parametrize(
    "arch,flags,opts,signal_name",
    [
        (
            "CorrRetinaNet",
            ("--num-gpus", "2", "--dist-url", "auto"),
            (*RETINANET_OPTS, "DATALOADER.NUM_WORKERS", "0", "DATASETS.TEST", "()"),
            "SIGTERM/SIGINT (passed on by the launching process)",
        ),
        ("CorrDINO", (), DINO_OPTS, "SIGTERM"),
        ("CorrYOLACT", (), YOLACT_OPTS, "SIGTERM"),
    ],
    ids=["2 processes", "CorrDINO", "CorrYOLACT"],
)
def test_sigterm_then_resume_matches_uninterrupted_run(
    tmp_path, arch, flags, opts, signal_name, metrics, monkeypatch
):
    spec = ARCHITECTURES[arch]
    config = os.path.join(REPO, spec.cpu_config)
    loss_names = {"total_loss", *spec.loss_keys(opts)}  # every case trains with λ > 0
    if arch == "CorrYOLACT":
        monkeypatch.setenv(COCO_DATASETS_ENV, shapes_heads(tmp_path / "shapes", {"val": 16}))
    script = str(tmp_path / "train_net_logged.py")
    with open(script, "w") as f:
        f.write(LOGGED_TRAIN_NET)
    reference = str(tmp_path / "reference")
    finished(
        logged_train_net(
            script, config, *flags, *COMMON, *opts, "OUTPUT_DIR", reference, cwd=tmp_path
        )
    )

    out = str(tmp_path / "out")
    output = interrupted_run(script, config, (*flags, *COMMON, *opts), out, tmp_path)
    stopped = re.search(
        rf"stopped by {re.escape(signal_name)} after iteration (\d+); checkpoint "
        r"(\S+)\. Continue with the same command and --resume",
        output,
    )
    assert stopped, output[-3000:]
    iteration, checkpoint = int(stopped.group(1)), stopped.group(2)
    assert iteration == STOP_AFTER and os.path.exists(checkpoint)
    # weights_only: what torch.load reads by default (and detectron2 main's checkpointer with it).
    assert torch.load(checkpoint, weights_only=True)["iteration"] == iteration
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == os.path.basename(checkpoint)
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
    before_stop = logged_losses(out)
    assert sorted(before_stop) == list(range(iteration))  # the stop iteration's hook never ran

    assert "Traceback" not in output, output[-3000:]
    log = finished(
        logged_train_net(
            script, config, *flags, "--resume", *COMMON, *opts, "OUTPUT_DIR", out, cwd=tmp_path
        )
    )
    assert f"Starting training from iteration {iteration + 1}" in log
    expected, resumed = logged_losses(reference), logged_losses(out)
    # The stop iteration trained (its losses were not logged); the resumed run starts after it.
    assert sorted(expected) == list(range(MAX_ITER))
    assert sorted(resumed) == [it for it in range(MAX_ITER) if it != iteration]
    assert set(expected[0]) == loss_names
    # Every restored state (weights, optimiser, scheduler, normaliser, random state, sample
    # stream and the batches it forms) makes the resumed run compute what the uninterrupted one
    # did, to the bit: a state missing or restored only approximately changes the losses. Holds
    # on any CPU and load: both runs compute on this CPU, with the same threads, from loaders that
    # deliver in order; the rounding of a CPU is the same in both.
    for it in resumed:
        assert resumed[it] == expected[it], it
    # The losses move from iteration to iteration: equal losses are not equal constants.
    assert len({round(expected[it]["total_loss"], 6) for it in range(MAX_ITER)}) == MAX_ITER

    final, expected_weights = (
        weights(os.path.join(out, "model_final.pth")),
        weights(os.path.join(reference, "model_final.pth")),
    )
    assert final.keys() == expected_weights.keys()
    assert all(torch.equal(final[k], expected_weights[k]) for k in final)
    trained, trained_expected = ([r for r in metrics(d) if "lr" in r][-1] for d in (out, reference))
    assert trained["iteration"] == trained_expected["iteration"] == MAX_ITER - 1
    assert trained["lr"] == trained_expected["lr"]
    if opts[opts.index("DATASETS.TEST") + 1] == "()":  # not evaluated
        return
    last, last_expected = metrics(out)[-1], metrics(reference)[-1]
    assert last["bbox/AP"] == last_expected["bbox/AP"]
    assert last["segm/AP"] == last_expected["segm/AP"]


@pytest.mark.parametrize(
    "first,second,forced",
    [
        (FORWARDED_STOP_SIGNAL, signal.SIGINT, False),  # Ctrl-C: the launcher's forward came first
        (signal.SIGINT, FORWARDED_STOP_SIGNAL, False),  # ... or the process group's own signal did
        (signal.SIGTERM, signal.SIGTERM, True),  # a second stop signal: stop at once
        (signal.SIGINT, signal.SIGTERM, True),
    ],
)
def test_a_stop_signal_that_also_arrives_forwarded_is_one_request(
    monkeypatch, first, second, forced
):
    raised, handlers = [], []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: handlers.append((signum, handler))
    )
    hook = StopOnSignal(checkpointer=None)
    hook._handle(first, None)
    hook._handle(second, None)
    assert hook.received == first
    assert raised == ([second] if forced else [])
    assert handlers == ([(second, signal.SIG_DFL)] if forced else [])
