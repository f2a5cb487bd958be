"""Shared fixtures: a tiny randomly initialised causal LM and tokenizer, built here.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in the test on
the bundled corpus, the model a 2-layer Gemma 3 with random weights.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --------------------------------------------------------------------------- parallel workers
#
# ``make test`` runs the suite in parallel workers (pytest-xdist, ``-n auto --dist loadfile``: a module's
# tests, and its module-scoped fixtures, stay in one worker). Each worker takes its own share of the
# usable cores before torch is imported (CPU affinity, so ``--threads auto`` inside a test counts those,
# and the processes a test starts inherit them) and one OpenMP thread per core of it: two workers that
# each ran 2 threads on 2 cores would stall each other (OpenMP spinning). ``auto`` is one worker per core,
# at most one per ``WORKER_MEMORY_GB`` of available memory and at most ``MAX_WORKERS``.

WORKER_MEMORY_GB = 8
MAX_WORKERS = 4


def _my_share_of_the_cores() -> None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[int(worker.removeprefix("gw")) % count::count] or cores
    os.sched_setaffinity(0, mine)
    os.environ["OMP_NUM_THREADS"] = str(len(mine))


_my_share_of_the_cores()


@pytest.hookimpl(optionalhook=True)  # pytest without xdist (or with -p no:xdist) knows no such hook
def pytest_xdist_auto_num_workers(config):
    import psutil

    from xdetox.machine import usable_cores

    available = psutil.virtual_memory().available / 2**30
    return max(1, min(usable_cores(), int(available // WORKER_MEMORY_GB), MAX_WORKERS))


# --------------------------------------------------------------------------- the order of modules
#
# Workers take a module whole, the next in the queue when they are nearly done with their last; a long
# module handed out near the end keeps one worker busy while the other idles. Each session keeps how long
# each module's tests took in pytest's cache (``.pytest_cache``, written by the controlling process, and
# only where whole modules ran: no -k, -m or test ids); the next session puts the longest modules first
# (longest processing time first) and keeps that order in the workers' queue. A session without that
# record (a clean clone) keeps xdist's own order: most tests first.

MODULE_SECONDS = "xdetox/module-seconds"
_SECONDS_THIS_SESSION: dict[str, float] = {}


def _module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _recorded_seconds(config) -> dict[str, float]:
    cache = getattr(config, "cache", None)  # none with -p no:cacheprovider
    return cache.get(MODULE_SECONDS, {}) if cache is not None else {}


def pytest_collection_modifyitems(session, config, items):
    seconds = _recorded_seconds(config)
    if seconds:
        items.sort(key=lambda item: -seconds.get(_module_of(item.nodeid), 0.0))  # stable: a module stays whole


def _keep_the_order_of_the_collection(config) -> None:
    """In the controlling process (the one that hands modules out), where a record exists: the queue follows
    the order the workers collected (above), not xdist's reordering by number of tests."""
    if _recorded_seconds(config) and hasattr(config.option, "loadscopereorder") and not hasattr(config, "workerinput"):
        config.option.loadscopereorder = False


def pytest_runtest_logreport(report):
    _SECONDS_THIS_SESSION[_module_of(report.nodeid)] = \
        _SECONDS_THIS_SESSION.get(_module_of(report.nodeid), 0.0) + report.duration


def _whole_modules_ran(config) -> bool:
    """No -k, -m, --deselect, --lf/--ff or ``path::test`` argument: each module that ran, ran whole (a
    module's seconds from a part of it would put it too late in the next session's queue)."""
    option = config.option
    return not (getattr(option, "keyword", "") or getattr(option, "markexpr", "") or getattr(option, "deselect", None)
                or getattr(option, "lf", False) or getattr(option, "failedfirst", False)
                or any("::" in str(arg) for arg in config.args))


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if hasattr(config, "workerinput") or getattr(config, "cache", None) is None or not _SECONDS_THIS_SESSION:
        return  # a worker (its reports reach the controlling process, which keeps the record), or no cache
    if not _whole_modules_ran(config):
        return
    seconds = _recorded_seconds(config)
    seconds.update({module: round(value, 2) for module, value in _SECONDS_THIS_SESSION.items()})
    config.cache.set(MODULE_SECONDS, seconds)


