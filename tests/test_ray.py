"""The grid on Ray: a real two-node cluster on 127.0.0.1, a worker killed mid-task, a driver killed.

The cluster is started with the ``ray start`` command, as on a real cluster: a head
and a second node (separate raylet processes, one CPU each). Teardown kills exactly
the processes of this cluster (found by its private temp dir), never others.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from test_grid import DATA_TABLES, TINY, _tables

from xdetox import grid
from xdetox.cli import main
from xdetox.distributed import TASK_NAME, xdetox_setting
from xdetox.errors import XdetoxInputError

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install 'xdetox[ray]'"
                                                    " (make test installs it)")
TASK_TITLE = f"ray::{TASK_NAME}"  # a worker process's title while it runs a setting
assert xdetox_setting.__name__ == TASK_NAME


def _tiny_one_seed(tiny_model_dir) -> str:
    """The tiny grid of test_grid (every paradigm), one seed: 9 training settings."""
    text = TINY.format(model=tiny_model_dir)
    assert "seeds = [1, 2]" in text
    return text.replace("seeds = [1, 2]", "seeds = [1]")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory, tiny_model_dir) -> Path:
    path = tmp_path_factory.mktemp("ray-config") / "tiny.toml"
    path.write_text(_tiny_one_seed(tiny_model_dir))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, config_path):
    """The local backend's run of the same config: tables and wall time."""
    run = tmp_path_factory.mktemp("ray-ref") / "local"
    start = time.perf_counter()
    assert main(["grid", "run", str(config_path), "--out", str(run), "--quiet"]) == 0
    return _tables(run), time.perf_counter() - start


# --------------------------------------------------------------------------- a cluster of our own


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line or process title)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, cmd.strip())
    return out


class Cluster:
    def __init__(self, temp_dir: str, address: str):
        self.temp_dir = temp_dir
        self.address = address

    def own_processes(self) -> set[int]:
        """This cluster's daemons (their command lines name its temp dir) and their children."""
        procs = _procs()
        mine = {pid for pid, (_, cmd) in procs.items() if self.temp_dir in cmd}
        return mine | {pid for pid, (ppid, _) in procs.items() if ppid in mine}

    def raylets(self) -> set[int]:
        return {pid for pid, (_, cmd) in _procs().items() if self.temp_dir in cmd and "/raylet " in cmd}

    def task_workers(self) -> list[int]:
        """Worker processes of this cluster running a setting now."""
        raylets = self.raylets()
        return sorted(pid for pid, (ppid, cmd) in _procs().items()
                      if ppid in raylets and cmd.startswith(TASK_TITLE))

    def stop(self) -> None:
        for _ in range(20):
            pids = self.own_processes()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.25)


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node on 127.0.0.1, 1 CPU each, started with ``ray start``."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed")
    ray_cli = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="xr", dir="/tmp")  # Unix socket paths must stay < 108 chars
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
              f"--temp-dir={temp_dir}"]
    head = [str(ray_cli), "start", "--head", f"--port={port}", "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", *common]
    node = [str(ray_cli), "start", f"--address={address}", f"--dashboard-agent-listen-port={_free_port()}",
            *common]
    cluster = Cluster(temp_dir, address)
    start = time.perf_counter()
    try:
        for command in (head, node):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert len(cluster.raylets()) == 2, "expected a head and a second node"
        print(f"\nray cluster (2 nodes x 1 CPU) started in {time.perf_counter() - start:.1f} s")
        yield cluster
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", temp_dir], check=False)


def _assert_same_rows(run: Path, expected: dict[str, pd.DataFrame]) -> None:
    """Bit for bit, floats too (pandas' default would pass a difference within rtol 1e-5)."""
    tables = _tables(run)
    for name in DATA_TABLES:
        pd.testing.assert_frame_equal(tables[name], expected[name], obj=name, check_exact=True)


# --------------------------------------------------------------------------- tests


