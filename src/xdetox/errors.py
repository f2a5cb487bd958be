"""The one exception type that means "the user gave bad input".

The CLI turns it into a single line on stderr and exit code 2; library callers
can catch it like any ``ValueError``.
"""


class XdetoxInputError(ValueError):
    """Bad input from the user: a message fit to print as one line."""