# --------------------------------------------------------------------------- the session's cache
#
# Every test (and every process a test starts: it inherits the environment) caches under one
# temporary XDETOX_CACHE for the session, never under the user's ~/.cache/xdetox/scorers:
#   models/   a symlink to the user's models/ (the embedded Gemma model's one-time GGUF conversion,
#             minutes, stays shared with the user's runs);
#   scorers/  starts with a copy of the user's cached default lexical scorers (``offline``,
#             ``offline-lexical``) where the user has them, so a session trains each at most once
#             (about a minute) and only when the user's cache lacks it; nothing is written back.
# A test that needs a cache of its own still sets XDETOX_CACHE itself (``isolated_cache``).

_SESSION_CACHE: dict[str, str | None] = {}


def pytest_configure(config):
    _keep_the_order_of_the_collection(config)
    from xdetox.cache import cache_root

    user_root, _ = cache_root()
    root = Path(tempfile.mkdtemp(prefix="xdetox-test-cache-"))
    models = user_root / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
        (root / "models").symlink_to(models.resolve(), target_is_directory=True)
    except OSError:  # no usable user cache: the session converts the embedded model itself, if asked
        pass
    scorers = root / "scorers"
    scorers.mkdir()
    try:
        from xdetox.scorers.offline.config import LEXICAL_V1, OfflineScorerConfig

        for lexical in (OfflineScorerConfig(), LEXICAL_V1):
            cached = user_root / "scorers" / f"offline-{lexical.key()}.joblib"
            if cached.is_file():
                shutil.copyfile(cached, scorers / cached.name)
    except Exception:  # noqa: BLE001 -- a broken import fails the tests that need it, not the session
        pass
    _SESSION_CACHE.update(root=str(root), before=os.environ.get("XDETOX_CACHE"))
    os.environ["XDETOX_CACHE"] = str(root)


def pytest_unconfigure(config):
    if "root" not in _SESSION_CACHE:
        return
    before = _SESSION_CACHE.pop("before")
    if before is None:
        os.environ.pop("XDETOX_CACHE", None)
    else:
        os.environ["XDETOX_CACHE"] = before
    root = Path(_SESSION_CACHE.pop("root"))
    if (root / "models").is_symlink():
        (root / "models").unlink()  # never follow it into the user's models
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the session's speed
#
# Model code calls gc.collect() after each training and model switch (xdetox, accelerate); in a
# process that has imported torch, transformers and sklearn each full collection walks over half a
# million long-lived objects (about 0.3 s). At the first test of each module, what survives a
# collection is moved out of the collector's sight (gc.freeze): later collections walk only what
# the module made. Frozen objects are still freed by reference counting, and each module's own
# garbage is collected as before.

_FROZEN_AT: list = [None]


