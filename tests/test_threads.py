"""--threads: parsing, how "auto" counts free cores, and that the choice reaches torch and the run record."""

from __future__ import annotations

import os

import pytest

from xdetox import machine
from xdetox.cli import main
from xdetox.errors import XdetoxInputError
from xdetox.machine import ThreadChoice, ThreadSetting, busy_cores, choose_threads


@pytest.fixture
def restore_threads(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(before))  # restored after the test
    yield
    torch.set_num_threads(before)
    machine._applied = None


def test_settings_are_validated_where_they_are_born():
    assert ThreadSetting.parse("3").value == 3 and ThreadSetting.parse(" auto ").value == "auto"
    for bad in ("0", "-1", "two", "1.5", ""):
        with pytest.raises(XdetoxInputError):
            ThreadSetting.parse(bad)
    with pytest.raises(XdetoxInputError):
        ThreadSetting(True)


def test_busy_cores_reads_runnable_tasks_less_this_process(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    assert busy_cores(samples=3, interval=0, stat=stat) == 2
    stat.write_text("procs_running 1\n")
    assert busy_cores(samples=1, stat=stat) == 0
    assert busy_cores(samples=1, stat=tmp_path / "missing") == 0


def test_auto_takes_the_free_cores_and_sleeps_when_sharing():
    assert choose_threads(ThreadSetting(3), cores=2, busy=2) == ThreadChoice(3, False, "--threads 3")
    idle = choose_threads(ThreadSetting("auto"), cores=4, busy=0)
    assert (idle.threads, idle.passive) == (4, False)
    shared = choose_threads(ThreadSetting("auto"), cores=4, busy=1)
    assert (shared.threads, shared.passive) == (3, True) and "3 of 4" in shared.note
    full = choose_threads(ThreadSetting("auto"), cores=2, busy=5)
    assert (full.threads, full.passive) == (1, True)


def test_the_choice_reaches_torch_and_the_run_record(restore_threads):
    import torch

    from xdetox.grid.env import environment

    machine.apply_threads(ThreadChoice(1, True, "auto: 1 of 2 cores free, idle threads sleep"))
    assert torch.get_num_threads() == 1
    assert os.environ["OMP_NUM_THREADS"] == "1"  # what the processes it starts (bench's workers) run with
    assert "1 threads (auto: 1 of 2 cores free" in environment()["device"]


def test_cli_refuses_a_bad_count_in_one_line(capsys, monkeypatch, restore_threads):
    assert main(["score", "--scorer", "offline", "--lang", "en", "--threads", "0", "-"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setenv("XDETOX_THREADS", "many")
    assert main(["report", "nowhere"]) == 2
    assert "--threads" in capsys.readouterr().err
