"""Issue 15 on the runner side: usage errors as JSON, and the GPU memory limit with a
stand-in for NVML (pynvml is an external library a test cannot otherwise drive)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.parametrize(("argv", "words"), [
    (["status"], "the following arguments are required: root"),
    (["tail", "/nowhere", "--offset", "abc"], "argument --offset: invalid int value: 'abc'"),
    (["no-such-verb"], "invalid choice: 'no-such-verb'"),
])
def test_usage_errors_are_the_json_error_document(argv: list[str], words: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", *argv], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr == ""
    error = json.loads(proc.stdout)["error"]
    assert error["kind"] == "usage" and words in error["message"]
