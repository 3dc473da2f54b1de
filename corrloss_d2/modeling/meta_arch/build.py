"""What every corrloss_d2 meta-architecture checks of its config, once per model build."""

from ...compiled_ops import check_config_compiled_ops
from ...config import validate_corrloss_config

__all__ = ["check_model_config"]


def check_model_config(cfg) -> None:
    """The corrloss_d2 keys' values (:func:`~corrloss_d2.config.validate_corrloss_config`) and
    the compiled ops the config needs (:func:`~corrloss_d2.compiled_ops.check_config_compiled_ops`);
    a meta-architecture's ``from_config`` calls it first. The modules it builds (its
    classification and correlation losses) do not check again."""
    validate_corrloss_config(cfg)
    check_config_compiled_ops(cfg)
