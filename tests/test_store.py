import pytest

from xdetox.generate import Completion
from xdetox.store import Store


def _completions(n, prefix="p"):
    return [Completion(f"{prefix}{i}", 0, f"prompt {i}", f"text {i}", 3) for i in range(n)]


def _setup(store):
    store.add_train_setting("t1", "x-ft:en", "m", "x-ft", "en", None, 42, {"a": 1})
    store.add_train_setting("t2", "p-ft:20%", "m", "p-ft", None, 20, 43, {"a": 2})
    store.add_evaluation("e1", "t1", "de", "test_toxic", {"t": 0.7}, 2)
    store.add_evaluation("e2", "t2", "en", "test_toxic", {"t": 0.7}, 1)


def test_batches_are_idempotent(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        _setup(store)
        store.add_batch("e1", 0, _completions(3))
        store.add_batch("e1", 0, _completions(3))  # a replayed batch is harmless
        assert store.done_batches("e1") == {0}
        assert len(store.table("completions")) == 3
        _setup(store)  # re-adding settings and evaluations is harmless too
        assert len(store.table("evaluations")) == 2


def test_a_failed_batch_leaves_nothing(tmp_path):
    bad = _completions(2) + [object()]  # the third row cannot be written
    with Store(tmp_path / "s.sqlite") as store:
        _setup(store)
        with pytest.raises(AttributeError):
            store.add_batch("e1", 1, bad)
        assert store.done_batches("e1") == set()
        assert store.table("completions").empty


def test_scores_and_frame(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        _setup(store)
        store.add_batch("e1", 0, _completions(2))
        pending = store.unscored("offline")
        assert list(pending["prompt_id"]) == ["p0", "p1"]
        assert set(pending["target"]) == {"de"}
        store.add_scores("offline", [("e1", "p0", 0, 0.25)])
        assert list(store.unscored("offline")["prompt_id"]) == ["p1"]
        store.add_scores("offline", [("e1", "p1", 0, 0.75), ("e1", "p0", 0, 0.99)])  # ignored duplicate
        frame = store.completions_frame("offline")
        assert list(frame["toxicity"]) == [0.25, 0.75]
        assert list(frame["setting"]) == ["x-ft:en"] * 2
        assert frame["source"].iloc[0] == "en" and frame["percent"].iloc[0] is None
        assert list(frame["seed"]) == [42, 42]
        store.add_batch("e2", 0, _completions(1, prefix="q"))
        assert list(store.unscored("offline", ["e1"])["prompt_id"]) == []
        assert list(store.unscored("offline", ["e2"])["prompt_id"]) == ["q0"]
        frame = store.completions_frame("offline")
        row = frame[frame["prompt_id"] == "q0"].iloc[0]
        assert row["percent"] == 20 and row["seed"] == 43 and row["paradigm"] == "p-ft"
        assert row["toxicity"] != row["toxicity"]  # NaN: not scored yet


def test_meta_round_trip(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.set_meta("config", {"a": [1, 2]})
        assert store.get_meta("config") == {"a": [1, 2]}
        assert store.get_meta("missing", 5) == 5
