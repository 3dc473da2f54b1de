"""corrloss_d2's trainer (detectron2's DefaultTrainer with this project's data, optimiser,
evaluators and exact stop-and-resume) and the set-up and main function ``train_net.py`` runs."""

import contextlib
from typing import Type

import detectron2.engine.defaults as engine_defaults
import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, default_setup, hooks
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger

from ..config import load_corrloss_config
from ..data.augmentation import build_test_mapper, build_train_mapper
from ..data.checks import build_checked_test_loader, build_checked_train_loader
from ..data.resumable import ResumableTrainLoader
from ..errors import ConfigError
from ..evaluation import build_evaluator
from ..solver import build_optimizer
from .hooks import RandomStateCheckpoint, StopOnSignal

__all__ = ["CorrLossTrainer", "ddp_without_device_ids_for_cpu_models", "setup", "main"]


@contextlib.contextmanager
def ddp_without_device_ids_for_cpu_models():
    """detectron2's create_ddp_model passes device_ids=[local_rank] even for a CPU model, which
    DistributedDataParallel rejects; while this is open, CPU models (MODEL.DEVICE cpu, GLOO) get
    no device_ids. DefaultTrainer.__init__ looks the function up in its module at call time."""
    create_ddp_model = engine_defaults.create_ddp_model

    def create_ddp_model_on_any_device(model, **kwargs):
        if comm.get_world_size() > 1 and next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return create_ddp_model(model, **kwargs)

    engine_defaults.create_ddp_model = create_ddp_model_on_any_device
    try:
        yield
    finally:
        engine_defaults.create_ddp_model = create_ddp_model


class CorrLossTrainer(DefaultTrainer):
    """DefaultTrainer with corrloss_d2's evaluators (COCO-format and Cityscapes datasets), its
    optimiser choice (SOLVER.OPTIMIZER, SOLVER.BACKBONE_MULTIPLIER, full-model clipping), its
    train augmentation choice (INPUT.TRAIN_AUGMENTATION) and its dataset checks (class count
    against the model's, something to train on, unreadable images named). Trains CPU models in
    several processes (GLOO). Stops cleanly on SIGTERM/SIGINT and resumes exactly
    (:mod:`corrloss_d2.engine.hooks`, :mod:`corrloss_d2.data.resumable`)."""

    def __init__(self, cfg):
        with ddp_without_device_ids_for_cpu_models():
            super().__init__(cfg)

    def build_hooks(self):
        ret = super().build_hooks()
        loader = self._trainer.data_loader
        if not isinstance(loader, ResumableTrainLoader):
            loader = None
        else:
            self.checkpointer.checkpointables["train_stream"] = loader
        stop = StopOnSignal(self.checkpointer, loader)
        at = next(
            (i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicCheckpointer)), len(ret)
        )
        return [RandomStateCheckpoint(), *ret[:at], stop, *ret[at:]]

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
            raise ConfigError(
                f"cfg.SOLVER.IMS_PER_BATCH = {cfg.SOLVER.IMS_PER_BATCH} is not "
                f"divisible by the number of processes ({world_size}); give a "
                "multiple of it"
            )
        return ResumableTrainLoader(
            lambda **kwargs: build_checked_train_loader(cfg, **kwargs),
            build_train_mapper(cfg),
            comm.shared_random_seed(),
            batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_checked_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))


def setup(args):
    """The config of ``args`` (``--config-file`` and the KEY VALUE overrides), frozen, and
    detectron2's set-up (logging, output folder, seed)."""
    cfg = load_corrloss_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="corrloss_d2")
    return cfg


def main(args, trainer_class: Type[DefaultTrainer] = CorrLossTrainer):
    """Trains (``--resume`` continues from ``last_checkpoint``) or, with ``--eval-only``,
    evaluates ``MODEL.WEIGHTS``; run in each process by :func:`~corrloss_d2.engine.launch_main`."""
    cfg = setup(args)
    if args.eval_only:
        model = trainer_class.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = trainer_class.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = trainer_class(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
