"""The errors a user can fix. Each message names what was wrong, where (file, line, key), and the fix;
the scripts print it as one line `error: …` and exit with status 1."""


class MidalignError(Exception):
    """Base of every error a user can fix (bad data, settings, checkpoint, adapter, tokenizer)."""


class DataError(MidalignError, ValueError):
    """Data that cannot be fetched or parsed; the message names the file and the fix."""


class CheckpointError(MidalignError, RuntimeError):
    """A checkpoint that cannot be found, fetched or loaded; the message says what to do."""


class SettingsError(MidalignError, ValueError):
    """A setting out of range or not among its choices; the message names it and the choices."""
