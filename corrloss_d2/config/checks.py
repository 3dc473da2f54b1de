"""The checks the config modules share: each raises :class:`~corrloss_d2.errors.ConfigError` (a
ValueError) naming the key, its value and the allowed values."""

import math

from ..errors import ConfigError


def require(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"cfg.{key} = {value!r} is not valid; allowed values: {allowed}")


def check_choice(key: str, value, choices) -> None:
    require(key, value, value in choices, ", ".join(map(repr, choices)))


def is_number(value) -> bool:
    """A finite int or float (not a bool, a string, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_box_weights(key: str, weights) -> None:
    require(
        key,
        weights,
        len(weights) == 4 and all(is_number(w) and w > 0 for w in weights),
        "four numbers > 0",
    )
