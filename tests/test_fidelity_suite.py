"""Issue 15: the suite's own machinery (tier tagging, skips under CI) cannot pass by accident."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

_PROBE_TESTS = '''
import pytest

def test_skips_for_want_of_a_tool():
    pytest.skip("frobnicator is not installed")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_uses_the_tmux_project(project, request):
    assert project.socket and request.node.get_closest_marker("tmux") is not None
'''


@pytest.fixture
def project() -> str:
    """A module's own fixture that happens to be called `project` (no tmux in it)."""
    return "not the tmux project"


def test_a_test_with_its_own_project_fixture_is_not_tagged_tmux(
        project: str, request: pytest.FixtureRequest) -> None:
    assert project == "not the tmux project"
    assert request.node.get_closest_marker("tmux") is None


def _pytest(tmp_path: Path, *args: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(_PROBE_TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    # the repo's conftest as a plugin, on a file outside tests/ (no pyproject addopts)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args,
                           str(probe)], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=120)


def test_under_ci_an_unexpected_skip_fails(tmp_path: Path) -> None:
    """One run of a probe file under CI=true: its skip fails, its xfail stays an xfail, and its
    test on the conftest's tmux project is tagged tmux (and passes)."""
    in_ci = _pytest(tmp_path, ci="true")
    assert in_ci.returncode == 1, in_ci.stdout
    assert "1 failed, 1 passed, 1 xfailed" in in_ci.stdout, in_ci.stdout
    assert "skipped under CI=true" in in_ci.stdout and "frobnicator" in in_ci.stdout
