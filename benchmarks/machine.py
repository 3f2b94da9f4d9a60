"""What the benchmarks record about the machine they ran on."""

from __future__ import annotations

import platform
import sys
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError as error:
        print(f"could not read /proc/cpuinfo: {error}", file=sys.stderr)
    return platform.processor() or "unknown"
