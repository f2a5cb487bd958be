"""The perspective scorer against a local stand-in for the Perspective API (127.0.0.1).

The stand-in speaks comments:analyze, checks the request body and the key header, scores
every text deterministically, and can answer bursts of 429/500 or fail for good.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from xdetox import grid
from xdetox.cli import main
from xdetox.errors import ServiceUnavailable, XdetoxInputError
from xdetox.generate import Completion
from xdetox.scorers import (
    PERSPECTIVE_LANGUAGES,
    PerspectiveError,
    PerspectiveScorer,
    Scorer,
    check_languages,
    check_scorer,
    get_scorer,
)
from xdetox.scorers import registry
from xdetox.store import Store

FAKE_KEY = "AIzaFAKE-test-key-0123456789abcdef"
PATH = "/v1alpha1/comments:analyze"
FAST = {"backoff_s": 0.001, "max_backoff_s": 0.01, "max_retries": 3, "qps": 1000.0}


def expected_score(text: str) -> float:
    """What the stand-in answers for ``text``."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


@dataclass
class FakePerspective:
    """State of the stand-in server; tests program it and read what it saw."""

    url: str = ""
    key: str = FAKE_KEY
    burst: list[int] = field(default_factory=list)
    """Statuses to answer, one per request, before answering normally again."""
    succeed_at_most: int | None = None
    """After this many successful answers, answer 500 to everything."""
    requests: list[dict] = field(default_factory=list)
    successes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, key: str | None, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) for one request."""
        with self.lock:
            self.requests.append(body)
            if path != PATH:  # the key never travels in the URL
                return 404, {}, {"error": {"code": 404, "message": f"unknown path {path}"}}
            if key != self.key:  # echoes the key it got: the client must scrub it
                return 403, {}, {"error": {"code": 403, "message": f"API key not valid: {key}"}}
            problem = _validate(body)
            if problem:
                return 400, {}, {"error": {"code": 400, "message": problem}}
            if self.burst:
                status = self.burst.pop(0)
                return status, ({"Retry-After": "0"} if status == 429 else {}), {"error": {"code": status}}
            if self.succeed_at_most is not None and self.successes >= self.succeed_at_most:
                return 500, {}, {"error": {"code": 500, "message": "backend down"}}
            self.successes += 1
            value = expected_score(body["comment"]["text"])
            return 200, {}, {
                "attributeScores": {"TOXICITY": {"summaryScore": {"value": value, "type": "PROBABILITY"}}},
                "languages": body["languages"],
            }


def _validate(body: dict) -> str | None:
    text = body.get("comment", {}).get("text")
    if not isinstance(text, str) or not text.strip():
        return "Comment must be non-empty."
    languages = body.get("languages")
    if not (isinstance(languages, list) and len(languages) == 1 and languages[0] in PERSPECTIVE_LANGUAGES):
        return f"Attribute TOXICITY does not support request languages: {languages}"
    if body.get("requestedAttributes") != {"TOXICITY": {}}:
        return f"bad requestedAttributes {body.get('requestedAttributes')}"
    if body.get("doNotStore") is not True:
        return "doNotStore must be true"
    return None


def _handler(fake: FakePerspective) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length", 0))
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                body = {}
            status, headers, payload = fake.answer(self.path, self.headers.get("X-Goog-Api-Key"), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture
def fake(monkeypatch) -> Iterator[FakePerspective]:
    """A running stand-in; the environment points the perspective scorer at it."""
    state = FakePerspective()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}{PATH}"
    monkeypatch.setenv("PERSPECTIVE_API_KEY", FAKE_KEY)
    monkeypatch.setenv("XDETOX_PERSPECTIVE_URL", state.url)
    monkeypatch.delenv("XDETOX_PERSPECTIVE_QPS", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def fast_scorer(**overrides) -> PerspectiveScorer:
    return PerspectiveScorer.from_env(**{**FAST, **overrides})


# --------------------------------------------------------------------------- scores


def test_scores_and_request_format(fake):
    scorer = fast_scorer()
    assert isinstance(scorer, Scorer) and scorer.batch_size == 16
    texts = ["you are awful", "have a nice day", "  ", "Guten Tag"]
    values = scorer.score(texts, "en")
    assert values == [expected_score(texts[0]), expected_score(texts[1]), 0.0, expected_score(texts[3])]
    assert len(fake.requests) == 3  # the blank text is not sent
    assert fake.requests[0] == {"comment": {"text": "you are awful"}, "languages": ["en"],
                                "requestedAttributes": {"TOXICITY": {}}, "doNotStore": True}
    assert scorer.score([], "de") == []
    assert scorer.score(["hallo"], "hi-Latn") == [expected_score("hallo")]


def test_get_scorer_reads_the_environment(fake, monkeypatch):
    monkeypatch.setenv("XDETOX_PERSPECTIVE_QPS", "20")
    scorer = get_scorer("perspective")
    assert isinstance(scorer, PerspectiveScorer)
    assert scorer.settings.url == fake.url and scorer.settings.qps == 20.0
    assert PerspectiveScorer.from_env(qps=5).settings.qps == 5.0  # the argument wins
    monkeypatch.setenv("XDETOX_PERSPECTIVE_QPS", "fast")
    with pytest.raises(XdetoxInputError, match="XDETOX_PERSPECTIVE_QPS"):
        get_scorer("perspective")
    with pytest.raises(XdetoxInputError, match="qps"):
        PerspectiveScorer.from_env(qps=0)


@pytest.mark.parametrize("burst", [[429] * 3, [500, 503], [429, 500, 502]])
def test_bursts_are_retried(fake, burst):
    fake.burst = list(burst)
    assert fast_scorer().score(["one"], "en") == [expected_score("one")]
    assert len(fake.requests) == len(burst) + 1


def test_too_many_failures_is_a_clear_error(fake):
    fake.burst = [500] * 10
    with pytest.raises(PerspectiveError, match=r"no answer after 3 retries.*too many 500") as info:
        fast_scorer().score(["one"], "en")
    assert len(fake.requests) == 4  # the first try and 3 retries
    assert "\n" not in str(info.value) and FAKE_KEY not in str(info.value)


def test_backoff_grows_and_honours_retry_after(fake, monkeypatch):
    """Waits between tries: exponential with jitter on 500, Retry-After on 429."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    fake.burst = [500, 500, 500]
    fast_scorer(backoff_s=0.1, max_backoff_s=10.0).score(["one"], "en")
    assert len(sleeps) == 3
    for i, slept in enumerate(sleeps):
        assert 0.1 * 2**i <= slept <= 0.1 * 2**i + 0.1
    sleeps.clear()
    fake.burst = [429]
    monkeypatch.setattr(fake, "answer", _with_retry_after(fake.answer, "7"))
    fast_scorer(backoff_s=0.1).score(["two"], "en")
    assert sleeps == [7.0]


