"""User-facing errors: each one says what is wrong and how to fix it."""


class ArbenchError(Exception):
    """An error the user can act on; the CLI prints its message without a traceback."""


class InputError(ArbenchError):
    """Samples, files or settings given to a task that fail validation."""


class MissingAssetError(ArbenchError):
    """A weights or reference file is not in the local cache and cannot be downloaded."""
