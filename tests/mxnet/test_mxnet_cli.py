"""`repurpose convert mxnet` and `repurpose verify mxnet`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from mx_helpers import FIXTURES

import repurpose as rp
from repurpose.cli import cli
from repurpose.mxnet._verify import mxnet_version

SYM, PARAMS = str(FIXTURES / "resnet-symbol.json"), str(FIXTURES / "resnet-0000.params")
MXNET_PYTHON = Path(__file__).resolve().parents[2] / ".venv-mxnet" / "bin" / "python"


def test_convert_writes_a_loadable_model(tmp_path) -> None:
    out = tmp_path / "model"
    result = CliRunner().invoke(cli, ["convert", "mxnet", SYM, PARAMS, "-o", str(out),
                                      "--input-shape", "3,16,16"])
    assert result.exit_code == 0, result.output
    assert "26 layers" in result.output
    handler = rp.ModelHandler.load(out)
    assert "_plus2" in handler.layer_names and handler.input_shape == (3, 16, 16)
    again = CliRunner().invoke(cli, ["convert", "mxnet", SYM, PARAMS, "-o", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_convert_reports_bad_files_in_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"\x00" * 10)
    result = CliRunner().invoke(cli, ["convert", "mxnet", SYM, str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "not an MXNet .params file" in result.output
    assert not (tmp_path / "o").exists()


# tests/mxnet/ itself is a folder called "mxnet" on sys.path: it must not pass for mxnet.
HAS_MXNET = mxnet_version() is not None


@pytest.mark.skipif(HAS_MXNET, reason="a real mxnet is importable here")
@pytest.mark.parametrize("fake", [None, "folder", "package"])
def test_verify_says_clearly_when_mxnet_is_missing(fake, tmp_path, monkeypatch) -> None:
    if fake is not None:  # a folder called mxnet (no __init__.py), or a package without mxnet
        (tmp_path / "mxnet").mkdir()
        if fake == "package":
            (tmp_path / "mxnet" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path))
    result = CliRunner().invoke(cli, ["verify", "mxnet", SYM, PARAMS])
    assert result.exit_code == 2
    assert "mxnet is not importable" in result.output and "--mxnet-python" in result.output


def test_mxnet_version_imports_the_package_in_a_fresh_python(tmp_path, monkeypatch) -> None:
    (tmp_path / "mxnet").mkdir()
    assert mxnet_version(tmp_path / "no-such-python") is None
    (tmp_path / "mxnet" / "__init__.py").write_text("__version__ = '1.9.1'\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # seen by the fresh interpreter
    monkeypatch.syspath_prepend(str(tmp_path))
    assert mxnet_version() == "1.9.1"
    (tmp_path / "mxnet" / "__init__.py").write_text("raise ImportError('libmxnet.so')\n")
    assert mxnet_version() is None


def test_verify_against_recorded_outputs() -> None:
    result = CliRunner().invoke(cli, ["verify", "mxnet", SYM, PARAMS, "--reference",
                                      str(FIXTURES / "resnet-io.npz")])
    assert result.exit_code == 0, result.output
    assert "_plus2" in result.output and "26 values compared, 0 outside tolerance: OK" \
        in result.output


def test_verify_exits_1_on_mismatch() -> None:
    result = CliRunner().invoke(cli, ["verify", "mxnet", SYM, PARAMS, "--reference",
                                      str(FIXTURES / "resnet-io.npz"), "--rtol", "0",
                                      "--atol", "0"])
    assert result.exit_code == 1 and "MISMATCH" in result.output


def test_verify_with_a_missing_mxnet_python(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["verify", "mxnet", SYM, PARAMS, "--mxnet-python",
                                      str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.skipif(not MXNET_PYTHON.exists(), reason="no .venv-mxnet (make mxnet-fixtures)")
def test_verify_against_live_mxnet() -> None:
    result = CliRunner().invoke(cli, ["verify", "mxnet", SYM, PARAMS, "--mxnet-python",
                                      str(MXNET_PYTHON), "--input-shape", "3,16,16"])
    assert result.exit_code == 0, result.output
    assert "mxnet 1.9.1" in result.output