def _with_retry_after(answer, seconds: str):
    def wrapped(*args):
        status, headers, body = answer(*args)
        return status, ({**headers, "Retry-After": seconds} if status == 429 else headers), body
    return wrapped


def test_other_client_errors_are_not_retried(fake):
    scorer = fast_scorer(api_key="AIzaWRONG-key-987654321")
    with pytest.raises(PerspectiveError, match="HTTP 403") as info:
        scorer.score(["one"], "en")
    assert len(fake.requests) == 1
    assert "AIzaWRONG" not in str(info.value)  # the server echoed it; the message is scrubbed


# --------------------------------------------------------------------------- refusals


def test_unsupported_language_refused_before_any_request(fake):
    scorer = fast_scorer()
    with pytest.raises(XdetoxInputError, match="'uk'"):
        scorer.score(["Привіт"], "uk")
    with pytest.raises(XdetoxInputError) as info:
        check_languages("perspective", ["en", "uk", "de", "am", "uk"])
    assert str(info.value) == (
        "perspective does not support uk, am; remove them from targets or use another scorer")
    check_languages("perspective", ["en", "de", "es", "zh", "ar", "hi", "ru"])
    assert fake.requests == []


def test_missing_key_is_refused_at_construction(fake, monkeypatch):
    monkeypatch.delenv("PERSPECTIVE_API_KEY")
    for build in (PerspectiveScorer.from_env, lambda: get_scorer("perspective"),
                  lambda: check_scorer("perspective"), lambda: check_languages("perspective", ["en"])):
        with pytest.raises(XdetoxInputError, match="PERSPECTIVE_API_KEY") as info:
            build()
        assert "\n" not in str(info.value)
    assert fake.requests == []


# --------------------------------------------------------------------------- rate


def test_qps_limits_the_request_rate(fake):
    scorer = fast_scorer(qps=20.0)
    start = time.perf_counter()
    scorer.score([f"text {i}" for i in range(5)], "en")
    assert time.perf_counter() - start >= 0.15  # 4 gaps of 1/20 s; loose on purpose
    assert len(fake.requests) == 5


# --------------------------------------------------------------------------- the key stays secret


