"""The grid on a Ray cluster (``xdetox grid run CONFIG --backend ray``).

One Ray task per training setting (train its adapter, generate and score its
evaluations), asking for the config's ``[resources]`` (CPUs, GPUs, memory).

No shared filesystem is assumed and the run's store has a single writer, this
driver process:

- a task runs ``grid.run_setting`` against a private *shard*: a fresh SQLite
  store and run folder in a temporary directory of its worker, and returns the
  shard's rows and the adapter's files (bytes);
- the driver writes the adapter into ``<run>/adapters/<key>`` (temporary
  folder + rename) and then merges the rows into the run's store in one
  transaction, as each task finishes.

Arithmetic. A task computes as the driver would in a local run (``Arithmetic``): torch's
thread count (fp32 reductions add in another order with another count: a Ray worker
would otherwise run ``num_cpus`` threads, 1 by default) and whether the CPU path is
bf16 or fp32 (the dtype, the tuned scorer's autocast and the linear kernels prepacking
may use), taken on the driver, passed to every task and applied before it loads a
model; the variables that hold the CPU kernels to an instruction set
(``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ...) travel in the runtime environment.
On nodes like the driver's machine, a task's rows then equal a local run's bit for bit.

Fault tolerance. A worker process or node that dies mid-task makes Ray re-run
the task (``max_retries``); a task's result depends only on the setting (seeds
derive from the setting seed, evaluation key and batch index), so a re-run gives
the same rows. A killed driver loses only the settings that were in flight:
running the same command again skips every setting the store holds complete.

Ray is an optional dependency (``pip install 'xdetox[ray]'``), imported only here.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from xdetox._io import file_sha256, first_line, quiet_libraries
from xdetox.data import Corpus
from xdetox.errors import ServiceUnavailable, XdetoxInputError
from xdetox.grid import (ADAPTERS_DIR, STORE_FILE, Plan, Session, TrainSetting, check_scorer_identity,
                         score_length_matched)
from xdetox.store import Store

INSTALL_HINT = "pip install 'xdetox[ray]'"
# Set on the driver, these reach the tasks even on a cluster whose nodes were started elsewhere.
ENV_PASSED = ("XDETOX_CACHE", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
              "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
              # read when a kernel library loads: they decide which instructions, and so which sums, it uses
              "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
              "MKL_CBWR", "OMP_WAIT_POLICY")
SHARD_PREFIX = "xdetox-shard-"  # + worker pid: a task's private folder on its node
TASK_NAME = "xdetox_setting"  # worker processes show ``ray::xdetox_setting`` while they run one


@dataclass(frozen=True)
class Arithmetic:
    """What decides a task's floats besides its inputs, as the driver would compute them locally."""

    threads: int  # torch's intra-op threads: another count adds fp32 (and bf16) sums in another order
    cpu_bf16: bool  # a CPU run in bf16 (native bf16 on the driver) or fp32: dtype, autocast, prepack rule

    @classmethod
    def of_driver(cls) -> Arithmetic:
        import torch

        from xdetox import models

        return cls(torch.get_num_threads(), models.cpu_supports_bf16())

    def env(self, num_cpus: float) -> dict[str, str]:
        """The worker processes' variables: OpenMP (and so numpy's BLAS) at the driver's thread count,
        its idle threads sleeping where a task runs more threads than the CPUs it asked for."""
        env = {"OMP_NUM_THREADS": str(self.threads)}
        if self.threads > num_cpus:
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        return env

    def apply(self) -> None:
        """In the task, before any model loads (a worker keeps its models between tasks of one run,
        all with the same arithmetic)."""
        from xdetox import machine, models

        models.use_cpu_bf16(self.cpu_bf16)
        machine.apply_threads(machine.ThreadChoice(self.threads, False, "the Ray driver's count"))


