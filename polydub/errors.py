"""Errors a user sees as one line.

`InputError` means bad usage or bad input (exit status 2, raised before any work starts);
`StageError` means a stage failed while working (that language fails, exit status 1).
"""


class DubError(Exception):
    """Base for every error polydub reports as a one-line message."""


class InputError(DubError):
    """Bad usage or bad input, detected before any work starts."""


class StageError(DubError):
    """A pipeline stage failed."""
