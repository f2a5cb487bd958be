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
        ([{"lang": "en", "neutral": "x"}], "missing column(s) toxic"),
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
    with pytest.raises(XdetoxInputError, match=r"\.jsonl, \.csv or \.parquet"):
        data.load(txt)


def test_check_langs():
    assert data.check_langs(["en", "am"]) == ["en", "am"]
    with pytest.raises(XdetoxInputError, match="'fr'"):
        data.check_langs(["en", "fr"])
    with pytest.raises(XdetoxInputError, match="not in the data"):
        data.check_langs(["de"], available=["en"])


# --------------------------------------------------------------------------- Parquet, datasets, hub ids, prompt-only


def _rows(n: int = 8, lang: str = "en") -> list[dict]:
    return [{"lang": lang, "toxic": f"bad {i}", "neutral": f"good {i}"} for i in range(n)]


def test_parquet_reads_as_the_same_rows_in_jsonl(tmp_path):
    import pandas as pd

    pd.DataFrame(_rows()).to_parquet(tmp_path / "d.parquet")
    from_parquet, from_jsonl = data.load(tmp_path / "d.parquet"), data.load(_write_jsonl(tmp_path / "d.jsonl", _rows()))
    assert from_parquet.pairs == from_jsonl.pairs and not from_parquet.prompt_only
    pd.DataFrame([{"id": 7, "lang": "en", "toxic": "a", "neutral": "b", "split": "train"}]).to_parquet(tmp_path / "i.parquet")
    assert data.load(tmp_path / "i.parquet").pairs[0].id == "7"


@pytest.mark.parametrize(("rows", "message"), [
    ([{"lang": "en", "toxic": "a", "neutral": None}], "empty 'neutral' on row 1; neutral must be a non-empty string"),
    ([{"lang": "en", "toxic": "a", "neutral": "b"}, {"lang": "xx", "toxic": "c", "neutral": "d"}],
     "unknown language code 'xx' (row 2)"),
    ([{"lang": "en", "toxic": 5, "neutral": "b"}], "'toxic' on row 1 must be a string, got 5"),
    ([{"id": 1.5, "lang": "en", "toxic": "a", "neutral": "b"}], "'id' on row 1 must be a string or an integer"),
    ([{"lang": "en", "toxic": "a", "neutral": "b", "split": "dev"}], "unknown split 'dev' (row 1)"),
])
def test_parquet_rows_are_validated_as_jsonl_rows_are(tmp_path, rows, message):
    import pandas as pd

    pd.DataFrame(rows).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(XdetoxInputError) as err:
        data.load(tmp_path / "bad.parquet")
    assert message in str(err.value) and "line" not in str(err.value)  # a table's rows have no lines


def test_a_file_that_is_not_parquet_is_one_line(tmp_path):
    (tmp_path / "d.parquet").write_text("lang,toxic,neutral\n")
    with pytest.raises(XdetoxInputError, match="cannot parse data file .*d.parquet"):
        data.load(tmp_path / "d.parquet")


def test_a_datasets_directory_and_its_splits(tmp_path):
    import datasets

    datasets.Dataset.from_list(_rows()).save_to_disk(str(tmp_path / "one"))
    assert data.load(tmp_path / "one").pairs == data.load(_write_jsonl(tmp_path / "d.jsonl", _rows())).pairs
    rows = _rows(3)
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2]), "test": datasets.Dataset.from_list(rows[2:])}
                         ).save_to_disk(str(tmp_path / "split"))
    assert [p.split for p in data.load(str(tmp_path / "split")).pairs] == ["train", "train", "test"]
    by_lang = {lang: datasets.Dataset.from_list([{k: v for k, v in r.items() if k != "lang"} for r in _rows(4, lang)])
               for lang in ("de", "en")}
    datasets.DatasetDict(by_lang).save_to_disk(str(tmp_path / "langs"))
    corpus = data.load(tmp_path / "langs")
    assert corpus.langs == ["en", "de"] and len(corpus.select("de", "test")) == 1
    (tmp_path / "plain").mkdir()
    with pytest.raises(XdetoxInputError, match="is a directory but not a saved datasets dataset"):
        data.load(tmp_path / "plain")


def test_a_prompt_only_set_is_all_test_prompts(tmp_path):
    rows = [{"lang": "de", "toxic": f"böse {i}"} for i in range(3)] + [{"lang": "en", "toxic": "bad"}]
    corpus = data.load(_write_jsonl(tmp_path / "p.jsonl", rows))
    assert corpus.prompt_only and {p.split for p in corpus.pairs} == {"test"}
    assert [p.text for p in corpus.prompts("de", "test_toxic")] == ["böse 0", "böse 1", "böse 2"]
    with_split = [{"lang": "en", "toxic": "a", "split": "train"}, {"lang": "en", "toxic": "b", "split": "test"}]
    assert [p.split for p in data.load(_write_jsonl(tmp_path / "s.jsonl", with_split)).pairs] == ["train", "test"]
    # a neutral column makes a parallel set: its rows need their neutrals, as before
    with pytest.raises(XdetoxInputError, match="empty 'neutral' on row 2"):
        data.load(_write_jsonl(tmp_path / "m.jsonl", [{"lang": "en", "toxic": "a", "neutral": "b"},
                                                       {"lang": "en", "toxic": "c"}]))
    assert not data.load(_write_jsonl(tmp_path / "d.jsonl", _rows())).prompt_only


def test_training_paradigms_refuse_a_prompt_only_set_and_eval_takes_it(tmp_path):
    from xdetox.given import GivenSpec
    from xdetox.grid import GridConfig, make_plan

    corpus = data.load(_write_jsonl(tmp_path / "p.jsonl", [{"lang": "en", "toxic": "bad"}]))
    for paradigms, needs in ((("zs", "x-ft"), "x-ft trains on neutral rewrites"),
                             (("zs",), "the reference measures read its neutral sentences")):
        with pytest.raises(XdetoxInputError, match="missing column\\(s\\) neutral: .*" + needs):
            make_plan(GridConfig(paradigms=paradigms, targets=("en",)), corpus)
    plan = make_plan(GridConfig(paradigms=("zs", "eval"), targets=("en",), measure_references=False,
                                evaluate=GivenSpec()), corpus)
    assert [e.setting.spec.paradigm for e in plan.evaluations] == ["zs", "eval"]


def test_hub_ids_and_paths(tmp_path, monkeypatch):
    from xdetox.errors import ServiceUnavailable

    monkeypatch.chdir(tmp_path)
    assert data.is_hub_id("textdetox/multilingual_paradetox") and data.is_hub_id("imdb")
    assert not data.is_hub_id("pairs.jsonl") and not data.is_hub_id("./x") and not data.is_hub_id("a/b/c")
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").mkdir()
    assert not data.is_hub_id("org/name")  # a directory here is a directory
    assert data.data_ref("someone/dataset") == "someone/dataset"
    assert data.data_ref("org/name") == str((tmp_path / "org" / "name").resolve())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ServiceUnavailable, match="'someone/no-such-dataset' is no file or directory here.*HF_HUB_OFFLINE"):
        data.load("someone/no-such-dataset")
