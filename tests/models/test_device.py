"""Peak RSS of a process is its own, not its parent's (Linux carries ``ru_maxrss`` across exec)."""

import subprocess
import sys
from pathlib import Path

import pytest

from grpokit.models.device import peak_rss_mb


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc")
def test_a_child_does_not_report_its_larger_parents_peak():
    ballast = b"x" * (512 * 2**20)  # touched pages: this process's peak grows by 512 MiB
    parent_peak = peak_rss_mb()
    child = subprocess.run(
        [sys.executable, "-c", "from grpokit.models.device import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    del ballast
    child_peak = float(child.stdout.strip())
    # The child imports torch (a few hundred MiB) but never holds the parent's 512 MiB ballast.
    assert child_peak < parent_peak - 256, (child_peak, parent_peak)
