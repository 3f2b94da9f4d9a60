"""benchmarks/gpu_check.py's CPU dry run: tiny shapes, every part of the script, its result files (so that the
GPU check cannot rot where there is no GPU). Without TRL its entries say so: never a number."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_dry_run_writes_results_and_summary(tmp_path):
    out = tmp_path / "gpu-check"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dry-run", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    assert report["dry_run"] and report["finished"] and "Dry run" in summary
    assert report["environment"]["device"] == "cpu"

    tests = report["tests"]  # the GPU tests ran, and without CUDA every one of them was skipped
    assert tests["counts"]["skipped"] >= 8 and tests["counts"]["failed"] == tests["counts"]["error"] == 0
    assert all("CUDA" in t["message"] for t in tests["tests"] if t["outcome"] == "skipped")

    [entry] = report["comparison"]
    grpokit = entry["grpokit"]
    assert grpokit["status"] == "ok", grpokit.get("error")
    assert grpokit["step_s"] > 0 and grpokit["generation_tokens_per_s"] > 0 and grpokit["peak_rss_mb"] > 0
    assert grpokit["steps_measured"] == 1 and grpokit["parameters"] > 0
    has_trl = importlib.util.find_spec("trl") is not None
    if has_trl:
        assert entry["trl"]["status"] == "ok", entry["trl"].get("error")
        assert entry["ratio_grpokit_over_trl"]["step_s"] > 0
    else:
        assert entry["trl"] == {"status": "skipped", "reason": "trl not installed"}
        assert set(entry["ratio_grpokit_over_trl"].values()) == {None}
        assert report["capacity"]["full"]["trl"]["reason"] == "trl not installed"
        assert "trl not installed" in summary

    capacity = report["capacity"]
    assert capacity["ladder"] == ["tiny-a", "tiny-b"]
    for mode in ("full", "lora"):
        found = capacity[mode]["grpokit"]
        assert found["complete"] and found["largest_fitting"] == "tiny-b" and found["smallest_not_fitting"] is None
        assert found["attempts"] and all(a["status"] == "ok" for a in found["attempts"])
    # Both searches start from the comparison's fit (tiny-a); LoRA trains only its adapters.
    assert capacity["full"]["grpokit"]["known_before"]["fits"] == "tiny-a"
    full, lora = capacity["full"]["grpokit"]["attempts"][-1], capacity["lora"]["grpokit"]["attempts"][-1]
    assert full["trainable_parameters"] == full["parameters"] > lora["trainable_parameters"] > 0
