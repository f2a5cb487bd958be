"""The environment a run's results depend on: library versions, device, dtype, the linear layers'
kernel (``environment``)."""

from __future__ import annotations

import platform

from xdetox.machine import cpu_info, threads_note


def environment() -> dict[str, str]:
    """Library versions and device: results are promised identical only when these match."""
    import importlib.metadata as md

    import torch

    from xdetox import models, prepack

    versions = {"python": platform.python_version()}
    for pkg in ("xdetox", "torch", "transformers", "peft", "trl", "scikit-learn"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "absent"
    dev = models.device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(0)
    else:  # the CPU model and whether it computes in bf16: timings and samples depend on both
        chosen = threads_note()
        threads = f"{torch.get_num_threads()} threads" + (f" ({chosen})" if chosen else "")
        name = f"{cpu_info().model or ''}; {threads}; {models.cpu_bf16_note()}"
    dtype = models.resolve_dtype("auto")
    linear = prepack.description(dtype) if dev.type == "cpu" else "F.linear"
    return {"versions": versions, "device": f"{dev.type} ({name})",
            "dtype": str(dtype).removeprefix("torch."), "linear": linear}

