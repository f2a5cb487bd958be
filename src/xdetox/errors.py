"""The exception types the CLI turns into one line on stderr instead of a traceback.

* ``XdetoxInputError``: the user gave bad input (exit code 2); library callers can catch it
  like any ``ValueError``.
* ``ServiceUnavailable``: a remote service (the Perspective API; the Hugging Face hub for
  ``export --push-to-hub``) gave no answer after its retries, or cannot be reached (exit code 3);
  its message names the cause in one line and never holds a key.
"""


class XdetoxInputError(ValueError):
    """Bad input from the user: a message fit to print as one line."""


class ServiceUnavailable(RuntimeError):
    """A remote service gave no answer after the retries, or cannot be reached: a one-line message naming the cause."""
