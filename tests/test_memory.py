"""Reuse of freed memory between batches (glibc's malloc settings, restored on exit)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from repurpose import ModelHandler, _memory
from repurpose._memory import reuse_freed_memory

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(_memory._glibc() is None, reason="needs glibc's malloc (Linux)")

# A fresh interpreter (its main thread allocates from glibc's main arena, as a user's
# script does) extracts 8 batches whose convolution output is 64 MiB each: above any
# threshold at which glibc maps a block on its own.
SCRIPT = textwrap.dedent("""
    import resource, numpy as np, torch
    from torch import nn
    from repurpose import ModelHandler
    torch.set_num_threads(1)
    h = ModelHandler(nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU()))
    x = np.random.default_rng(0).random((128, 3, 128, 128), dtype=np.float32)
    h.extract(x[:16], ["1"], batch_size=16, progress=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    h.extract(x, ["1"], batch_size=16, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    block = 64 * 2**20 // 4
    torch.ones(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(block)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")
PAGES = 64 * 2**20 // 4096  # pages of one 64 MiB block


def run_script(reuse: bool) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "REPURPOSE_REUSE_MEMORY": "1" if reuse else "0"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [int(v) for v in out.split()]


@glibc
def test_extraction_reuses_freed_memory_then_restores_the_defaults() -> None:
    reused, after = run_script(reuse=True)
    mapped, _ = run_script(reuse=False)
    # without reuse every batch maps its blocks anew (8 x 2 blocks of 64 MiB at least)
    assert mapped > 8 * PAGES, mapped
    # with it the first batches map them and the rest reuse them
    assert reused < mapped / 2, (reused, mapped)
    # afterwards glibc maps a large block anew each time again (memory went back)
    assert after > PAGES // 2, after


class FakeLibc:
    """Records the calls :func:`reuse_freed_memory` makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_nested_uses_keep_the_setting_until_the_last_leaves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(_memory, "_glibc", lambda: libc)
    monkeypatch.delenv("REPURPOSE_REUSE_MEMORY", raising=False)
    with reuse_freed_memory() as outer:
        with reuse_freed_memory() as inner:
            assert outer and inner
            assert libc.calls == [("mallopt", -4, 0), ("mallopt", -1, 2**31 - 1)]
        assert len(libc.calls) == 2  # the inner exit restores nothing
    assert libc.calls[2:] == [("mallopt", -4, 65536), ("mallopt", -1, 128 * 1024),
                              ("malloc_trim", 0)]


def test_defaults_are_restored_when_the_block_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(_memory, "_glibc", lambda: libc)
    monkeypatch.delenv("REPURPOSE_REUSE_MEMORY", raising=False)
    with pytest.raises(KeyError), reuse_freed_memory():
        raise KeyError("x")
    assert libc.calls[-1] == ("malloc_trim", 0)
    assert _memory._depth == 0


@pytest.mark.parametrize("value", ["0", "off", "False"])
def test_turned_off_by_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(_memory, "_glibc", lambda: libc)
    monkeypatch.setenv("REPURPOSE_REUSE_MEMORY", value)
    with reuse_freed_memory() as active:
        assert not active
    assert libc.calls == []


@pytest.mark.skipif(platform.system() == "Linux", reason="checks other systems")
def test_does_nothing_off_glibc() -> None:
    with reuse_freed_memory() as active:
        assert not active


def test_extraction_leaves_no_setting_behind() -> None:
    h = ModelHandler(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    assert h.extract(x, ["1"], batch_size=2, progress=False)["1"].shape == (5, 2)
    assert _memory._depth == 0
