"""The errors users see: every expected failure is a MicroconvError with a one-line message."""


class MicroconvError(Exception):
    """Something the user can fix: bad input, a missing file, an unusable device."""


class ShapeError(MicroconvError, ValueError):
    """An op was built from inputs whose shapes do not fit together."""


class BackendError(MicroconvError):
    """A backend is unknown or cannot run on this machine."""


class DataError(MicroconvError):
    """A data file is missing, damaged or not in the expected format."""


class CheckpointError(MicroconvError):
    """A checkpoint or seed state file cannot be read or does not fit the model."""


class TrainingError(MicroconvError):
    """Training cannot go on (for example the loss stopped being finite)."""


class ResourceError(MicroconvError):
    """A size that cannot fit: more memory or disk than this machine has to give."""
