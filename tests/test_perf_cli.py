"""CLI overhead: `ops --version` imports nothing heavy, a command imports only its own module,
bare `ops` prints the help and succeeds (issue 14)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("click", "pydantic", "paramiko", "psutil", "ops.config.models", "ops.cli.report_cmds")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (which must not exit)."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_version_answers_without_click_or_any_command() -> None:
    code = ("import sys\nfrom ops.cli import main as m\n"
            "try:\n    m.main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n")
    loaded = _modules_after(code)
    assert not [name for name in HEAVY if name in loaded]


def test_version_output() -> None:
    proc = subprocess.run([sys.executable, "-m", "ops", "--version"], capture_output=True,
                          text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, "ops, version 0.1.0\n")


def test_a_command_loads_only_its_own_module() -> None:
    code = ("from ops.cli.main import cli\n"
            "cli.get_command(None, 'validate')\n")
    loaded = _modules_after(code)
    assert "ops.cli.validate_cmd" in loaded
    assert not {"ops.cli.report_cmds", "ops.cli.pod_cmds", "ops.cli.run_cmds",
                "paramiko"} & loaded


@pytest.mark.parametrize("argv", [[], ["--help"]], ids=["bare", "help"])
def test_bare_ops_prints_every_command_and_succeeds(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "ops", *argv], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0
    for name in ("run", "pod", "report", "validate", "config", "init"):
        assert f"  {name} " in proc.stdout


def test_unknown_command_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "ops", "bogus"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 2
    assert "No such command 'bogus'" in proc.stderr