@needs_ray
def test_ray_grid_survives_a_killed_worker_and_equals_the_local_run(tmp_path, config_path, reference,
                                                                    ray_cluster):
    """SIGKILL one worker process while it runs a setting: Ray re-runs it; the store equals a local run's."""
    import torch

    expected, local_seconds = reference
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_worker():
        while not stop.is_set():
            workers = ray_cluster.task_workers()
            if workers:
                time.sleep(1.0)  # well inside the task: importing, loading, training
                for pid in workers:
                    if pid in ray_cluster.task_workers():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    run = tmp_path / "ray"
    start = time.perf_counter()
    try:
        code = main(["grid", "run", str(config_path), "--backend", "ray", "--address", ray_cluster.address,
                     "--out", str(run), "--quiet"])
    finally:
        stop.set()
        killer.join(timeout=5)
    ray_seconds = time.perf_counter() - start
    assert code == 0
    assert killed, "no worker was caught running a setting"
    _assert_same_rows(run, expected)
    adapters = sorted((run / grid.ADAPTERS_DIR).iterdir())
    assert len(adapters) == 8 and not [a for a in adapters if a.name.startswith(".")]
    assert (run / "summary.json").is_file() and (run / "report.html").is_file()
    # the tasks ran with this process's threads and dtype rule (a 1-CPU worker would otherwise take 1 thread)
    with sqlite3.connect(run / grid.STORE_FILE) as conn:
        device = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'environment'").fetchone()[0])["device"]
    assert f"; {torch.get_num_threads()} threads (the Ray driver's count); " in device, device
    print(f"\ntiny grid (9 settings, 1 seed): local backend {local_seconds:.1f} s,"
          f" ray backend (2 nodes x 1 CPU, 1 worker killed) {ray_seconds:.1f} s"
          f" (torch threads here and in each 1-CPU Ray task: {torch.get_num_threads()}; {device})")


