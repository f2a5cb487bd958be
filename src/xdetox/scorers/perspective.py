"""``perspective``: Google's Perspective API, TOXICITY attribute, one request per text.

Key from ``PERSPECTIVE_API_KEY`` (checked before any work: ``PerspectiveSettings``), URL and
rate from ``XDETOX_PERSPECTIVE_URL`` and ``XDETOX_PERSPECTIVE_QPS``; not uk or am (see
``PERSPECTIVE_LANGUAGES``).  After its retries the scorer raises ``PerspectiveError`` (an
``xdetox.errors.ServiceUnavailable``) whose one-line message names the cause: no network,
the quota (HTTP 429), a server error, or another HTTP status with the API's own message.
No message ever holds the key.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from urllib3.exceptions import ResponseError
from urllib3.util.retry import Retry

from xdetox.errors import ServiceUnavailable, XdetoxInputError
from xdetox.scorers.base import check_input

PERSPECTIVE_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
PERSPECTIVE_KEY_ENV = "PERSPECTIVE_API_KEY"
PERSPECTIVE_URL_ENV = "XDETOX_PERSPECTIVE_URL"
PERSPECTIVE_QPS_ENV = "XDETOX_PERSPECTIVE_QPS"
PERSPECTIVE_LANGUAGES: frozenset[str] = frozenset({
    "ar", "zh", "cs", "nl", "en", "fr", "de", "hi", "hi-Latn", "id", "it", "ja", "ko", "pl",
    "pt", "ru", "es", "sv",
})
"""Languages of the TOXICITY attribute on Perspective's "Attributes & Languages" page
(hi-Latn is Hinglish).  Of LANGS, uk and am are missing."""
RETRY_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})



class PerspectiveError(ServiceUnavailable):
    """The Perspective API gave no score (after the retries).  Its message never holds the key."""


@dataclass(frozen=True)
class PerspectiveSettings:
    """How ``PerspectiveScorer`` talks to the API.  ``repr`` leaves the key out."""

    api_key: str = field(repr=False)
    url: str = PERSPECTIVE_URL
    qps: float = 1.0
    """Requests started per second at most (Perspective's default quota is 1)."""
    max_retries: int = 6
    """Retries of one text on 429, 5xx or a connection error, then ``PerspectiveError``."""
    backoff_s: float = 1.0
    """Wait before retry i: ``backoff_s * 2**(i-1)`` plus up to ``backoff_s`` of jitter,
    or the server's Retry-After when it sends one."""
    max_backoff_s: float = 60.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise XdetoxInputError(
                f"the perspective scorer needs an API key in the environment variable {PERSPECTIVE_KEY_ENV}"
            )
        if not self.qps > 0:
            raise XdetoxInputError(f"perspective qps must be positive, got {self.qps}")
        if self.max_retries < 0 or self.backoff_s < 0 or not self.timeout_s > 0:
            raise XdetoxInputError("perspective max_retries and backoff_s must be >= 0, timeout_s > 0")

    @classmethod
    def from_env(cls, **overrides: Any) -> PerspectiveSettings:
        """Key, URL and QPS from the environment; keyword arguments win over both."""
        values: dict[str, Any] = {"api_key": os.environ.get(PERSPECTIVE_KEY_ENV, "").strip()}
        if os.environ.get(PERSPECTIVE_URL_ENV):
            values["url"] = os.environ[PERSPECTIVE_URL_ENV]
        if os.environ.get(PERSPECTIVE_QPS_ENV) and "qps" not in overrides:
            try:
                values["qps"] = float(os.environ[PERSPECTIVE_QPS_ENV])
            except ValueError:
                raise XdetoxInputError(
                    f"{PERSPECTIVE_QPS_ENV} must be a number, got {os.environ[PERSPECTIVE_QPS_ENV]!r}"
                ) from None
        return cls(**{**values, **overrides})


@dataclass
class RateLimiter:
    """Starts of successive ``wait()`` calls are at least ``1 / qps`` seconds apart."""

    qps: float
    _next: float = field(default=float("-inf"), init=False, repr=False)

    def wait(self) -> None:
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + 1.0 / self.qps


class _Backoff(Retry):
    """urllib3's ``Retry`` whose first retry waits too (urllib3 sends it at once)."""

    def get_backoff_time(self) -> float:
        if not self.history:
            return 0.0
        delay = self.backoff_factor * 2 ** (len(self.history) - 1) + random.random() * self.backoff_jitter
        return min(self.backoff_max, delay)


class PerspectiveScorer:
    """TOXICITY summary scores from the Perspective API, one request per text.

    The key travels in the ``X-Goog-Api-Key`` header, never in the URL, so no URL in a log
    line or exception carries it; error messages are scrubbed of it all the same.  Requests
    are spaced by a ``RateLimiter``; retries (urllib3 ``Retry`` inside the requests session)
    happen on 429, 5xx and connection errors with exponential backoff, jitter and the
    server's Retry-After.  A text that is empty after stripping scores 0.0 without a request
    (the API refuses empty comments).  ``batch_size`` = 16: the grid commits every 16
    scores, so an interrupted run resumes after the last committed chunk.
    """

    name = "perspective"
    kind = "toxicity"
    supported_languages: frozenset[str] = PERSPECTIVE_LANGUAGES
    batch_size = 16

    def __init__(self, settings: PerspectiveSettings) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.settings = settings
        self._limiter = RateLimiter(settings.qps)
        retry = _Backoff(
            total=settings.max_retries, status_forcelist=RETRY_STATUSES, allowed_methods=None,
            backoff_factor=settings.backoff_s, backoff_jitter=settings.backoff_s,
            backoff_max=settings.max_backoff_s, respect_retry_after_header=True, raise_on_status=True,
        )
        self._session = requests.Session()
        self._session.mount(settings.url, HTTPAdapter(max_retries=retry))
        self._session.headers["X-Goog-Api-Key"] = settings.api_key

    @classmethod
    def from_env(cls, **overrides: Any) -> PerspectiveScorer:
        """The scorer for ``PerspectiveSettings.from_env(**overrides)``."""
        return cls(PerspectiveSettings.from_env(**overrides))

    def __repr__(self) -> str:
        return f"PerspectiveScorer({self.settings!r})"

    def score(self, texts: list[str], lang: str) -> list[float]:
        """TOXICITY probability of each text in ``lang`` (refused before any request if unsupported)."""
        check_input(self, texts, lang)
        return [self._score_one(text, lang) if text.strip() else 0.0 for text in texts]

    def _score_one(self, text: str, lang: str) -> float:
        import requests

        body = {
            "comment": {"text": text}, "languages": [lang],
            "requestedAttributes": {"TOXICITY": {}}, "doNotStore": True,
        }
        self._limiter.wait()
        try:
            response = self._session.post(self.settings.url, json=body, timeout=self.settings.timeout_s)
        except requests.RequestException as err:
            raise self._error(_cause(err, self.settings)) from None
        if not response.ok:
            hint = f" (check the key in {PERSPECTIVE_KEY_ENV})" if response.status_code in (401, 403) else ""
            raise self._error(f"HTTP {response.status_code}: {_api_message(response)}{hint}")
        try:
            return float(response.json()["attributeScores"]["TOXICITY"]["summaryScore"]["value"])
        except (ValueError, KeyError, TypeError):
            raise self._error(f"unexpected response: {response.text[:200]!r}") from None

    def _error(self, detail: str) -> PerspectiveError:
        message = " ".join(f"Perspective API ({self.settings.url}): {detail}".split())  # one line
        return PerspectiveError(message.replace(self.settings.api_key, "***"))


def _cause(err: Any, settings: PerspectiveSettings) -> str:
    """What a ``requests`` exception raised after the retries means: no network, the quota,
    a timeout or a server error, then what urllib3 said."""
    import requests

    reason = getattr(err.args[0], "reason", err) if err.args else err
    detail = f"no answer after {settings.max_retries} retries ({type(err).__name__}: {reason})"
    if isinstance(err, requests.exceptions.RetryError):
        if ResponseError.SPECIFIC_ERROR.format(status_code=429) in str(reason):
            return f"quota exceeded (HTTP 429): {detail}"
        return f"server error: {detail}"
    if isinstance(err, requests.exceptions.ConnectionError):  # refused, unresolvable, unreachable
        return f"no network (connection error): {detail}"
    if isinstance(err, requests.exceptions.Timeout):
        return f"no answer within {settings.timeout_s:g} s (timeout): {detail}"
    return detail


def _api_message(response: Any) -> str:
    """The ``error.message`` of a Google API error body, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200] or response.reason or "no details"

