"""Smoke test of benchmarks/bench_mxnet.py --quick."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_mxnet.py"


def test_quick_benchmark_prints_json() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--no-mxnet", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout)
    assert result["quick"] is True and result["params_load_s"] > 0
    assert result["images_per_s"] > 0 and "skipped" in result["mxnet"]
