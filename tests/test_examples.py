"""Smoke tests: every example runs with REPURPOSE_SMOKE=1, every benchmark with --quick.

Each script runs as a subprocess from the repository root, as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
TIMEOUT = 600  # seconds; generous because CI machines are shared


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    # One thread: smoke-sized work runs fastest that way, and CI machines are shared.
    env = {**os.environ, "REPURPOSE_SMOKE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path) -> None:
    result = _run([str(script.relative_to(ROOT))])
    assert result.returncode == 0, f"{script.name} failed:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_quick_prints_json(script: Path) -> None:
    result = _run([str(script.relative_to(ROOT)), "--quick"])
    assert result.returncode == 0, f"{script.name} failed:\n{result.stderr[-3000:]}"
    out = result.stdout.strip()
    assert out, f"{script.name} printed nothing"
    try:
        json.loads(out)
    except json.JSONDecodeError:  # also accept one JSON document per line
        for line in out.splitlines():
            if line.strip():
                json.loads(line)


def test_transfer_benchmark_runs_on_a_target_far_from_imagenet() -> None:
    result = _run(["benchmarks/bench_transfer.py", "--quick", "--target", "digits",
                   "--only", "features", "--recipes", "lr fire9,head2toe", "--test-rest",
                   "--pool-folds", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["target"].startswith("scikit-learn digits")
    assert (report["n_train"], report["n_test"]) == (60, 30)
    assert {r["recipe"] for r in report["rows"]} == {"lr fire9", "head2toe"}
    # --test-rest: at K = 2 of 6 per digit, the 4 not drawn join the 3 test images per digit;
    # --pool-folds: at K = all, all 9 per digit are tested once, out of fold
    assert {(r["K"], r.get("n_test")) for r in report["rows"]} == {(2, 70), ("all", 90)}
    assert {c["n_test"] for c in report["comparisons"]} == {70, 90}
    assert all(r["accuracy"] > 0.2 for r in report["rows"])  # 10 classes: chance is 0.1


def test_transfer_benchmark_sweeps_wise_ft_from_one_fine_tuning_run() -> None:
    result = _run(["benchmarks/bench_transfer.py", "--quick", "--only", "finetune",
                   "--finetune", "lp-ft head", "--wise-alphas", "0,0.5,1", "--drop9-off"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["recipe"]: r for r in json.loads(result.stdout)["rows"]}
    name = "lp-ft head, drop9 off"
    assert set(rows) == {name, f"{name} wise0", f"{name} wise0.5", f"{name} wise1"}
    assert rows[f"{name} wise0.5"]["settings"]["wise_alpha"] == 0.5
    # a = 1 is the fine-tuned network itself
    assert rows[f"{name} wise1"]["nll"] == rows[name]["nll"]
