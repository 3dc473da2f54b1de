"""Errors about the user's input: config values, dataset files, annotations, images.

Each message names what is wrong (the config key, file, entry or field) and how to fix it.
``train_net.py`` prints the message of an :class:`InputError` alone, without a traceback; each
class also derives from the built-in error Python code would expect (ValueError, OSError, ...),
so ``except ValueError`` and the like keep working.
"""

__all__ = ["InputError", "ConfigError", "DatasetError", "MissingFileError", "ImageReadError"]


class InputError(Exception):
    """Base class: the input is wrong, not the code."""


class ConfigError(InputError, ValueError):
    """A config value (or a config file's content) is invalid."""


class DatasetError(InputError, ValueError):
    """A dataset does not fit the model, holds nothing to train on, or has malformed annotations."""


class MissingFileError(InputError, FileNotFoundError):
    """A config file, dataset folder or annotation file does not exist."""


class ImageReadError(InputError, OSError):
    """An image of a dataset is missing, truncated or not an image."""
