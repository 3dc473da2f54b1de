"""What every corrloss_d2 meta-architecture checks of its config, once per model build."""

from ...compiled_ops import check_config_compiled_ops
from ...config import validate_corrloss_config
from ...errors import ConfigError

__all__ = ["check_model_config", "check_query_detector_grouping"]


def check_model_config(cfg) -> None:
    """The corrloss_d2 keys' values (:func:`~corrloss_d2.config.validate_corrloss_config`) and
    the compiled ops the config needs (:func:`~corrloss_d2.compiled_ops.check_config_compiled_ops`);
    a meta-architecture's ``from_config`` calls it first. The modules it builds (its
    classification and correlation losses) do not check again."""
    validate_corrloss_config(cfg)
    check_config_compiled_ops(cfg)


def check_query_detector_grouping(cfg, meta_architecture: str) -> None:
    """ConfigError for MODEL.CORR_LOSS.GROUP_BY "level" on a query-based detector, whose
    queries belong to no FPN level."""
    if cfg.MODEL.CORR_LOSS.GROUP_BY == "level":
        raise ConfigError(
            f"cfg.MODEL.CORR_LOSS.GROUP_BY = 'level' is not valid for {meta_architecture}, "
            "whose queries have no FPN level; allowed values: 'auto' or 'batch' (one ρ per "
            "stage over the batch, the paper) and 'image'"
        )
