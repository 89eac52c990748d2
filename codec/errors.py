"""Exceptions every stage raises for bad input; the CLI turns them into one clear line (no torch import)."""


class StvError(Exception):
    """A user-facing failure: bad input, missing model, damaged file. The message is the whole story."""


class BitstreamError(StvError):
    """A .stv file that cannot be read (or not past some byte offset)."""


class ModelError(StvError):
    """A model file that is missing, fails its checksum, or does not match the expected layout."""


class InputError(StvError):
    """An input video or image that cannot be used (no face, unreadable, empty)."""
