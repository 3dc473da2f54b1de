#!/usr/bin/env python
"""Train and evaluate corrloss_d2 detectors (CorrRetinaNet, CorrFCOS, CorrSparseRCNN).

    python train_net.py --config-file configs/CPU/retinanet_R_18_FPN_raccoon_scratch.yaml
    python train_net.py --num-gpus 8 --config-file configs/COCO-Detection/retinanet_R_50_FPN_1x_corr_spearman_0.1.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
"""
import contextlib
import logging
import re
import sys
from typing import Optional

import corrloss_d2  # noqa: F401  (registers meta-architectures, backbones and datasets)
from corrloss_d2 import errors
from corrloss_d2.config import load_corrloss_config
from corrloss_d2.data.augmentation import build_test_mapper, build_train_mapper
from corrloss_d2.data.checks import build_checked_test_loader, build_checked_train_loader
from corrloss_d2.engine import (Normalizers, RandomState, ResumableTrainLoader, StopOnSignal,
                                forward_stop_signals, signal_name)
from corrloss_d2.errors import ConfigError, InputError
from corrloss_d2.evaluation import build_evaluator
from corrloss_d2.solver import build_optimizer

import detectron2.engine.defaults as engine_defaults
import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import (DefaultTrainer, default_argument_parser, default_setup, hooks,
                               launch)
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

_create_ddp_model = engine_defaults.create_ddp_model


def create_ddp_model_on_any_device(model, **kwargs):
    """detectron2's create_ddp_model passes device_ids=[local_rank] even for a CPU model, which
    DistributedDataParallel rejects; CPU models (MODEL.DEVICE cpu, GLOO) get no device_ids."""
    if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
        kwargs.setdefault("device_ids", None)
    return _create_ddp_model(model, **kwargs)


# DefaultTrainer.__init__ looks the function up in its module at call time.
engine_defaults.create_ddp_model = create_ddp_model_on_any_device


class Trainer(DefaultTrainer):
    """DefaultTrainer with corrloss_d2's evaluators (COCO-format and Cityscapes datasets), its
    optimiser choice (SOLVER.OPTIMIZER, SOLVER.BACKBONE_MULTIPLIER, full-model clipping), its
    train augmentation choice (INPUT.TRAIN_AUGMENTATION) and its dataset checks (class count
    against the model's, something to train on, unreadable images named). Stops cleanly on
    SIGTERM/SIGINT and resumes exactly (:mod:`corrloss_d2.engine`)."""

    def build_hooks(self):
        ret = super().build_hooks()
        random_state, loader = RandomState(), self._trainer.data_loader
        self.checkpointer.checkpointables["random_state"] = random_state
        self.checkpointer.checkpointables["normalizers"] = Normalizers(self._trainer.model)
        if not isinstance(loader, ResumableTrainLoader):
            loader = None
        else:
            self.checkpointer.checkpointables["train_stream"] = loader
        stop = StopOnSignal(self.checkpointer, loader, random_state)
        at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer)), len(ret))
        return ret[:at] + [stop] + ret[at:]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """The sample stream continues where a resumed run stopped (detectron2's
        TrainingSampler only; other samplers start again)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            return build_checked_train_loader(cfg, mapper=build_train_mapper(cfg))
        world_size = comm.get_world_size()
        if cfg.SOLVER.IMS_PER_BATCH % world_size:
            raise ConfigError(f"cfg.SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH} is not "
                              f"divisible by the number of processes ({world_size}); give a "
                              "multiple of it")
        return ResumableTrainLoader(lambda **kwargs: build_checked_train_loader(cfg, **kwargs),
                                    build_train_mapper(cfg), comm.shared_random_seed(),
                                    batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
                                    aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_checked_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))


def setup(args):
    cfg = load_corrloss_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="corrloss_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def invoke_main(argv=None) -> None:
    """Parses ``argv`` (default: the command line) and runs :func:`main` in ``--num-gpus``
    processes. A wrong input (config file, config value, dataset, image) ends the program with
    its message alone on stderr, without a traceback, whichever process met it."""
    args = default_argument_parser().parse_args(argv)
    logging.getLogger("corrloss_d2").info("Command line arguments: %s", args)
    try:
        load_corrloss_config(args.config_file, args.opts)  # config errors before any process starts
        # With more than one process this one only waits for the training processes.
        spawns = args.num_gpus * args.num_machines > 1
        with forward_stop_signals() if spawns else contextlib.nullcontext([]) as stop_signals:
            launch(main, args.num_gpus, num_machines=args.num_machines,
                   machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except (InputError, ProcessRaisedException) as error:
        message = input_error_message(error)
        if message is None:
            raise
        sys.exit(f"train_net.py: error: {message}")
    except ProcessExitedException as error:
        if not stop_signals:
            raise
        # The training processes stopped on the signal and said how to resume (exit status 1).
        sys.exit(1 if error.exit_code == 1 else f"train_net.py: stopped by "
                 f"{signal_name(stop_signals[0])} before training started")


# How an InputError is named in a traceback: 'corrloss_d2.errors.DatasetError: <message>'.
_NAMED_INPUT_ERROR = re.compile(rf"{re.escape(errors.__name__)}\.(\w+): ")


def input_error_message(error: Exception) -> Optional[str]:
    """The message of an InputError, or of the last InputError named in the text of an error
    that carries one with its traceback (a DataLoader worker's, another process's); None when
    there is none."""
    text = str(error)
    named = [match for match in _NAMED_INPUT_ERROR.finditer(text)
             if issubclass(getattr(errors, match.group(1), type(None)), InputError)]
    if named:
        return text[named[-1].end():].strip()
    return text if isinstance(error, InputError) else None


if __name__ == "__main__":
    invoke_main()
