"""The error every data loader raises: its message names the file (and line) and the fix."""


class DataError(ValueError):
    """Data that cannot be fetched or parsed; the message names the file and the fix."""
