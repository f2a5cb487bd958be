"""What the CPU offers: its model name and the instruction-set flags that decide xdetox's speed.

``SPEED_FLAGS``: AVX2 (the vectorised baseline of PyTorch's CPU kernels), AVX-512F (wider
kernels), AVX512-BF16 and AMX (native bf16 matrix instructions: with them ``dtype = "auto"``
runs bf16 on the CPU, see ``models.resolve_dtype``). Read from ``/proc/cpuinfo`` on Linux
(``parse_cpuinfo``: the ``model name`` line, and the x86 ``flags`` or ARM ``Features`` line);
where it has no model name the name comes from ``platform``, and where there is no such file
the flags are unknown (``None``). Torch-free; never raises.
"""

from __future__ import annotations

import platform
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
