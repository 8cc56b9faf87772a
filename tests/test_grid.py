"""Grid sweeps from the command line: `--set key=a,b` makes one run per combination.

Unit tables for splitting values and expanding grids; CLI tables for what a grid refuses (exit
code and message, nothing created) and end-to-end runs on a real tmux server.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from ops.config.overrides import grid_of, parse_sets, split_values
from ops.errors import ConfigError
from runner.schemas import load_schema

from .conftest import Project


@pytest.mark.parametrize(("text", "values"), [
    pytest.param("0.1", ["0.1"], id="one-value"),
    pytest.param("", [""], id="empty-is-one-value"),
    pytest.param("0.01,0.1", ["0.01", "0.1"], id="two-values"),
    pytest.param('"a,b"', ["a,b"], id="json-string-keeps-comma"),
    pytest.param('"a,b",c', ["a,b", "c"], id="quoted-and-plain"),
    pytest.param('a"b', ['a"b'], id="quote-inside-is-literal"),
    pytest.param(r'"x\"y,z"', ['x"y,z'], id="escaped-quote"),
])
def test_split_values(text: str, values: list[str]) -> None:
    assert split_values(text) == values


@pytest.mark.parametrize(("sets", "fixed", "combos"), [
    pytest.param(["lr=0.1"], ["lr=0.1"], [{}], id="single-value-is-plain-override"),
    pytest.param(["lr=0.01,0.1", "max_iters=20,40"], [],
                 [{"lr": "0.01", "max_iters": "20"}, {"lr": "0.01", "max_iters": "40"},
                  {"lr": "0.1", "max_iters": "20"}, {"lr": "0.1", "max_iters": "40"}],
                 id="two-axes-first-slowest"),
    pytest.param(["sleep=0", "lr=1,2"], ["sleep=0"], [{"lr": "1"}, {"lr": "2"}],
                 id="plain-beside-axis"),
    pytest.param(["lr=1,2", "lr=3"], ["lr=3"], [{}], id="last-wins-axis-to-plain"),
    pytest.param(['name="a,b"', "lr=1,2"], ['name="a,b"'], [{"lr": "1"}, {"lr": "2"}],
                 id="quoted-comma-stays-plain"),
])
def test_grid_expansion(sets: list[str], fixed: list[str], combos: list[dict[str, str]]) -> None:
    grid = grid_of(sets)
    assert grid.fixed == fixed
    assert grid.combinations() == combos


def test_member_sets_round_trip_a_comma_value() -> None:
    grid = grid_of(['name="a,b",c'])
    sets = [grid.member_sets(combo) for combo in grid.combinations()]
    assert [parse_sets("p", {"name": ""}, s) for s in sets] == [{"name": "a,b"}, {"name": "c"}]


@pytest.mark.parametrize(("sets", "message"), [
    pytest.param(['name="a,b'], "a double quote is not closed", id="open-quote"),
    pytest.param(["a=" + ",".join(map(str, range(17))), "b=" + ",".join(map(str, range(17)))],
                 "grid of 289 runs", id="too-many"),
])
def test_grid_refusals(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        grid_of(sets)


def test_several_values_outside_a_grid_say_so() -> None:
    with pytest.raises(ConfigError, match="several values make a grid") as info:
        parse_sets("p", {"lr": 0.1}, ["lr=0.1,0.2"])
    assert info.value.hint and '"a,b"' in info.value.hint


# --- the CLI, on a real tmux server -------------------------------------------------------------

@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["-p", "toy", "--set", "max_iters=1,2", "--run-id", "x"], 2,
                 "--run-id names one run", id="grid-with-run-id"),
    pytest.param(["-p", "pair", "--set", "max_iters=1,2"], 2, "is a sweep already",
                 id="grid-of-a-sweep"),
    pytest.param(["-p", "toy", "--set", "max_iters=1,x"], 2, "expected an integer",
                 id="one-bad-value"),
    pytest.param(["-p", "toy", "--set", "nope=1,2"], 2, "has no override 'nope'",
                 id="unknown-key"),
    pytest.param(["-p", "toy", "--set", 'max_iters="1,2'], 2, "double quote is not closed",
                 id="open-quote"),
    pytest.param(["-p", "toy", "--set", "max_iters=1,2", "--dry-run"], 2,
                 "several values make a grid", id="dry-run-is-one-run"),
    pytest.param(["--resume", "r-1", "--set", "lr=1,2"], 3, "", id="resume-missing-first"),
])
def test_grid_cli_refusals(project: Project, args: list[str], code: int, message: str) -> None:
    result = project.ops("run", "submit", *args, "--skip-preflight")
    assert result.exit_code == code, result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("error: ")
    assert not project.runs.exists() or not [p for p in project.runs.iterdir()
                                             if not p.name.startswith(".")]


def _sweep_record(project: Project, sweep_id: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(
        (project.runs / ".sweeps" / f"{sweep_id}.json").read_text())
    return doc


def test_grid_makes_one_run_per_combination(project: Project) -> None:
    result = project.ops("run", "submit", "-p", "toy", "--set", "max_iters=2,3",
                         "--set", "sleep=0.0,0.01", "--json", "--follow", "--skip-preflight")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout[: result.stdout.index("}\n") + 1])
    assert len(doc["run_ids"]) == 4 and doc["sweep_id"].startswith("toy-grid-")
    got = [json.loads((project.run_dir(r) / "spec.json").read_text())["overrides"]
           for r in doc["run_ids"]]
    assert [(o["max_iters"], o["sleep"]) for o in got] == [(2, 0.0), (2, 0.01), (3, 0.0),
                                                           (3, 0.01)]
    record = _sweep_record(project, doc["sweep_id"])
    assert record["grid"] == {
        "preset": "toy", "fixed": {},
        "axes": {"max_iters": ["2", "3"], "sleep": ["0.0", "0.01"]},
        "members": [{"run_id": r, "set": {"max_iters": m, "sleep": s}} for r, (m, s) in
                    zip(doc["run_ids"], [("2", "0.0"), ("2", "0.01"), ("3", "0.0"),
                                         ("3", "0.01")], strict=True)]}
    jsonschema.validate(record, load_schema("sweep"))
    for index, run_id in enumerate(doc["run_ids"], start=1):
        assert f"member {index} of 4: {run_id}" in result.stderr
        assert project.summary(run_id)["status"] == "completed"
    driver = (project.runs / ".sweeps" / f"{doc['sweep_id']}.driver.log").read_text()
    assert "member 4 of 4" in driver


def test_literal_comma_is_one_run_and_secrets_stay_out_of_the_grid(project: Project) -> None:
    config = json.loads(project.config_path.read_text())
    config["secrets"] = {"env": ["GRID_TOKEN"]}
    project.write_config(config)
    env = {"GRID_TOKEN": "tok-7f3a9c"}
    one = project.ops("run", "submit", "-p", "resumable", "--set", 'resume_from="a,b"',
                      "--json", "--follow", "--skip-preflight", env=env)
    assert one.exit_code == 0, one.stderr
    assert "'--resume_from=a,b'" in one.stdout and '"sweep_id": null' in one.stdout
    grid = project.ops("run", "submit", "-p", "resumable",
                       "--set", "resume_from=tok-7f3a9c,plain", "--json", "--skip-preflight",
                       env=env)
    assert grid.exit_code == 0, grid.stderr
    record = json.dumps(_sweep_record(project, grid.json()["sweep_id"]))
    assert "tok-7f3a9c" not in record and "[redacted]" in record and "plain" in record