def pytest_runtest_setup(item):
    module = getattr(item, "module", None)
    if module is not _FROZEN_AT[0]:
        _FROZEN_AT[0] = module
        gc.collect()
        gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _scorer_data_once_per_session():
    """``toxicity_corpus`` (the bundled corpus normalised and cleaned, 2-3 s a call, the same for the same
    arguments) is computed once per argument set in the session: every scorer training, validation and data
    test asks for it. Callers get a fresh list of the same (frozen) rows each time. What ``model_input`` calls
    ``deobfuscate`` with is remembered per text (tests/test_deobfuscate.py tests the function itself)."""
    import functools
    import inspect

    from xdetox.scorers import semantic, validation
    from xdetox.scorers.offline import data, evaluate

    real = data.toxicity_corpus
    signature = inspect.signature(real)
    done: dict[tuple, tuple] = {}

    @functools.wraps(real)
    def toxicity_corpus(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple((name, tuple(value) if isinstance(value, list) else value)
                    for name, value in bound.arguments.items())
        try:
            hash(key)
        except TypeError:
            return real(*args, **kwargs)
        if key not in done:
            done[key] = tuple(real(*args, **kwargs))
        return list(done[key])

    with pytest.MonkeyPatch.context() as mp:
        for module in (data, semantic, validation, evaluate):
            if getattr(module, "toxicity_corpus", None) is real:
                mp.setattr(module, "toxicity_corpus", toxicity_corpus)
        # what the lexical model reads (``model_input``) deobfuscates each text: a pure function of the text,
        # about 0.1 ms a call, 80,000 calls for each training set of the full corpus; remembered per text
        mp.setattr(data, "deobfuscate", functools.lru_cache(maxsize=None)(data.deobfuscate))
        yield


@pytest.fixture(scope="session", autouse=True)
def _default_lexical_scorer_trained_at_most_once():
    """The default lexical scorers (``offline``, ``offline-lexical``: about a minute each) are trained at most
    once per session, into the session's cache (and not at all where the user's cache held them): a test
    that would train one again (a cache of its own, a damaged file) fails here."""
    from xdetox.scorers.offline.config import LEXICAL_V1, OfflineScorerConfig
    from xdetox.scorers.offline.scorer import OfflineScorer

    real = OfflineScorer.train.__func__
    trained: list = []

    def train(cls, *args, **kwargs):
        config = args[0] if args else kwargs.get("config", OfflineScorerConfig())
        if config in (OfflineScorerConfig(), LEXICAL_V1):
            if config in trained:
                pytest.fail(f"this test trains the default lexical scorer {config.key()} a second time in the"
                            " session (about a minute): use the session's XDETOX_CACHE, or a small config")
            trained.append(config)
        return real(cls, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(OfflineScorer, "train", classmethod(train))
        yield


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from xdetox import data

    corpus = data.load_bundled()
    texts = [p.toxic for p in corpus.pairs] + [p.neutral for p in corpus.pairs]
    texts.append("Complete the sentence:")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=600, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        ),
    )
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>",
    )


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """A 2-layer Gemma 3 causal LM with random weights."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    fast = _tiny_tokenizer()
    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
        sliding_window=64, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        layer_types=["sliding_attention", "full_attention"],
    )
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def build_tiny_seq2seq(path: Path, seed: int = 0) -> Path:
    """A 2-layer mT5-style encoder-decoder with random weights."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    fast = _tiny_tokenizer()
    torch.manual_seed(seed)
    config = MT5Config(
        vocab_size=len(fast), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    MT5ForConditionalGeneration(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_seq2seq_dir(tmp_path_factory) -> Path:
    return build_tiny_seq2seq(tmp_path_factory.mktemp("tiny-seq2seq"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point xdetox's cache at a fresh temporary folder for one test."""
    monkeypatch.setenv("XDETOX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    """A 2-layer BERT classifier with random weights, labels {0: neutral, 1: toxic}."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-classifier")
    tokenizer = _tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, pad_token_id=0,
        id2label={0: "neutral", 1: "toxic"}, label2id={"neutral": 0, "toxic": 1},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path



@pytest.fixture(scope="session")
def small_scorer_cache(tmp_path_factory) -> Path:
    """One XDETOX_CACHE for the small scorers the tests train (tests/test_score.py's lexical scorer, the same
    lexical model inside tests/test_semantic.py's stacked one): each is trained once per session."""
    return tmp_path_factory.mktemp("small-scorer-cache")


TINY_RUN = ("--targets", "en,de", "--limit", "3", "--epochs", "1", "--max-new-tokens", "5", "--scorer", "offline",
            "--quiet")
"""The options of the tiny ``xdetox run`` of tests/test_cli.py and tests/test_reuse.py, besides ``--model``
and ``--out``."""


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """``xdetox run --model <tiny> TINY_RUN --out DIR``, finished (exit 0), made once per session.

    Shared: a test reads it, or changes a copy (``copy_run``), never the directory itself."""
    from xdetox.cli import main

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    assert main(["run", "--model", str(tiny_model_dir), *TINY_RUN, "--out", str(out)]) == 0
    return out


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a finished run directory at ``dest`` (files with their times), for a test that changes it."""
    return Path(shutil.copytree(run, dest))
