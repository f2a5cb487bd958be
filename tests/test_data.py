import json

import pytest

from xdetox import data
from xdetox.errors import XdetoxInputError


def test_bundled_corpus_has_fixed_split():
    corpus = data.load()
    assert corpus.langs == list(data.LANGS)
    for lang in data.LANGS:
        assert len(corpus.select(lang, "train")) == 300
        test = corpus.select(lang, "test")
        assert len(test) == 100
        assert test[0].id == f"{lang}-300"
    de = corpus.prompts("de", "test_toxic")
    assert [p.text for p in de] == [p.toxic for p in corpus.select("de", "test")]
    assert len(corpus.prompts("uk", "train_toxic")) == 300
    assert corpus.prompts("am", "test_neutral")[0].text == corpus.select("am", "test")[0].neutral


def test_digest_changes_with_content():
    corpus = data.load()
    assert corpus.digest("en") != corpus.digest("de")
    assert corpus.digest() == data.load().digest()


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


def test_user_jsonl_without_split_gets_last_quarter_as_test(tmp_path):
    rows = [{"lang": "en", "toxic": f"bad {i}", "neutral": f"good {i}"} for i in range(8)]
    corpus = data.load(_write_jsonl(tmp_path / "d.jsonl", rows))
    assert [p.split for p in corpus.pairs] == ["train"] * 6 + ["test"] * 2
    assert corpus.pairs[0].id == "en-000"


def test_user_csv_with_ids_and_split(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("id,lang,toxic,neutral,split\na,de,du Idiot,du,train\nb,de,\"Mist, echt\",schade,test\n")
    corpus = data.load(path)
    assert [(p.id, p.split, p.toxic) for p in corpus.pairs] == [("a", "train", "du Idiot"), ("b", "test", "Mist, echt")]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"lang": "en", "toxic": "x"}], "missing column(s) neutral"),
        ([{"lang": "en", "toxic": " ", "neutral": "y"}], "empty 'toxic' on row 1"),
        ([{"lang": "xx", "toxic": "a", "neutral": "b"}], "unknown language code 'xx'"),
        (
            [{"id": "1", "lang": "en", "toxic": "a", "neutral": "b"},
             {"id": "1", "lang": "en", "toxic": "c", "neutral": "d"}],
            "duplicate id '1'",
        ),
        (
            [{"lang": "en", "toxic": "a", "neutral": "b", "split": "train"},
             {"lang": "de", "toxic": "c", "neutral": "d", "split": "test"}],
            "language 'de' has no train rows",
        ),
        ([{"lang": "en", "toxic": "a", "neutral": "b", "split": "dev"}], "unknown split 'dev'"),
    ],
)
def test_validation_messages(tmp_path, rows, message):
    with pytest.raises(XdetoxInputError) as err:
        data.load(_write_jsonl(tmp_path / "bad.jsonl", rows))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(XdetoxInputError, match="data file not found"):
        data.load(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(XdetoxInputError, match="cannot parse"):
        data.load(bad)
    txt = tmp_path / "d.txt"
    txt.write_text("x")
    with pytest.raises(XdetoxInputError, match=r"\.jsonl or \.csv"):
        data.load(txt)


def test_check_langs():
    assert data.check_langs(["en", "am"]) == ["en", "am"]
    with pytest.raises(XdetoxInputError, match="'fr'"):
        data.check_langs(["en", "fr"])
    with pytest.raises(XdetoxInputError, match="not in the data"):
        data.check_langs(["de"], available=["en"])
