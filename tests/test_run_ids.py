"""Run ids that are easy to type: a unique prefix, @last and -N, shell completion, and
`ops validate` with a run id; ids from the host are never used as paths unless valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import click
import pytest
from click.testing import CliRunner

from ops.cli.main import main
from ops.cli.run_args import RunIdCommand
from ops.errors import NotFoundError, UsageError
from ops.services import resolve
from runner import contract

from . import test_remote_runs
from .conftest import REPO, Project
from .report_runs import FakeRun, write_run

IDS = ["beta-2", "beta-1", "alpha-1"]  # newest first
remote_pod = test_remote_runs.pod  # the pod fixture (this machine through sshd), by name


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("alpha-1", "alpha-1", id="exact"),
    pytest.param("alp", "alpha-1", id="unique-prefix"),
    pytest.param("beta-1", "beta-1", id="exact-that-is-also-a-prefix-of-nothing-else"),
    pytest.param("@last", "beta-2", id="at-last"),
    pytest.param("@1", "beta-2", id="minus-1-as-passed-on"),
    pytest.param("-2", "beta-1", id="minus-2"),
    pytest.param("gamma", None, id="no-match-is-passed-on"),
])
def test_match(text: str, expected: str | None) -> None:
    assert resolve.match(text, IDS) == expected


@pytest.mark.parametrize(("text", "error", "words"), [
    pytest.param("beta", resolve.AmbiguousRunError, ["2 runs", "beta-2", "beta-1"],
                 id="ambiguous-lists-candidates"),
    pytest.param("", UsageError, ["invalid run id"], id="empty"),
    pytest.param("../x", UsageError, ["invalid run id"], id="dot-dot-slash"),
    pytest.param("-4", NotFoundError, ["-4", "only 3 runs"], id="past-the-oldest"),
    pytest.param("@9", NotFoundError, ["-9", "only 3 runs"], id="spelled-as-typed"),
])
def test_match_refuses(text: str, error: type[Exception], words: list[str]) -> None:
    with pytest.raises(error) as caught:
        resolve.match(text, IDS)
    rendered = caught.value.render()  # type: ignore[attr-defined]
    assert all(w in rendered for w in words), rendered


def test_an_ambiguous_prefix_shows_ten_candidates_and_counts_the_rest() -> None:
    ids = [f"run-{i:02d}" for i in range(14)]
    with pytest.raises(resolve.AmbiguousRunError) as caught:
        resolve.match("run", ids)
    assert caught.value.exit_code == 2
    assert caught.value.details[:10] == ids[:10] and caught.value.details[10] == "... and 4 more"


def test_ids_from_the_host_are_used_only_when_valid() -> None:
    hostile = [{"run_id": n} for n in ("../etc", "a/b", ".hidden", "x\n", "..", "ok-1")]
    assert resolve.usable_ids(hostile) == ["ok-1"]
    assert resolve.match("@last", resolve.usable_ids(hostile)) == "ok-1"


def test_newest_first_keeps_a_sweep_together_in_its_order() -> None:
    found = [
        {"run_id": "old", "created_at": "2026-01-01T00:00:00.000Z"},
        {"run_id": "m-b", "created_at": "2026-01-02T00:00:00.000Z", "sweep_id": "s",
         "sweep_index": 1},
        {"run_id": "m-a", "created_at": "2026-01-02T00:00:00.000Z", "sweep_id": "s",
         "sweep_index": 0},
        {"run_id": "broken", "status": "invalid"},
        {"run_id": "new", "created_at": "2026-01-03T00:00:00.000Z"},
    ]
    assert [r["run_id"] for r in resolve.newest_first(found)] == \
        ["new", "m-a", "m-b", "old", "broken"]


def test_minus_n_is_a_run_not_an_option() -> None:
    @click.command(cls=RunIdCommand)
    @click.argument("run_id")
    @click.option("-n", "--lines", type=int, default=None)
    def show(run_id: str, lines: int | None) -> None:
        click.echo(f"{run_id} {lines}")

    assert CliRunner().invoke(show, ["-2", "-n", "5"]).output == "@2 5\n"
    assert CliRunner().invoke(show, ["-x"]).exit_code == 2  # a real unknown option still is


# -- through the command line, on synthetic run dirs of the local host ------------------------


def _runs(project: Project) -> None:
    for n, run_id in enumerate(reversed(IDS)):
        run_dir = write_run(project.runs, FakeRun(run_id, preset="toy",
                                                  metrics_best={"loss": 0.5}))
        spec = json.loads((run_dir / contract.SPEC).read_text())
        spec["created_at"] = f"2026-01-0{n + 1}T00:00:00.000Z"
        contract.atomic_write_json(run_dir / contract.SPEC, spec)


OpsCall = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ops_cli(project: Project, capsys: pytest.CaptureFixture[str],
            monkeypatch: pytest.MonkeyPatch) -> OpsCall:
    """`ops ARGS...` in this process, on the project: (exit code, stdout, stderr)."""
    monkeypatch.setenv("OPS_PROJECT_CONFIG", str(project.config_path))
    monkeypatch.chdir(project.root)
    _runs(project)

    def call(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        out, err = capsys.readouterr()
        return int(done.value.code or 0), out, err
    return call


@pytest.mark.parametrize(("args", "code", "shown"), [
    pytest.param(["run", "status", "alpha-1"], 0, "run            alpha-1", id="full-id"),
    pytest.param(["run", "status", "alp"], 0, "run            alpha-1", id="prefix"),
    pytest.param(["run", "status", "@last"], 0, "run            beta-2", id="at-last"),
    pytest.param(["run", "status", "-1"], 0, "run            beta-2", id="minus-1"),
    pytest.param(["run", "status", "-2"], 0, "run            beta-1", id="minus-2"),
    pytest.param(["run", "status", "beta"], 2, "'beta' is the start of 2 runs", id="ambiguous"),
    pytest.param(["run", "status", "-7"], 3, "-7: there are only 3 runs", id="too-far"),
    pytest.param(["run", "status", "gamma"], 3, "no run 'gamma'", id="unknown"),
    pytest.param(["run", "status", "../x"], 2, "invalid run id", id="path-like"),
    pytest.param(["run", "tail", "@last", "-n", "1"], 0, "line 29", id="tail-at-last"),
    pytest.param(["run", "diff", "alp", "-1", "--json"], 0, '"run_id": "beta-2"',
                 id="diff-prefix-and-minus-1"),
    pytest.param(["run", "fetch", "-2", "--json"], 0, '"run_id": "beta-1"', id="fetch-minus-2"),
    pytest.param(["validate", "-1"], None, "beta-2", id="validate-minus-1"),
    pytest.param(["validate", "alp", "--json"], None, "alpha-1", id="validate-prefix"),
    pytest.param(["validate", "nothing"], 3, "no run 'nothing'", id="validate-unknown"),
])
def test_run_ids_on_the_command_line(ops_cli: OpsCall, args: list[str], code: int | None,
                                     shown: str) -> None:
    exit_code, out, err = ops_cli(*args)
    if code is None:
        assert exit_code in (0, 1), err  # validated (clean or with violations), not refused
    else:
        assert exit_code == code, (out, err)
    assert shown in out + err, (out, err)
    assert "Traceback" not in err


def test_validate_says_the_outputs_root_is_not_a_run_directory(project: Project,
                                                               ops_cli: OpsCall) -> None:
    exit_code, _, err = ops_cli("validate", str(project.runs))
    assert exit_code == 2
    assert "not a run directory" in err and "it holds 3 run directories" in err


# -- shell completion, asked the way bash asks ------------------------------------------------


def _complete(project: Project, line: str) -> list[str]:
    env = {**os.environ, "OPS_PROJECT_CONFIG": str(project.config_path),
           "_OPS_COMPLETE": "bash_complete", "COMP_WORDS": line,
           "COMP_CWORD": str(len(line.split(" ")) - 1), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "ops"], env=env, cwd=project.root,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [item.split(",", 1)[1] for item in done.stdout.splitlines() if item]


COMPLETIONS: list[Any] = [
    pytest.param("ops p", {"pod", "preflight", "ps"}, id="commands"),
    pytest.param("ops run status b", ["beta-2", "beta-1"], id="run-ids-newest-first"),
    pytest.param("ops run tail a", ["alpha-1"], id="run-id-prefix"),
    pytest.param("ops validate ", IDS, id="validate-run-ids"),
    pytest.param("ops run submit -p to", ["toy"], id="preset-option"),
    pytest.param("ops run submit sl", ["slow", "slowpair"], id="preset-positional"),
    pytest.param("ops run list --host ", ["local"], id="hosts"),
    pytest.param("ops ps --preset p", ["pair", "printer"], id="ps-preset-filter"),
]


@pytest.mark.parametrize(("line", "expected"), COMPLETIONS)
def test_completion(project: Project, line: str, expected: Any) -> None:
    _runs(project)
    found = _complete(project, line)
    assert (set(found) if isinstance(expected, set) else found) == expected


def test_completion_of_a_broken_config_offers_nothing(project: Project) -> None:
    project.config_path.write_text("{not json")
    assert _complete(project, "ops run status ") == []
    assert _complete(project, "ops run submit ") == []


def test_the_install_line_prints_a_bash_script(project: Project) -> None:
    env = {**os.environ, "_OPS_COMPLETE": "bash_source", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "ops"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and "complete -o nosort -F _ops_completion ops" in done.stdout


def test_a_fetched_copy_by_prefix_and_at_last(ops_cli: OpsCall) -> None:
    assert ops_cli("run", "fetch", "alpha-1")[0] == 0
    code, out, err = ops_cli("run", "status", "alp", "--fetched", "--json")
    assert code == 0, err
    assert json.loads(out)["runs"][0]["run_id"] == "alpha-1"
    code, out, _ = ops_cli("run", "status", "@last", "--fetched")  # the only fetched copy
    assert code == 0 and "alpha-1" in out
    assert ops_cli("run", "status", "beta", "--fetched")[0] == 3  # not fetched: not found


@pytest.mark.ssh
def test_prefixes_and_at_last_over_ssh(remote_pod: Project) -> None:
    """The same names resolved by the pod's runner through a real sshd (one listing each)."""
    pod = remote_pod
    _runs(pod)  # pod.runs is the pod's outputs root (this machine, reached through sshd)
    shown = pod.ops("run", "status", "alp")
    assert shown.exit_code == 0, shown.stderr
    assert "run            alpha-1" in shown.stdout
    assert "run            beta-2" in pod.ops("run", "status", "-1").stdout
    ambiguous = pod.ops("run", "status", "beta")
    assert ambiguous.exit_code == 2 and "beta-2" in ambiguous.stderr
    assert _complete(pod, "ops run tail b") == ["beta-2", "beta-1"]


class _NoRoundTrips:
    """A host that fails the test when asked anything."""

    name = "nowhere"

    def exec(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a round trip was made: {args}")

    def runner_argv(self) -> list[str]:
        raise AssertionError("a round trip was about to be made")


def test_a_whole_id_as_ops_makes_them_costs_no_round_trip() -> None:
    from ops.services.runs import Target
    from ops.services.spec import HostPaths

    paths = HostPaths("/nonexistent/runs", "/nonexistent/home")
    target = Target(_NoRoundTrips(), paths)  # type: ignore[arg-type]
    whole = "toy-20260101T000000-ab12"
    assert resolve.resolve(target, whole) == whole
    with pytest.raises(AssertionError, match="round trip"):
        resolve.resolve(target, "toy-2026")  # a prefix needs the listing