def _settings_done(store_path: Path) -> int:
    if not store_path.is_file():
        return 0
    try:
        with sqlite3.connect(store_path, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM train_settings WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@needs_ray
def test_ray_driver_killed_then_the_same_command_resumes(tmp_path, config_path, reference, ray_cluster):
    expected, _ = reference
    run = tmp_path / "ray"
    command = [sys.executable, "-m", "xdetox.cli", "grid", "run", str(config_path), "--backend", "ray",
               "--address", ray_cluster.address, "--out", str(run), "--quiet"]
    driver = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while driver.poll() is None and _settings_done(run / grid.STORE_FILE) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, "the driver finished before it could be killed"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    merged = _settings_done(run / grid.STORE_FILE)
    assert 2 <= merged < 9 and not (run / "summary.json").exists()

    assert main(["grid", "run", str(config_path), "--backend", "ray", "--address", ray_cluster.address,
                 "--out", str(run), "--quiet"]) == 0
    _assert_same_rows(run, expected)
    assert not [p for p in (run / grid.ADAPTERS_DIR).iterdir() if p.name.startswith(".")]


def test_a_task_computes_with_the_driver_threads_and_dtype_rule(monkeypatch):
    """What a task takes from the driver before any model loads: torch threads, bf16 or fp32, the ISA holds."""
    import torch

    from xdetox import machine, models
    from xdetox.distributed import Arithmetic, _runtime_env

    before, native = torch.get_num_threads(), models.native_cpu_bf16()
    assert Arithmetic.of_driver() == Arithmetic(before, native)
    monkeypatch.setattr(machine, "_applied", machine._applied)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # restored after the test; apply() sets it
    try:
        Arithmetic(1, not native).apply()
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert models.cpu_supports_bf16() is (not native) and "as the driver's" in models.cpu_bf16_note()
        if not torch.cuda.is_available():
            assert models.resolve_dtype("auto") == (torch.float32 if native else torch.bfloat16)
    finally:
        models.use_cpu_bf16(None)
        torch.set_num_threads(before)
    assert models.cpu_supports_bf16() is native and "driver" not in models.cpu_bf16_note()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    env = _runtime_env(Arithmetic(2, False), num_cpus=1)["env_vars"]
    assert env["OMP_NUM_THREADS"] == "2" and env["OMP_WAIT_POLICY"] == "PASSIVE"  # 2 threads on 1 CPU: sleep
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert Arithmetic(2, False).env(2) == {"OMP_NUM_THREADS": "2"}


def test_ray_backend_without_ray_is_one_line_and_exit_2(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = tmp_path / "c.toml"
    config.write_text(_tiny_one_seed(tiny_model_dir))
    out = tmp_path / "run"
    assert main(["grid", "run", str(config), "--backend", "ray", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'xdetox[ray]'" in err and "\n" not in err
    assert not out.exists()
    assert main(["grid", "run", str(config), "--address", "127.0.0.1:1", "--out", str(out)]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    assert not out.exists()


def test_resources_table_is_read_but_is_not_part_of_the_run_identity():
    config = grid.config_from_dict({"resources": {"num_gpus": 1, "num_cpus": 4, "memory_gb": 24}})
    assert config.resources == grid.ResourceSpec(num_cpus=4, num_gpus=1, memory_gb=24)
    assert "resources" not in config.to_dict()
    assert config.to_dict() == grid.config_from_dict({}).to_dict()  # a new ask never blocks a resume
    assert grid.config_from_dict({}).resources == grid.ResourceSpec(num_cpus=1, num_gpus=0)
    for raw, needle in [({"gpus": 1}, "[resources]: unknown key(s) gpus"),
                        ({"num_gpus": -1}, "num_gpus must be a number >= 0"),
                        ({"memory_gb": 0}, "memory_gb must be a positive number"),
                        ({"max_retries": 1.5}, "max_retries must be an integer")]:
        with pytest.raises(XdetoxInputError) as err:
            grid.config_from_dict({"resources": raw})
        assert needle in str(err.value)


def test_nf4_on_ray_must_ask_for_a_gpu(tiny_model_dir):
    raw = {"models": [{"name": str(tiny_model_dir), "quantization": "nf4"}], "sources": ["en"]}
    with pytest.raises(XdetoxInputError, match=r"num_gpus = 1"):
        grid.check_runnable(grid.config_from_dict(raw), here=False)
    # asking for a GPU passes the driver's checks: CUDA and bitsandbytes are checked by each task
    grid.check_runnable(grid.config_from_dict({**raw, "resources": {"num_gpus": 1}}), here=False)


def test_shard_rows_merge_in_one_transaction_idempotently(tmp_path):
    """The driver's merge: a pending setting takes the shard's finished state; merging twice adds nothing."""
    from xdetox.generate import Completion
    from xdetox.store import DATA_TABLES as STORE_TABLES
    from xdetox.store import Store

    with Store(tmp_path / "shard.sqlite") as shard:
        shard.add_train_setting("k", "x-ft:en", "m", "x-ft", "en", None, 1, {"a": 1})
        shard.finish_train_setting("k", "adapters/k", "abc")
        shard.add_evaluation("e", "k", "en", "test_toxic", {}, 1)
        shard.add_batch("e", 0, [Completion("p1", 0, "prompt", "text", 3)])
        shard.add_scores("offline", [("e", "p1", 0, 0.25)])
        rows = shard.export_rows()
    assert set(rows) == set(STORE_TABLES)
    with Store(tmp_path / "run.sqlite") as run:
        run.add_train_setting("k", "x-ft:en", "m", "x-ft", "en", None, 1, {"a": 1})  # pending here
        run.merge_rows(rows)
        run.merge_rows(rows)
        assert run.train_setting("k")["status"] == "done" and run.train_setting("k")["adapter_sha256"] == "abc"
        assert run.complete_evaluations(["e", "missing"]) == {"e"}
        assert run.export_rows() == rows
        with pytest.raises(ValueError):
            run.merge_rows({"meta": [("a", "1")]})
