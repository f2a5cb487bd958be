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


class _Clock:
    """A stand-in for the store's ``time`` module: the test says what time it is."""

    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now


def test_attempts_give_this_attempts_time_and_the_total(tmp_path, monkeypatch):
    import xdetox.store.database as store_module

    clock = _Clock()
    monkeypatch.setattr(store_module, "time", clock)
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        _setup(store)
        clock.now = 100.0
        store.begin_attempt("first")
        clock.now = 130.0
        store.add_batch("e1", 0, _completions(2))
        clock.now = 170.0  # killed here: no end, nothing committed after 130
    with Store(path, readonly=True) as store:
        assert store.times() == {"wall_time_s": 30.0, "total_time_s": 30.0, "attempts": 1}
    with Store(path) as store:
        clock.now = 200.0
        store.begin_attempt("second")
        clock.now = 210.0
        store.add_batch("e1", 1, _completions(2, prefix="q"))
        clock.now = 250.0
        store.end_attempt("finished")
        clock.now = 300.0
        store.set_meta("after", 1)  # outside an attempt: counts for none
        assert store.times() == {"wall_time_s": 50.0, "total_time_s": 80.0, "attempts": 2}
        attempts = store.table("attempts").sort_values("id")
        assert list(attempts["outcome"]) == ["running", "finished"]
        assert list(attempts["started"]) == ["first", "second"]
        with pytest.raises(ValueError, match="outcome"):
            store.end_attempt("exploded")


def test_a_store_from_before_attempts_reports_its_summed_time(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.set_meta("wall_time_s", 12.3)
        store.conn.execute("DROP TABLE attempts")
    with Store(path, readonly=True) as store:
        assert store.times() == {"wall_time_s": None, "total_time_s": 12.3, "attempts": None}


def test_readonly_store_writes_nothing(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        _setup(store)
    before = path.read_bytes()
    with Store(path, readonly=True) as store:
        assert len(store.table("evaluations")) == 2
        with pytest.raises(Exception, match="readonly"):
            store.set_meta("x", 1)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
