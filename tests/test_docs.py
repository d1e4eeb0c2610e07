"""Every ```python block of README.md and docs/*.md runs, file by file, in order.

Each file's blocks run in one namespace in a fresh Python process, in a scratch copy of
the repository root (its entries symlinked, so relative paths such as ``examples/...``
and ``../shared/realdata/...`` resolve and files the snippets write land in the scratch
directory). A block whose first line is ``# docs: not run`` is skipped: only for shell-like
pseudo code that cannot run; prefer runnable snippets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = "# docs: not run"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
RUNNER = """
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for i, (line, code) in enumerate(blocks):
    try:
        exec(compile(code, f"{sys.argv[1]}:{line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"block {i + 1} (line {line}) of {sys.argv[1]} failed")
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` for every runnable block."""
    out = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        if code.lstrip().startswith(SKIP):
            continue
        out.append((text.count("\n", 0, match.start(1)) + 1, code))
    return out


def test_blocks_are_found_and_the_skip_marker_works():
    text = "a\n```python\nx = 1\n```\n```python\n# docs: not run\n$ shell\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n")]
    assert any(python_blocks(p.read_text()) for p in PAGES)


def _scratch_root(tmp: Path) -> Path:
    """A directory that looks like the repository root, beside a ``shared`` link."""
    root = tmp / "repo"
    root.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (root / entry.name).symlink_to(entry)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp / "shared").symlink_to(shared)
    return root


def _params() -> list:
    return [pytest.param(p, id=p.relative_to(ROOT).as_posix()) for p in PAGES]


@pytest.mark.realdata
@pytest.mark.parametrize("page", _params())
def test_page_snippets_run(page, tmp_path):
    blocks = python_blocks(page.read_text())
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg",
           "REPURPOSE_SMOKE": os.environ.get("REPURPOSE_SMOKE", "")}
    proc = subprocess.run([sys.executable, "-c", RUNNER, page.name], input=json.dumps(blocks),
                          capture_output=True, text=True, cwd=_scratch_root(tmp_path), env=env,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
