"""Exceptions that name what was wrong and how to fix it."""


class WeightspaceError(Exception):
    """Base class for every error weightspace raises on purpose."""


class CheckpointError(WeightspaceError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe or of the wrong layout."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint tried to run code or load an object that is not a tensor."""


class DataNotFoundError(WeightspaceError, FileNotFoundError):
    """An offline data set is not on this machine."""


class ConfigError(WeightspaceError, ValueError):
    """A configuration value is missing or not one of the allowed values."""


class LayoutError(WeightspaceError, ValueError):
    """Tensors do not match a WeightSpace (names, shapes or number of parameters)."""


class ZooError(WeightspaceError):
    """A zoo directory is missing entries, or files do not match its index."""


class InputError(WeightspaceError, ValueError):
    """A file or value from outside is too large, malformed, or points outside where it may."""


class OutputError(WeightspaceError):
    """An output directory cannot be used: it belongs to someone else, or cannot be created."""


class IdxFormatError(WeightspaceError, ValueError):
    """An IDX file is corrupt, truncated or not IDX at all."""


class BackendError(WeightspaceError):
    """An execution backend (Ray) is missing, unreachable, or lost a block of work."""


class AmbiguousCheckpointError(CheckpointError):
    """A training checkpoint holds several state dicts of about the same size (a model and its EMA
    copy, say); ``candidates`` are their keys, for ``--key``."""

    def __init__(self, message: str, candidates: list[str]):
        super().__init__(message)
        self.candidates = candidates