def test_key_never_leaks(fake, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    scorer = fast_scorer()
    texts: list[str] = [repr(scorer), repr(scorer.settings), str(scorer.settings)]
    fake.burst = [429, 500]
    scorer.score(["a", "b"], "en")
    for setup in ({"burst": [500] * 10}, {"key": "another-key"}, {"burst": [404]}):
        for name, value in setup.items():
            setattr(fake, name, value)
        with pytest.raises(PerspectiveError) as info:
            scorer.score(["c"], "en")
        texts += [str(info.value), repr(info.value)]
        fake.burst, fake.key = [], FAKE_KEY
    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    texts += [record.getMessage() for record in caplog.records]
    assert any("Retry" in record.getMessage() or "POST" in record.getMessage() for record in caplog.records)
    assert not [text for text in texts if FAKE_KEY in text]


# --------------------------------------------------------------------------- resume through the store


def test_interrupted_scoring_resumes_through_the_store(fake, tmp_path):
    """The grid commits every batch_size scores; a rerun requests only the rest."""
    n = 40
    with Store(tmp_path / "run.sqlite") as store:
        store.add_train_setting("t", "zs", "m", "zs", None, None, 1, {})
        store.add_evaluation("e", "t", "en", "test_toxic", {}, 1)
        store.add_batch("e", 0, [Completion(f"p{i:02d}", 0, f"prompt {i}", f"completion {i}", 5)
                                 for i in range(n)])
        plan = SimpleNamespace(config=SimpleNamespace(scorers=("perspective",)))
        session = grid.Session()
        session.scorers["perspective"] = fast_scorer()

        fake.succeed_at_most = 20  # dies inside the second chunk of 16
        with pytest.raises(PerspectiveError):
            grid.score(plan, ["e"], store, session, progress=False)
        assert len(store.table("scores")) == 16
        before = len(fake.requests)

        fake.succeed_at_most = None
        grid.score(plan, ["e"], store, session, progress=False)
        sent = [body["comment"]["text"] for body in fake.requests[before:]]
        assert sent == [f"completion {i}" for i in range(16, n)]  # nothing scored twice
        frame = store.completions_frame("perspective")
        assert frame["toxicity"].notna().all() and len(frame) == n
        assert list(frame["toxicity"]) == [expected_score(text) for text in frame["completion"]]


# --------------------------------------------------------------------------- the service is unavailable


def closed_port_url() -> str:
    """A local URL nobody listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{PATH}"


@pytest.fixture
def unreachable(monkeypatch) -> str:
    """The environment points the perspective scorer at a closed local port (with a key)."""
    url = closed_port_url()
    monkeypatch.setenv("PERSPECTIVE_API_KEY", FAKE_KEY)
    monkeypatch.setenv("XDETOX_PERSPECTIVE_URL", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return url


def test_no_network_is_one_service_unavailable_line(unreachable):
    with pytest.raises(ServiceUnavailable, match=r"no network \(connection error\).*after 1 retries") as info:
        fast_scorer(max_retries=1).score(["one"], "en")
    assert "\n" not in str(info.value) and FAKE_KEY not in str(info.value)


def test_quota_and_key_refusals_say_so(fake):
    fake.burst = [429] * 10
    with pytest.raises(ServiceUnavailable, match=r"quota exceeded \(HTTP 429\)") as info:
        fast_scorer().score(["one"], "en")
    assert FAKE_KEY not in str(info.value)
    fake.burst = []
    with pytest.raises(ServiceUnavailable, match=r"HTTP 403: API key not valid: \*\*\*.*PERSPECTIVE_API_KEY"):
        fast_scorer(api_key="AIzaWRONG-key-987654321").score(["one"], "en")


def test_cli_exits_3_with_one_line_when_the_service_is_unreachable(unreachable, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(registry.SCORERS, "perspective", partial(PerspectiveScorer.from_env, **FAST))
    path = tmp_path / "texts.txt"
    path.write_text("hello there\n", encoding="utf-8")
    assert main(["score", "--scorer", "perspective", "--lang", "en", str(path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and FAKE_KEY not in err
    assert err.startswith("xdetox: error: Perspective API") and "network" in err and "resumable" not in err


def test_cli_without_a_key_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("PERSPECTIVE_API_KEY", raising=False)
    path = tmp_path / "texts.txt"
    path.write_text("hello there\n", encoding="utf-8")
    assert main(["score", "--scorer", "perspective", "--lang", "en", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PERSPECTIVE_API_KEY" in err and "Traceback" not in err


def test_grid_run_without_network_exits_3_and_resumes(fake, monkeypatch, tmp_path, tiny_model_dir, capsys):
    """The grid stops at the first unanswered text, says the run is resumable, and a rerun finishes it."""
    monkeypatch.setitem(registry.SCORERS, "perspective", partial(PerspectiveScorer.from_env, **FAST))
    config = tmp_path / "p.toml"
    config.write_text(f'models = ["{tiny_model_dir}"]\nparadigms = ["zs"]\ntargets = ["en"]\nlimit = 2\n'
                      'measure_references = false\nscorers = ["perspective"]\n[decode]\nmax_new_tokens = 3\n')
    out = tmp_path / "run"
    monkeypatch.setenv("XDETOX_PERSPECTIVE_URL", closed_port_url())
    assert main(["grid", "run", str(config), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "network" in err and FAKE_KEY not in err and err.endswith("the run is resumable: run the same command again")
    monkeypatch.setenv("XDETOX_PERSPECTIVE_URL", fake.url)
    assert main(["grid", "run", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "summary.json").is_file()