def import_ray():
    """The ``ray`` module, or one clear input error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise XdetoxInputError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def execute(plan: Plan, corpus: Corpus, run_dir: Path, store: Store, progress: bool = True,
            address: str | None = None) -> list[str]:
    """Run the settings the store does not hold complete as Ray tasks; merge each result as it lands.

    ``address``: a running cluster (``host:port`` or ``auto``); None starts a local
    one for this run (or joins the one ``RAY_ADDRESS`` names). Returns the devices
    the tasks ran on (empty when nothing was left to do).
    """
    ray = import_ray()
    for name in plan.config.scorers:  # the shards' scores join this store: same models or none
        check_scorer_identity(store, name)
    todo = [s for s in plan.settings if not setting_complete(plan, s, run_dir, store)]
    if not todo:
        score_length_matched(plan, store, Session(), progress)
        return []
    arithmetic = Arithmetic.of_driver()
    started_here = not ray.is_initialized()
    if started_here:
        options = {"logging_level": "WARNING", "log_to_driver": progress,
                   "runtime_env": _runtime_env(arithmetic, plan.config.resources.num_cpus)}
        if address is None:
            options["include_dashboard"] = False
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:
            raise XdetoxInputError(f"cannot reach the Ray cluster at {address}: {first_line(err)}") from None
    try:
        devices = _run(ray, plan, corpus, run_dir, store, todo, progress, arithmetic)
    finally:
        if started_here:
            ray.shutdown()
    # A task's shard holds its own setting only: pairs with ZS completions are scored here, after the merge.
    score_length_matched(plan, store, Session(), progress)
    return devices


def _runtime_env(arithmetic: Arithmetic, num_cpus: float) -> dict:
    env = {name: os.environ[name] for name in ENV_PASSED if os.environ.get(name)}
    return {"env_vars": {**env, **arithmetic.env(num_cpus)}}


def _run(ray, plan: Plan, corpus: Corpus, run_dir: Path, store: Store, todo: list[TrainSetting],
         progress: bool, arithmetic: Arithmetic) -> list[str]:
    res = plan.config.resources
    options = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": res.max_retries,
               "retry_exceptions": False}
    if res.memory_gb is not None:
        options["memory"] = int(res.memory_gb * 1024**3)
    # Options in ray.remote itself (not .options()), so that a GPU task gets Ray's default
    # max_calls=1: a fresh worker process per GPU setting, its GPU memory freed when it ends.
    task = ray.remote(**options)(xdetox_setting)
    plan_ref, corpus_ref = ray.put(plan), ray.put(corpus)
    pending = {task.remote(plan_ref, corpus_ref, setting, arithmetic): setting for setting in todo}
    bar = tqdm(total=len(plan.settings), initial=len(plan.settings) - len(todo), desc="settings (ray)",
               unit="setting", disable=not progress)
    devices: list[str] = []
    last = time.perf_counter()
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        setting = pending.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, (XdetoxInputError, ServiceUnavailable)):  # nf4 without CUDA, no network
                raise err.cause from None
            raise
        merge_result(result, run_dir, store)
        if result["device"] not in devices:
            devices.append(result["device"])
        now = time.perf_counter()  # the driver's wall time, summed over sessions like the local backend's
        store.set_meta("wall_time_s", round(store.get_meta("wall_time_s", 0.0) + now - last, 1))
        last = now
        bar.set_postfix_str(f"{setting.model.name} {setting.label} seed {setting.spec.seed}")
        bar.update()
    bar.close()
    return devices


def setting_complete(plan: Plan, setting: TrainSetting, run_dir: Path, store: Store) -> bool:
    """The store holds the setting done: adapter recorded (and on disk), every batch, score and measure."""
    row = store.train_setting(setting.key)
    if row is None or row["status"] != "done":
        return False
    if row["adapter_path"] and not (run_dir / row["adapter_path"] / "adapter_model.safetensors").is_file():
        return False
    keys = [e.key for e in plan.evaluations_of(setting)]
    if len(store.complete_evaluations(keys)) != len(keys):
        return False
    if plan.config.measure_references and not store.has_measures(setting.key):
        return False
    return all(store.unscored(name, keys).empty for name in plan.config.scorers)


# --------------------------------------------------------------------------- worker side

_SESSION: Session | None = None  # kept by a worker process between its tasks (base model, scorers)


def xdetox_setting(plan: Plan, corpus: Corpus, setting: TrainSetting,
                   arithmetic: Arithmetic | None = None) -> dict:
    """The Ray task: one training setting computed into a private shard; returns its rows and adapter.

    ``arithmetic``: the driver's (``Arithmetic``), applied before anything loads; None keeps this process's.
    """
    global _SESSION
    if arithmetic is not None:
        arithmetic.apply()
    from xdetox import grid, models

    quiet_libraries()
    models.check_runnable(setting.model)  # what the driver could not check: CUDA, bitsandbytes here
    if _SESSION is None:
        _SESSION = Session()
    _sweep_dead_shards()
    work = Path(tempfile.mkdtemp(prefix=f"{SHARD_PREFIX}{os.getpid()}-"))
    try:
        with Store(work / STORE_FILE) as shard:
            grid.run_setting(plan, setting, corpus, work, shard, _SESSION, progress=False)
            rows = shard.export_rows()
        files: dict[str, bytes] = {}
        folder = work / ADAPTERS_DIR / setting.key
        if folder.is_dir():
            files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
                     if p.is_file()}
        return {"key": setting.key, "rows": rows, "adapter": files, "device": grid.environment()["device"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sweep_dead_shards() -> None:
    """Remove the shard folders of worker processes that died mid-task (killed, OOM) on this node."""
    for path in Path(tempfile.gettempdir()).glob(f"{SHARD_PREFIX}*-*"):
        pid = path.name[len(SHARD_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


# --------------------------------------------------------------------------- driver side


def merge_result(result: dict, run_dir: Path, store: Store) -> None:
    """Adapter files first (temporary folder + rename), then every row in one transaction.

    A driver killed between the two leaves a complete adapter and no rows: the
    setting is not complete, so the next run recomputes it and keeps that adapter.
    """
    if result["adapter"]:
        write_adapter(run_dir / ADAPTERS_DIR / result["key"], result["adapter"])
    store.merge_rows(result["rows"])


def write_adapter(path: Path, files: dict[str, bytes]) -> None:
    weights = path / "adapter_model.safetensors"
    if weights.is_file() and file_sha256(weights) == hashlib.sha256(files.get(weights.name, b"")).hexdigest():
        return  # renamed into place only when complete: an earlier try of the same setting
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        for rel, blob in files.items():
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.replace(work, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
