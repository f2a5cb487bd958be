"""The offline scorer's deobfuscation step and the first model kept as ``offline-lexical``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import pytest

from xdetox.scorers.offline.config import FORMAT_VERSION, LEGACY_DEFAULTS, LEXICAL_V1, OfflineScorerConfig, data_digest
from xdetox.scorers.offline.data import model_input
from xdetox.scorers.offline.deobfuscate import deobfuscate
from xdetox.text import normalize


@pytest.mark.parametrize("written, read", [
    ("you i d i o t.", "you idiot."),
    ("you i.d.i.o.t!", "you idiot!"),
    ("du w-i-c-h-s-e-r", "du wichser"),
    ("hey 1d10t, get lost", "hey idiot, get lost"),
    ("sh1t happens", "shit happens"),
    ("tu n4l4y4k hai", "tu nalayak hai"),
    ("ты cвoлoчь", "ты сволочь"),          # Latin look-alikes inside a Cyrillic word
    ("ты пpидypok", "ты придурок"),
    ("idiоt", "idiot"),                    # a Cyrillic о inside a Latin word
    ("يا غـبـي", "يا غبي"),                 # tatweel
    ("أنت غ ب ي", "أنت غبي"),
    ("you idiooooot", "you idiot"),
    ("अबे निकम्मााा", "अबे निकम्मा"),       # a vowel sign written again and again
    ("አንተ ደ ደ ብ ነህ", "አንተ ደደብ ነህ"),
    ("你 个 傻 逼", "你个傻逼"),
])
def test_obfuscated_spellings_are_read_as_the_word(written, read):
    assert deobfuscate(normalize(written)) == read


@pytest.mark.parametrize("text", [
    "hello, how are you?", "meet me at 5pm, covid19 and mp3 files", "user123 wrote 2024-01-05",
    "привет, как дела?", "你好,今天天气很好。", "नमस्ते, आप कैसे हैं?", "ሰላም ነው?", "كيف حالك؟",
    "das ist gut so.", "i am here",
])
def test_plain_text_passes_through(text):
    assert deobfuscate(normalize(text)) == normalize(text)


def test_deobfuscation_is_idempotent_and_part_of_the_model_input():
    for text in ("You i d i o t!!", "Hey 1d10t", "Ты cвoлoчь", "plain words"):
        once = deobfuscate(normalize(text))
        assert deobfuscate(once) == once
        assert model_input(text, OfflineScorerConfig()) == once
        assert model_input(text, LEXICAL_V1) == normalize(text)  # the first model reads no deobfuscation
        assert model_input(model_input(text, OfflineScorerConfig()), OfflineScorerConfig()) == once


def test_the_first_model_keeps_the_key_it_had_before_the_new_fields():
    """Runs scored with the first model recorded ``offline-lexical-<key>``: LEXICAL_V1 must name it."""
    import sklearn

    before = {k: v for k, v in asdict(LEXICAL_V1).items() if k not in LEGACY_DEFAULTS}
    blob = json.dumps({"config": before, "data": data_digest(), "format": FORMAT_VERSION,
                       "sklearn": sklearn.__version__}, sort_keys=True).encode()
    assert LEXICAL_V1.key() == hashlib.sha256(blob).hexdigest()[:16]
    assert OfflineScorerConfig().key() != LEXICAL_V1.key()
    assert OfflineScorerConfig(augment_weight=5.0).key() != OfflineScorerConfig().key()
    with pytest.raises(Exception, match="augment_weight"):
        OfflineScorerConfig(augment_weight=-1.0)


def test_offline_lexical_is_registered_with_its_own_identity():
    from xdetox.scorers import registry

    assert "offline-lexical" in registry.SCORERS
    assert registry.scorer_identity("offline-lexical") == f"offline-lexical-{LEXICAL_V1.key()}"
    assert registry.scorer_identity("offline") != registry.scorer_identity("offline-lexical")
    assert registry.scorer_kind("offline-lexical") == "toxicity"


def test_training_set_reads_like_the_scorer_and_can_take_the_written_augmentation():
    from xdetox.scorers.offline.data import augmentation_rows, training_set

    small = OfflineScorerConfig(max_rows_per_lang=20)
    plain = training_set(small)
    assert all(deobfuscate(t) == t for t in plain.texts)  # what the model reads at scoring time too
    augmented = training_set(OfflineScorerConfig(max_rows_per_lang=20, augment_weight=5.0))
    extra = len(augmentation_rows(small.max_chars))
    assert len(augmented.texts) == len(plain.texts) + extra and extra > 0
    assert augmented.weights[-extra:].tolist() == [5.0] * extra
    assert sum(s.startswith("augment/") for s in augmented.sources) == extra
    assert not any(s.startswith("augment/") for s in plain.sources)
