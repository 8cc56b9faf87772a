"""The env snapshot's torch entry: a CPU build is read from torch/version.py without starting an
interpreter that imports torch; a CUDA or ROCm build (or a file that does not read as a build's)
is still probed by import, in a child interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner import snapshots

CPU = ('__version__ = "2.13.0+cpu"\ndebug = False\ncuda: Optional[str] = None\n'
       'hip: Optional[str] = None\n')


def _version_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "version.py"
    path.write_text(text)
    return path


def test_a_cpu_build_is_read_from_its_version_file(tmp_path: Path) -> None:
    assert snapshots.cpu_torch_info(_version_file(tmp_path, CPU)) == {
        "version": "2.13.0+cpu", "cuda": None, "cudnn": None, "cuda_available": False}


@pytest.mark.parametrize("text", [
    CPU.replace("cuda: Optional[str] = None", "cuda: Optional[str] = '12.1'"),
    CPU.replace("hip: Optional[str] = None", "hip: Optional[str] = '6.0.3'"),
    CPU.replace("cuda: Optional[str] = None\n", ""),  # no cuda line: not a build we know
    CPU.replace('"2.13.0+cpu"', "get_version()"),  # not a literal
    "",
])
def test_anything_but_a_plain_cpu_build_is_left_to_the_probe(tmp_path: Path, text: str) -> None:
    assert snapshots.cpu_torch_info(_version_file(tmp_path, text)) is None


def test_the_installed_cpu_torch_is_described_without_importing_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")  # the training extra; the suite's venv has it

    def no_interpreter(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("started an interpreter to import torch")

    monkeypatch.setattr(subprocess, "run", no_interpreter)
    info = snapshots.torch_info(sys.executable)
    assert info is not None and info["version"].endswith("+cpu")
    assert info["cuda"] is None and info["cuda_available"] is False
    monkeypatch.undo()
    probed = subprocess.run([sys.executable, "-c", snapshots._TORCH_PROBE], capture_output=True,
                            text=True, check=True)  # what importing torch says of itself
    assert json.loads(probed.stdout.strip().splitlines()[-1]) == info
