"""Errors a user sees as one line.

`InputError` means bad usage or bad input (exit status 2, raised before any work starts);
`StageError` means a stage failed while working (that language fails, exit status 1).
"""


from polydub.redact import redact


class DubError(Exception):
    """Base for every error polydub reports as a one-line message. The message is
    redacted when the error is made, so it carries no secret wherever it travels
    (Prefect's task states, the catalog, the report, the screen)."""

    def __init__(self, message: object = "", *args: object):
        super().__init__(redact(str(message)), *args)


class InputError(DubError):
    """Bad usage or bad input, detected before any work starts."""


class StageError(DubError):
    """A pipeline stage failed."""


class JobFailed(DubError):
    """The result of a run that delivered some languages or none; `report` is its report
    in the process that ran it (the file NAME.report.json everywhere else): a
    `report.JobReport`, or a catalog run's table."""

    def __init__(self, message: str, report: object = None):
        super().__init__(message)
        self.report = report


class JobRefused(InputError):
    """The result of a run whose input or options were refused before any work."""


def one_line(exc: BaseException) -> str:
    """The first line of an error, secrets masked: what the catalog, report and screen show."""
    text = redact(str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
