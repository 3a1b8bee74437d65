"""What machine a figure was measured on: every benchmark JSON and ``demo.json`` record it beside their numbers
(absolute times are a property of the host)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_name", "host_info"]


def cpu_name() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo, as ``lscpu`` prints it), else ``platform.processor()``,
    else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_info() -> dict[str, object]:
    """``{"cpu", "cores", "torch_threads"}``: the CPU model, the cores this process may use and torch's threads."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    return {"cpu": cpu_name(), "cores": cores, "torch_threads": torch.get_num_threads()}
