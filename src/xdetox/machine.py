"""What the CPU offers: its model name and the instruction-set flags that decide xdetox's speed.

``SPEED_FLAGS``: AVX2 (the vectorised baseline of PyTorch's CPU kernels), AVX-512F (wider
kernels), AVX512-BF16 and AMX (native bf16 matrix instructions: with them ``dtype = "auto"``
runs bf16 on the CPU, see ``models.resolve_dtype``). Read from ``/proc/cpuinfo`` on Linux
(``parse_cpuinfo``: the ``model name`` line, and the x86 ``flags`` or ARM ``Features`` line);
where it has no model name the name comes from ``platform``, and where there is no such file
the flags are unknown (``None``). Torch-free; reading the CPU never raises.

Threads: ``ThreadSetting`` (``--threads N|auto``), ``choose_threads`` (``auto``: the cores free
at the start, from ``/proc/stat``'s runnable tasks) and ``apply_threads`` (torch's thread count and,
when sharing the machine, OpenMP threads that sleep instead of spinning).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SPEED_FLAGS: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")  # native bf16 matrix instructions


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name (``None`` when unknown) and which of ``SPEED_FLAGS`` it has (``None``: unknown)."""

    model: str | None
    flags: dict[str, bool] | None

    def has(self, flag: str) -> bool:
        return bool(self.flags and self.flags.get(flag))

    def to_dict(self) -> dict:
        return {"model": self.model, "flags": dict(self.flags) if self.flags is not None else None}


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor's model name and speed flags in the text of ``/proc/cpuinfo``.

    A text without any ``flags``/``Features`` line (empty, say) gives every flag False:
    the file was read and names none of them.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in fields:  # the first processor's entry wins
            fields[key] = value.strip()
    model = fields.get("model name") or None
    present = set((fields.get("flags") or fields.get("features") or "").split())
    return CpuInfo(model, {flag: flag in present for flag in SPEED_FLAGS})


def cpu_info(path: str | Path = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU: ``/proc/cpuinfo`` where there is one, else ``platform``'s name, flags unknown."""
    try:
        info = parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:
        info = CpuInfo(None, None)
    if info.model is None:
        info = CpuInfo(platform.processor() or platform.machine() or None, info.flags)
    return info


# --------------------------------------------------------------------------- threads

AUTO = "auto"
_applied: str | None = None  # how this process chose its torch threads (``threads_note``)


@dataclass(frozen=True)
class ThreadSetting:
    """``--threads``: a count of torch threads, or ``"auto"``: the cores free when the command starts.

    Why it matters: two torch processes that each run 2 threads on 2 cores stall each other (their
    OpenMP threads spin while waiting for a core): generating 64 prompts took 76 s in each of two such
    processes against 25 s with 1 thread each (AMD EPYC, bf16; docs/performance.md, "Sharing the machine").
    The thread count also decides how bf16 kernels round, so it is recorded with a run's device.
    """

    value: int | str

    def __post_init__(self) -> None:
        ok = self.value == AUTO or (isinstance(self.value, int) and not isinstance(self.value, bool)
                                    and self.value >= 1)
        if not ok:
            from xdetox.errors import XdetoxInputError

            raise XdetoxInputError(f"--threads must be a whole number of at least 1 or 'auto', got {self.value!r}")

    @classmethod
    def parse(cls, text: str) -> ThreadSetting:
        text = text.strip()
        return cls(int(text) if text.isdigit() else text)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 5, interval: float = 0.04, stat: str | Path = "/proc/stat") -> int:
    """Runnable tasks of other processes (``procs_running`` of ``/proc/stat`` less this one), the median
    of a few readings; 0 where the file cannot be read."""
    readings = []
    for i in range(samples):
        try:
            text = Path(stat).read_text()
        except OSError:
            return 0
        running = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("procs_running")), 1)
        readings.append(max(0, running - 1))
        if i + 1 < samples:
            time.sleep(interval)
    return sorted(readings)[len(readings) // 2]


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    passive: bool  # idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``)
    note: str


def choose_threads(setting: ThreadSetting, cores: int | None = None, busy: int | None = None) -> ThreadChoice:
    """A count is taken as given. ``auto``: every usable core when nothing else runs; otherwise the
    free ones (at least 1), with idle threads sleeping, so that this process does not slow the others."""
    if setting.value != AUTO:
        return ThreadChoice(int(setting.value), False, f"--threads {setting.value}")
    cores = usable_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    free = max(0, cores - busy)
    if free >= cores:
        return ThreadChoice(cores, False, f"auto: {cores} of {cores} cores free")
    return ThreadChoice(max(1, free), True, f"auto: {free} of {cores} cores free, idle threads sleep")


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's threads (and, before torch is first imported, OpenMP's wait policy) for this process
    and, through the environment, for the processes it starts (``bench``'s workers)."""
    global _applied
    if choice.passive and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    import torch

    torch.set_num_threads(choice.threads)
    _applied = choice.note


def threads_note() -> str | None:
    """How ``apply_threads`` chose this process's threads; None when it was not called."""
    return _applied
