"""CLI overhead: `ops --version` imports nothing heavy, a command imports only its own module,
bare `ops` prints the help and succeeds (issue 14)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Project

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


def test_run_list_imports_only_what_listing_needs() -> None:
    code = ("from ops.cli.main import cli\n"
            "cli.get_command(None, 'run')\n")
    loaded = _modules_after(code)
    assert not {"pydantic", "ops.config.models", "ops.config.loader", "ops.services.submit",
                "ops.services.dryrun", "ops.services.fetch", "ops.services.housekeeping",
                "ops.report.diff", "ops.report.detail", "rich", "paramiko"} & loaded


def test_the_config_loader_imports_no_pydantic() -> None:
    assert not {"pydantic", "ops.config.models"} & _modules_after("import ops.config.loader")


def test_opening_a_host_imports_no_pydantic() -> None:
    """What every remote command imports before it talks to the host (bench_remote's CLI
    overhead line): the models come only with a config that is not in the cache."""
    code = ("from ops.cli.main import cli\ncli.get_command(None, 'run')\n"
            "import ops.services.target, ops.services.spec, ops.hosts.ssh\n")
    assert not {"pydantic", "ops.config.models", "paramiko"} & _modules_after(code)


def test_status_with_a_cached_config_imports_no_pydantic_and_no_report_reader(
        tmp_path: Path) -> None:
    """`ops run status --json` as a second process (the config in the cache): finding the
    host reads the config's dump, so neither pydantic nor the models nor the detail and
    report readers are imported (issue 14: about 0.2 s of every status call)."""
    path = tmp_path / "configs" / "ops" / "project.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"project": {"name": "demo"},
                                "hosts": {"far": {"address": "nobody@127.0.0.1:1"}}}))
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(path), "XDG_CACHE_HOME": str(tmp_path / "c")}
    code = ("from ops.cli.main import main\ntry:\n    main(['run', 'status', '--json'])\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n")
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, env=env, cwd=tmp_path).stdout for _ in range(2)]
    first, second = (set(json.loads(out.strip().splitlines()[-1])) for out in runs)
    assert '"runs": []' in runs[1]
    assert "pydantic" in first  # the first one validated
    assert not {"pydantic", "ops.config.models", "ops.report.detail", "ops.report.sources",
                "ops.cli.render_run", "rich"} & second


def test_a_warm_submit_imports_no_pydantic_and_launches_the_same_spec(
        project: Project) -> None:
    """`ops run submit --host local --json` twice as separate processes: the first validates
    the config and builds the spec with the models; the second finds both in the cache (the
    config's dump and the preset's spec template) and imports neither pydantic nor the models
    (issue 14). Both runs launch, and their spec.json differ only in the run's own fields."""
    code = ("from ops.cli.main import main\ntry:\n"
            "    main(['run', 'submit', 'toy', '--set', 'max_iters=3', '--host', 'local', "
            "'--json'])\n"
            "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n")
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(project.config_path)}
    specs, modules = [], []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             check=True, env=env, cwd=project.root).stdout
        answer, _, loaded = out.rstrip().rpartition("\n")
        modules.append(set(json.loads(loaded)))
        run_id = json.loads(answer)["run_id"]
        project.wait_for((project.run_dir(run_id) / "summary.json").exists)
        assert project.summary(run_id)["status"] == "completed"
        specs.append(json.loads((project.run_dir(run_id) / "spec.json").read_text()))
    assert {"pydantic", "ops.config.models"} <= modules[0]  # the cold one built the template
    assert not {"pydantic", "ops.config.models", "ops.config.overrides"} & modules[1]
    for spec in specs:  # the run's own fields, and what the runner adds at launch
        for block, key in ((spec, "run_id"), (spec, "created_at"), (spec, "code"),
                           (spec["secrets"], "store"), (spec, "seal"),
                           (spec["tmux"], "session")):
            block[key] = None
    assert specs[0] == specs[1] and specs[0]["overrides"] == {"max_iters": 3}


def test_a_cached_config_builds_no_validator(tmp_path: Path) -> None:
    """The second process finds the first one's validated config: it unpickles the models
    and lists them (`ops config show`) without building their core schema (the 0.1-0.2 s
    that pydantic spends on it)."""
    path = tmp_path / "configs" / "ops" / "project.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"project": {"name": "demo"}}))
    probe = (f"from pathlib import Path\nfrom ops.config.loader import load_config\n"
             f"loaded = load_config(Path({str(path)!r}))\n"
             "assert ('project.name', 'demo', 'project.json') in loaded.provenance()\n"
             "print(type(loaded.config).__pydantic_complete__, loaded.config.project.name)\n")
    answers = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              check=True).stdout.split() for _ in range(2)]
    assert answers == [["True", "demo"], ["False", "demo"]]


def test_copies_of_service_constants_match_their_source() -> None:
    """The command modules name the choices of --scope and --section themselves, so that
    building the commands does not import the services."""
    from ops.cli import housekeeping_cmds, run_cmds
    from ops.report import diff
    from ops.services import housekeeping

    assert housekeeping_cmds.SCOPES == housekeeping.SCOPES
    assert run_cmds.DIFF_SECTIONS == diff.SECTIONS


def test_ops_config_exports_every_name_lazily() -> None:
    import ops.config

    assert sorted(ops.config.__all__) == sorted(ops.config._MODULE_OF)
    for name in ops.config.__all__:
        assert getattr(ops.config, name) is not None


RUNS = [
    {"run_id": "a-1", "status": "completed", "preset": "smoke", "elapsed_s": 8.2,
     "created_at": "2026-11-30T01:04:23.098Z", "tmux_alive": False},
    {"run_id": "wide-日本語-\x1b[31mx", "status": "queued", "slurm": {"reason": "Resources"},
     "preset": "p" * 90, "slurm_job_id": 12, "headline": {"metric": "loss", "value": 1.5}},
    {"run_id": "b" * 130, "status": "failed", "preset": None, "created_at": "bogus"},
]


def test_a_piped_run_table_is_rich_text_without_rich() -> None:
    """Piped, `ops ps` / `ops run list` print the table rich would print, without its import."""
    from rich.console import Console

    from ops.cli import render

    code = ("import json, sys\nfrom ops.cli import render\n"
            f"render.show_runs(json.loads({json.dumps(RUNS)!r}), 'none')\n"
            "sys.stdout.flush()\n")
    proc = subprocess.run([sys.executable, "-c", code + "print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")})
    table, _, modules = proc.stdout.rpartition("\n[")
    assert "rich" not in json.loads("[" + modules)
    drawn = io.StringIO()
    Console(file=drawn, highlight=False, markup=False, emoji=False, soft_wrap=True).print(
        render.styled_table(render.run_rows(RUNS), render.RUN_HEADERS))
    assert table + "\n" == drawn.getvalue()
