"""The exception types the CLI turns into one line on stderr instead of a traceback.

* ``XdetoxInputError``: the user gave bad input (exit code 2); library callers can catch it
  like any ``ValueError``.
* ``ServiceUnavailable``: a remote service (the Perspective API; the Hugging Face hub for
  ``export --push-to-hub``) gave no answer after its retries, or cannot be reached (exit code 3);
  its message names the cause in one line and never holds a key.
* A full disk (or quota) met during work: an ``OSError`` (``ENOSPC``/``EDQUOT``; the store turns SQLite's
  "database or disk is full" into one) that ``no_space`` writes as one line naming the path (exit code 3:
  every write is whole or absent, so the same command resumes once there is room).

``refuse_repeats``: the one rule for every list a user gives (targets, sources, percents, splits, seeds,
scorers, models, ``--langs``, the runs of ``compare``): a list is a set, and a value given twice is an
``XdetoxInputError`` naming it (it would plan, score or compare the same thing twice).
"""

import errno
import os
from collections.abc import Callable, Iterable


class XdetoxInputError(ValueError):
    """Bad input from the user: a message fit to print as one line."""


class ServiceUnavailable(RuntimeError):
    """A remote service gave no answer after the retries, or cannot be reached: a one-line message naming the cause."""


def refuse_repeats(name: str, values: Iterable, show: Callable[[object], str] = str) -> None:
    """``XdetoxInputError`` when ``values`` holds a value twice: "<name> list <value> twice; ...", each repeated
    value once, in order (``show`` writes one). Values need not be hashable."""
    seen, twice = [], []
    for value in values:
        if value in seen and value not in twice:
            twice.append(value)
        seen.append(value)
    if twice:
        raise XdetoxInputError(f"{name} list {', '.join(show(v) for v in twice)} twice; a list is a set:"
                               " give each once")


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""The ``errno`` values of a full disk and of a full quota."""


def no_space(err: BaseException) -> str | None:
    """One line for a full disk met during work (an ``OSError`` with ``NO_SPACE``, or a library's error that
    says "No space left on device"), naming the path where known; None for any other error."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        where = f" writing {err.filename}" if err.filename else ""
        return f"{os.strerror(err.errno).lower()}{where}; free some space"
    if not isinstance(err, OSError) and "No space left on device" in str(err):
        return f"no space left on device ({str(err).strip().splitlines()[0]}); free some space"
    return None
