"""Settings for the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the pretrained demo CNN (and anything else cached) out of the user's cache dir.

    One directory for the session, so the CNN is trained once and shared, also by the
    example scripts that tests run in subprocesses (they inherit the environment).
    """
    old = os.environ.get("REPURPOSE_CACHE_DIR")
    os.environ["REPURPOSE_CACHE_DIR"] = str(tmp_path_factory.mktemp("repurpose-cache"))
    yield
    if old is None:
        os.environ.pop("REPURPOSE_CACHE_DIR", None)
    else:
        os.environ["REPURPOSE_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny test models run faster and more reproducibly on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _realdata_dir() -> Path:
    """``../shared/realdata`` beside the checkout (``REPURPOSE_REALDATA`` overrides it)."""
    env = os.environ.get("REPURPOSE_REALDATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


REALDATA = _realdata_dir()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``realdata`` skip, saying why, only where the real material is absent."""
    if REALDATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real material not found at {REALDATA} (../shared/realdata)")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real networks and photos (see its README)."""
    return REALDATA
