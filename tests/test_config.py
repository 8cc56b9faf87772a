"""The config layer: project.json loading, overlay, presets, --set, schema, `ops init`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from click.testing import CliRunner

from ops.cli.config_cmds import config_group, init_command
from ops.config import schema as schema_module
from ops.config.loader import (
    deep_merge,
    find_project_config,
    load_config,
    repo_root_of,
    resolve_preset,
)
from ops.config.models import CommandPreset, ProjectConfig
from ops.config.overrides import convert_value, override_argv, parse_sets
from ops.config.scaffold import init_project, sanitize_name, starter_config
from ops.errors import ConfigError, ConflictError, ExitCode, NotFoundError, OpsError

REPO = Path(__file__).resolve().parents[1]
PROJECT = Path("configs/ops/project.json")
LOCAL = Path("configs/ops/project.local.json")


def smoke_preset(**extra: Any) -> dict[str, Any]:
    preset = {
        "kind": "command",
        "command": ["python", "train.py"],
        "overrides": {"max_iters": 50, "lr": 0.001, "compile": False, "device": "cuda"},
    }
    return {**preset, **extra}


def base_config(**presets: dict[str, Any]) -> dict[str, Any]:
    return {
        "project": {"name": "demo"},
        "tmux": {"watch_interval_sec": 2},
        "secrets": {"env": ["WANDB_API_KEY"]},
        "presets": presets or {"smoke": smoke_preset()},
    }


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPS_PROJECT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_json(tmp_path / PROJECT, base_config())


def config_error(doc: dict[str, Any], tmp_path: Path) -> ConfigError:
    write_json(tmp_path / PROJECT, doc)
    with pytest.raises(ConfigError) as info:
        load_config()
    return info.value


# --- finding the file ---------------------------------------------------------------------


def test_find_walks_up_from_a_subdirectory(project: Path, tmp_path: Path) -> None:
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    assert find_project_config(cwd=sub) == project.resolve()


def test_explicit_wins_over_env_and_env_over_walk(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write_json(tmp_path / "elsewhere" / "p.json", base_config())
    explicit = write_json(tmp_path / "explicit.json", base_config())
    monkeypatch.setenv("OPS_PROJECT_CONFIG", str(other))
    assert find_project_config() == other.resolve()
    assert find_project_config(explicit) == explicit.resolve()


@pytest.mark.parametrize("how", ["walk", "explicit", "env"])
def test_missing_config_is_not_found(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = tmp_path / "nope.json" if how == "explicit" else None
    if how == "env":
        monkeypatch.setenv("OPS_PROJECT_CONFIG", str(tmp_path / "nope.json"))
    with pytest.raises(NotFoundError) as info:
        find_project_config(explicit)
    assert info.value.exit_code == ExitCode.NOT_FOUND
    if how == "walk":
        assert "ops init" in (info.value.hint or "")
    else:
        assert "nope.json does not exist" in info.value.message


@pytest.mark.parametrize(
    ("relpath", "root"),
    [("configs/ops/project.json", "."), ("conf/project.json", "conf")],
    ids=["standard-layout", "elsewhere"],
)
def test_repo_root(relpath: str, root: str, tmp_path: Path) -> None:
    assert repo_root_of(tmp_path / relpath) == (tmp_path / root).resolve()


# --- malformed JSON and validation errors ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{\n  "project": {\n    "name": "demo"\n    "x": 1}\n}',
            "configs/ops/project.json: invalid JSON at line 4 column 5: Expecting ',' delimiter",
        ),
        ('{"project": {"name": "a", "name": "b"}}', "duplicate key 'name'"),
        ('{"project": {"name": "a"}, "tmux": {"watch_interval_sec": NaN}}', "NaN is not allowed"),
        ("[1, 2]", "expected a JSON object at the top level"),
    ],
    ids=["line-and-column", "duplicate-key", "nan", "not-an-object"],
)
def test_malformed_json(text: str, message: str, tmp_path: Path) -> None:
    (tmp_path / PROJECT).parent.mkdir(parents=True)
    (tmp_path / PROJECT).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert message in info.value.message
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"project": {"name": "demo", "bogus": 1}}, "project.bogus: unknown field"),
        ({"presets": {"p": smoke_preset(extra=1)}}, "presets.p.extra: unknown field"),
        (
            {"presets": {"p": smoke_preset(kind="monai")}},
            "presets.p.kind: unknown preset kind 'monai' (known kinds: command, monai_seg, "
            "sweep, eval, service)",
        ),
        (
            {"presets": {"p": {"command": ["x"]}}},
            "presets.p.kind: field required (known kinds: command, monai_seg, sweep, eval, "
            "service)",
        ),
        ({"presets": {"p": smoke_preset(command=[])}}, "presets.p.command: List should have"),
        (
            {"presets": {"p": smoke_preset(metrics_from_stdout=[{"pattern": r"loss (\d+)"}])}},
            "presets.p.metrics_from_stdout.0.pattern: pattern needs at least one named group "
            "other than 'step'",
        ),
        (
            {"presets": {"p": smoke_preset(metrics_from_stdout=[{"pattern": "(?P<loss>"}])}},
            "presets.p.metrics_from_stdout.0.pattern: invalid regular expression",
        ),
        (
            {"presets": {"p": smoke_preset(override_format="--{key}")}},
            "presets.p.override_format: '--{key}' is not an override template",
        ),
        ({"presets": {"p": smoke_preset(cwd="/abs")}}, "presets.p.cwd: must be relative"),
        ({"presets": {"p": smoke_preset(cwd="a/../..")}}, "presets.p.cwd: must stay inside"),
        ({"presets": {"p": smoke_preset(overrides={"a b": 1})}}, "presets.p.overrides.a b.[key]"),
        ({"presets": {"bad/name": smoke_preset()}}, "presets.bad/name.[key]: String should"),
        ({"secrets": {"env": ["OK", "1BAD"]}}, "secrets.env.1: String should match pattern"),
        ({"tmux": {"watch_interval_sec": 0}}, "tmux.watch_interval_sec: Input should be greater"),
        ({"tmux": {"stall_after_intervals": 1}}, "tmux.stall_after_intervals: Input should be"),
        ({"storage": {"wandb": {"mode": "on"}}}, "storage.wandb.mode: Input should be 'auto'"),
        ({"project": {}}, "project.name: Field required"),
    ],
    ids=[
        "extra-top-section",
        "extra-in-preset",
        "unknown-kind",
        "missing-kind",
        "empty-command",
        "regex-without-named-group",
        "invalid-regex",
        "format-without-value",
        "absolute-cwd",
        "cwd-escapes",
        "override-key",
        "preset-name",
        "secret-env-name",
        "interval-zero",
        "stall-too-small",
        "wandb-mode",
        "missing-name",
    ],
)
def test_validation_error_lines(change: dict[str, Any], line: str, tmp_path: Path) -> None:
    error = config_error({**base_config(), **change}, tmp_path)
    assert error.message == "configs/ops/project.json is invalid"
    assert any(detail.startswith(line) for detail in error.details), error.details
    assert "Traceback" not in error.render()


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    doc = {"project": {"name": "x", "a": 1}, "tmux": {"socket": "a b"}, "b": 2}
    error = config_error(doc, tmp_path)
    assert sorted(d.split(":")[0] for d in error.details) == ["b", "project.a", "tmux.socket"]


# --- overlay and provenance ------------------------------------------------------------------


def test_deep_merge_recurses_into_dicts_and_replaces_lists() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3], "e": 4}, "d": {"x": 1}})
    assert merged == {"a": {"b": 1, "c": [3], "e": 4}, "d": {"x": 1}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_overlay_merges_and_provenance_names_each_source(project: Path, tmp_path: Path) -> None:
    write_json(
        tmp_path / LOCAL,
        {
            "project": {"default_host": "gpu"},
            "hosts": {"gpu": {"address": "root@10.0.0.1:2222"}},
            "secrets": {"env": ["HF_TOKEN"]},
            "presets": {"smoke": {"overrides": {"max_iters": 5}}},
        },
    )
    loaded = load_config()
    assert loaded.local_path == (tmp_path / LOCAL).resolve()
    assert loaded.repo_root == tmp_path.resolve()
    assert loaded.config.secrets.env == ["HF_TOKEN"]  # lists replace
    assert loaded.config.presets["smoke"].overrides["lr"] == 0.001  # dicts merge
    sources = {path: (value, source) for path, value, source in loaded.provenance()}
    assert sources["project.name"] == ("demo", "project.json")
    assert sources["project.default_host"] == ("gpu", "project.local.json")
    assert sources["hosts.gpu.address"] == ("root@10.0.0.1:2222", "project.local.json")
    assert sources["presets.smoke.overrides.max_iters"] == (5, "project.local.json")
    assert sources["presets.smoke.overrides.lr"] == (0.001, "project.json")
    assert sources["tmux.watch_interval_sec"] == (2.0, "project.json")
    assert sources["tmux.socket"] == ("ops", "default")
    assert sources["secrets.env"] == (["HF_TOKEN"], "project.local.json")
    assert sources["$schema"] == (None, "default")


def test_no_overlay_means_no_local_path(project: Path) -> None:
    loaded = load_config()
    assert loaded.local_path is None
    assert {source for _, _, source in loaded.provenance()} == {"project.json", "default"}


def test_invalid_overlay_is_named_in_the_error(project: Path, tmp_path: Path) -> None:
    write_json(tmp_path / LOCAL, {"tmux": {"watch_interval_sec": -1}})
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "project.local.json" in info.value.message
    assert info.value.details == [
        "tmux.watch_interval_sec: Input should be greater than or equal to 0.01 "
        "(set in project.local.json)"
    ]


def test_malformed_overlay_names_the_overlay_file(project: Path, tmp_path: Path) -> None:
    (tmp_path / LOCAL).write_text("{")
    with pytest.raises(ConfigError, match=r"^configs/ops/project.local.json: invalid JSON"):
        load_config()


def test_example_overlay_is_valid_over_the_starter_config() -> None:
    example = json.loads((REPO / "configs/ops/project.local.example.json").read_text())
    merged = deep_merge(starter_config("demo", with_schema=True), example)
    assert ProjectConfig.model_validate(merged).project.default_host in merged["hosts"]


# --- models -----------------------------------------------------------------------------------


def test_defaults() -> None:
    config = ProjectConfig.model_validate({"project": {"name": "demo"}})
    assert config.project.outputs_dir() == "/mnt/runs/demo"
    assert config.tmux.socket == "ops"
    assert "summary.json" in config.artifact_contract.required
    assert config.storage.wandb.mode == "disabled"


@pytest.mark.parametrize(
    ("command", "python", "expected"),
    [
        (["python3", "-c", "pass"], None, True),
        (["/opt/venv/bin/python", "x.py"], None, True),
        (["torchrun", "x.py"], None, False),
        (["torchrun", "x.py"], True, True),
        (["python", "x.py"], False, False),
        (["{python}", "x.py"], None, True),
    ],
    ids=["python3", "abs-path", "other", "explicit-true", "explicit-false", "placeholder"],
)
def test_is_python(command: list[str], python: bool | None, expected: bool) -> None:
    preset = CommandPreset(kind="command", command=command, python=python)
    assert preset.is_python() is expected


@pytest.mark.parametrize(
    ("fmt", "argv"),
    [
        ("--{key}={value}", ["--n=3", "--lr=0.1", "--name=a b", "--ok=True"]),
        ("{key}={value}", ["n=3", "lr=0.1", "name=a b", "ok=True"]),
        ("--{key} {value}", ["--n", "3", "--lr", "0.1", "--name", "a b", "--ok", "True"]),
    ],
    ids=["nanogpt", "hydra", "argparse"],
)
def test_override_argv_forms(fmt: str, argv: list[str]) -> None:
    overrides: dict[str, str | int | float | bool] = {"n": 3, "lr": 0.1, "name": "a b", "ok": True}
    preset = CommandPreset(kind="command", command=["x"], overrides=overrides, override_format=fmt)
    assert override_argv(preset) == argv


# --- --set ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "current", "expected"),
    [
        ("TRUE", False, True),
        ("no", True, False),
        ("1", False, True),
        ("0", True, False),
        ("100", 50, 100),
        ("-3", 50, -3),
        ("3", 0.1, 3.0),
        ("1e-4", 0.1, 1e-4),
        ("a=b c", "x", "a=b c"),
        ("", "x", ""),
    ],
    ids=["bool-upper", "bool-no", "bool-1", "bool-0", "int", "negative-int", "int-as-float",
         "float-exp", "str-as-is", "empty-str"],
)  # fmt: skip
def test_convert_value(raw: str, current: Any, expected: Any) -> None:
    value = convert_value(raw, current)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["max_iters=abc"], "--set max_iters=abc: expected an integer "
                            "(preset 'smoke' has max_iters=50)"),
        (["max_iters=1.5"], "--set max_iters=1.5: expected an integer"),
        (["max_iters=true"], "--set max_iters=true: expected an integer"),
        (["compile=2"], "--set compile=2: expected true or false (also 1/0, yes/no) "
                        "(preset 'smoke' has compile=false)"),
        (["lr=fast"], "--set lr=fast: expected a number (preset 'smoke' has lr=0.001)"),
        (["lr=nan"], "--set lr=nan: expected a finite number"),
        (["lr=-inf"], "--set lr=-inf: expected a finite number"),
        (["max_iters"], "--set max_iters: expected key=value"),
        (["iters=5"], "--set iters=5: preset 'smoke' has no override 'iters' "
                      "(known: compile, device, lr, max_iters)"),
    ],
    ids=["int-word", "int-float", "int-bool", "bool-number", "float-word", "nan", "inf",
         "no-equals", "unknown-key"],
)  # fmt: skip
def test_bad_set(sets: list[str], message: str) -> None:
    config = ProjectConfig.model_validate(base_config())
    with pytest.raises(ConfigError) as info:
        resolve_preset(config, "smoke", sets)
    assert info.value.message.startswith(message)
    assert info.value.exit_code == ExitCode.USAGE


def test_set_on_a_preset_without_overrides_says_how_to_add_one() -> None:
    with pytest.raises(ConfigError, match="declares no overrides") as info:
        parse_sets("bare", {}, ["x=1"])
    assert '"overrides"' in (info.value.hint or "")


def test_resolve_preset_applies_typed_sets_to_a_copy() -> None:
    config = ProjectConfig.model_validate(base_config())
    resolved = resolve_preset(config, "smoke", ["max_iters=7", "compile=yes", "lr=1", "lr=0.5"])
    assert resolved.overrides_set == {"max_iters": 7, "compile": True, "lr": 0.5}
    assert resolved.preset.overrides == {
        "max_iters": 7,
        "lr": 0.5,
        "compile": True,
        "device": "cuda",
    }
    assert config.presets["smoke"].overrides["max_iters"] == 50


@pytest.mark.parametrize(
    ("presets", "message"),
    [
        ({"zeta": smoke_preset(), "alpha": smoke_preset()}, "(known: alpha, zeta)"),
        ({}, "(known: none defined)"),
    ],
    ids=["lists-known-sorted", "none-defined"],
)
def test_unknown_preset(presets: dict[str, Any], message: str) -> None:
    config = ProjectConfig.model_validate({"project": {"name": "d"}, "presets": presets})
    with pytest.raises(ConfigError) as info:
        resolve_preset(config, "nope")
    assert info.value.message == f"unknown preset 'nope' {message}"


# --- schema -----------------------------------------------------------------------------------


def test_committed_schema_matches_the_models() -> None:
    committed = (REPO / "schemas/project.schema.json").read_bytes()
    assert committed == schema_module.schema_bytes(), "run `python -m ops.config.schema`"


def test_schema_is_draft_2020_12_and_agrees_with_the_models() -> None:
    schema = schema_module.project_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(starter_config("demo", with_schema=True))
    for bad in ({"project": {"name": "d"}, "extra": 1}, base_config(**{"a b": smoke_preset()})):
        assert not validator.is_valid(bad)


def test_schema_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "project.schema.json"
    assert schema_module.main(["--check", "--output", str(target)]) == 1
    assert schema_module.main(["--output", str(target)]) == 0
    assert schema_module.main(["--check", "--output", str(target)]) == 0


# --- init -------------------------------------------------------------------------------------


def test_init_writes_a_valid_config_and_gitignores_the_overlay(tmp_path: Path) -> None:
    repo = tmp_path / "My Repo!"
    repo.mkdir()
    result = init_project(repo)
    assert result.name == "My-Repo-"
    assert set(result.created) == {repo / PROJECT, repo / ".gitignore"}
    doc = json.loads((repo / PROJECT).read_text())
    assert "$schema" not in doc
    smoke = ProjectConfig.model_validate(doc).presets["smoke"]
    assert smoke.command[0] == "{python}"  # the runner's interpreter: `python` may not exist
    assert (repo / ".gitignore").read_text() == \
        "configs/ops/project.local.json\n.ops/\nruns/\nartifacts/\n"


def test_init_links_the_schema_when_the_repo_has_it(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas/project.schema.json").write_text("{}")
    init_project(tmp_path, name="demo")
    assert json.loads((tmp_path / PROJECT).read_text())["$schema"] == (
        "../../schemas/project.schema.json"
    )


def test_init_refuses_to_overwrite_and_touches_nothing(tmp_path: Path) -> None:
    write_json(tmp_path / PROJECT, {"mine": True})
    before = (tmp_path / PROJECT).read_bytes()
    with pytest.raises(ConflictError) as info:
        init_project(tmp_path)
    assert info.value.exit_code == ExitCode.CONFLICT
    assert "--force" in (info.value.hint or "")
    assert (tmp_path / PROJECT).read_bytes() == before
    assert not (tmp_path / ".gitignore").exists()


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("venv/", "venv/\nconfigs/ops/project.local.json\n.ops/\nruns/\nartifacts/\n"),
        ("venv/\n", "venv/\nconfigs/ops/project.local.json\n.ops/\nruns/\nartifacts/\n"),
        ("/configs/ops/project.local.json\n.ops/\nruns/\n/artifacts/\n",
         "/configs/ops/project.local.json\n.ops/\nruns/\n/artifacts/\n"),
        ("", "configs/ops/project.local.json\n.ops/\nruns/\nartifacts/\n"),
    ],
    ids=["no-trailing-newline", "trailing-newline", "already-there-rooted", "empty"],
)
def test_gitignore_gets_the_entry_exactly_once(
    existing: str, expected: str, tmp_path: Path
) -> None:
    (tmp_path / ".gitignore").write_text(existing)
    init_project(tmp_path, name="demo")
    init_project(tmp_path, name="demo", force=True)
    assert (tmp_path / ".gitignore").read_text() == expected


def test_init_force_reports_changed_files(tmp_path: Path) -> None:
    init_project(tmp_path, name="demo")
    result = init_project(tmp_path, name="other", force=True)
    assert result.created == ()
    assert result.changed == (tmp_path / PROJECT,)
    assert json.loads((tmp_path / PROJECT).read_text())["project"]["name"] == "other"


@pytest.mark.parametrize(
    ("raw", "name"),
    [("..hidden", "hidden"), ("a b/c", "a-b-c"), ("---", "project"), ("x" * 80, "x" * 64)],
    ids=["leading-dots", "spaces-slash", "nothing-left", "too-long"],
)
def test_sanitize_name(raw: str, name: str) -> None:
    assert sanitize_name(raw) == name


def test_init_rejects_an_invalid_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid project name"):
        init_project(tmp_path, name="-bad")
    assert not (tmp_path / PROJECT).exists()


# --- CLI --------------------------------------------------------------------------------------


@click.group()
@click.option("--project-config", type=click.Path(path_type=Path))
@click.pass_context
def root(ctx: click.Context, project_config: Path | None) -> None:
    """Stands in for ops.cli.main: stores --project-config, renders OpsError like main."""
    ctx.obj = {"project_config": project_config}


root.add_command(config_group)
root.add_command(init_command)


def invoke(args: Sequence[str], command: click.Command = root) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))
    if isinstance(result.exception, OpsError):
        return result.exception.exit_code, result.exception.render()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_cli_validate_ok(project: Path) -> None:
    assert invoke(["config", "validate"]) == (0, "ok: configs/ops/project.json (1 preset)\n")


def test_cli_validate_without_root_group(project: Path) -> None:
    code, output = invoke(["validate"], config_group)
    assert (code, output.split(" (")[0]) == (0, "ok: configs/ops/project.json")


@pytest.mark.parametrize(
    ("doc", "code", "lines"),
    [
        (
            {"project": {"name": "demo", "bogus": 1}},
            ExitCode.USAGE,
            ["error: configs/ops/project.json is invalid", "  project.bogus: unknown field"],
        ),
        (
            {"project": {"name": "demo"}, "presets": {"p": smoke_preset(kind="x")}},
            ExitCode.USAGE,
            ["  presets.p.kind: unknown preset kind 'x' (known kinds: command, monai_seg, sweep, "
             "eval, service)"],
        ),
        (None, ExitCode.NOT_FOUND, ["hint: run `ops init` in the repository root"]),
    ],
    ids=["extra-field", "bad-kind", "missing"],
)
def test_cli_validate_errors(doc: Any, code: int, lines: list[str], tmp_path: Path) -> None:
    if doc is not None:
        write_json(tmp_path / PROJECT, doc)
    exit_code, output = invoke(["config", "validate"])
    assert exit_code == code
    for line in lines:
        assert line in output


def test_cli_project_config_option_is_used(tmp_path: Path) -> None:
    path = write_json(tmp_path / "custom" / "p.json", base_config())
    code, output = invoke(["--project-config", str(path), "config", "validate"])
    assert (code, output) == (0, "ok: custom/p.json (1 preset)\n")


def test_cli_show_text_lists_sources_and_override_forms(project: Path, tmp_path: Path) -> None:
    write_json(tmp_path / LOCAL, {"project": {"default_host": "local"}})
    code, output = invoke(["config", "show"])
    assert code == 0
    assert 'project.name = "demo"  [project.json]' in output
    assert 'project.default_host = "local"  [project.local.json]' in output
    assert 'tmux.socket = "ops"  [default]' in output
    assert "# preset smoke: overrides as '--{key}={value}': upstream nanoGPT" in output


def test_cli_show_json(project: Path) -> None:
    code, output = invoke(["config", "show", "--json"])
    doc = json.loads(output)
    assert (code, doc["schema"], doc["local_path"]) == (0, "ops.config_show/1", None)
    assert doc["config_path"] == str(project.resolve())
    assert {"path": "project.name", "value": "demo", "source": "project.json"} in doc["values"]


def test_cli_init_then_refuse(tmp_path: Path) -> None:
    code, output = invoke(["init", "--name", "demo"])
    assert code == 0
    assert "created configs/ops/project.json" in output
    assert "created .gitignore" in output
    code, output = invoke(["init"])
    assert code == ExitCode.CONFLICT
    assert "already exists; it was left unchanged" in output
    assert "hint: edit it, or pass --force" in output
    assert invoke(["config", "validate"]) == (0, "ok: configs/ops/project.json (1 preset)\n")


# --- as_json: what spec.json is built from ---------------------------------------------------


def test_as_json_is_model_dump_for_every_section_and_preset_kind() -> None:
    """spec.json's config blocks come from ``as_json`` (no serializer is built for models
    from the config cache); it must give exactly pydantic's model_dump(mode="json"), for the
    repository's own config (every preset kind) plus a SLURM host, a distributed preset with
    resources, ints given for float fields and a dataset."""
    import pickle

    from ops.config.models import as_json

    doc = json.loads((REPO / "configs/ops/project.json").read_text())
    doc["hosts"] = {"cluster": {"address": "me@login:2222", "launcher": "slurm",
                                "connect_retry_sec": 5,
                                "slurm": {"partition": "gpu", "extra": ["--qos=high"]}}}
    doc["presets"]["ddp"] = {**smoke_preset(), "distributed": {"nproc_per_node": 2},
                             "resources": {"gpus": 2, "time": "01:00:00"},
                             "limits": {"grace_sec": 5, "rss_limit_mb": 1024},
                             "dataset": {"name": "x", "dir": "data/x"}, "env": {"A": "1"}}
    config = ProjectConfig.model_validate(doc)
    again = pickle.loads(pickle.dumps(config))  # noqa: S301 - models as the cache gives them
    assert as_json(again) == config.model_dump(mode="json")
    for name, preset in again.presets.items():
        assert as_json(preset) == config.presets[name].model_dump(mode="json"), name
    assert {p.kind for p in config.presets.values()} == {"command", "monai_seg", "eval",
                                                         "service", "sweep"}
    assert as_json(again.presets["ddp"])["limits"]["grace_sec"] == 5.0
