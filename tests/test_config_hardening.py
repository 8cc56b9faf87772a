"""A config that validates must run: numbers in range, templates the runner renders, metrics
patterns compiled the way the runner compiles them, and config files that are files.

Each case goes through the real `ops` entry point (`ops config validate`): exit 2 and a message
that names the field, never a traceback, never a hang.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from ops.cli.main import main
from ops.config.loader import load_config, resolve_preset
from ops.errors import ConfigError, ExitCode
from ops.services.spec import HostPaths, build_spec
from runner.logpump import StdoutMetrics, compile_metric_pattern

PROJECT = Path("configs/ops/project.json")
LOCAL = Path("configs/ops/project.local.json")


def preset(**extra: Any) -> dict[str, Any]:
    return {"kind": "command", "command": ["python", "train.py"],
            "overrides": {"lr": 0.1}, **extra}


def config(**extra: Any) -> dict[str, Any]:
    return {"project": {"name": "demo"}, "presets": {"p": preset(**extra)}}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPS_PROJECT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / PROJECT).parent.mkdir(parents=True)


def write(doc: Any, path: Path = PROJECT) -> None:
    path.write_text(json.dumps(doc))


def ops(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    code = done.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


def validate(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return ops(capsys, "config", "validate")


# --- numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "doc", "line"), [pytest.param(*case, id=case[0]) for case in [
    ("rss", config(limits={"rss_limit_mb": 1e308}), "presets.p.limits.rss_limit_mb: "),
    ("rss-inf", config(limits={"rss_limit_mb": "INF"}), "presets.p.limits.rss_limit_mb: "),
    ("gpu", config(limits={"gpu_mem_limit_mb": 1e300}), "presets.p.limits.gpu_mem_limit_mb: "),
    ("timeout", config(limits={"timeout_sec": 1e308}), "presets.p.limits.timeout_sec: "),
    ("no-progress", config(limits={"no_progress_sec": 1e20}),
     "presets.p.limits.no_progress_sec: "),
    ("grace", config(limits={"grace_sec": 1e308}), "presets.p.limits.grace_sec: "),
    ("interval", {**config(), "tmux": {"watch_interval_sec": 1e-300}},
     "tmux.watch_interval_sec: "),
    ("stall", {**config(), "tmux": {"stall_after_intervals": 10**30}},
     "tmux.stall_after_intervals: "),
    ("retry", {**config(), "hosts": {"pod": {"address": "a@b", "connect_retry_sec": 1e308}}},
     "hosts.pod.connect_retry_sec: "),
]])
def test_every_number_has_a_range(capsys: pytest.CaptureFixture[str], where: str,
                                  doc: dict[str, Any], line: str) -> None:
    write(doc)
    code, output = validate(capsys)
    assert code == ExitCode.USAGE, output
    assert line in output and "Traceback" not in output


def test_json_infinity_literal_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    PROJECT.write_text(json.dumps(config(limits={"rss_limit_mb": 1})).replace(": 1}", ": 1e400}"))
    code, output = validate(capsys)
    assert code == ExitCode.USAGE and "presets.p.limits.rss_limit_mb: " in output


def test_the_largest_memory_limit_still_becomes_a_spec() -> None:
    write(config(limits={"rss_limit_mb": 2**30, "gpu_mem_limit_mb": 2**30,
                         "timeout_sec": 366 * 86400}))
    loaded = load_config()
    spec = build_spec(loaded, resolve_preset(loaded.config, "p"), "r1",
                      paths=HostPaths("/o", "/h"), code={}, secret_names=[])
    assert spec["limits"]["rss_limit_bytes"] == 2**50


def test_infinite_override_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    PROJECT.write_text(json.dumps(config()).replace('"lr": 0.1', '"lr": 1e999'))
    code, output = validate(capsys)
    assert code == ExitCode.USAGE and "presets.p.overrides.lr: must be a finite number" in output


@pytest.mark.parametrize("field", ["command", "env", "cwd"])
def test_nul_in_argv_or_env_is_refused(capsys: pytest.CaptureFixture[str], field: str) -> None:
    values = {"command": ["python", "a\x00b"], "env": {"A": "x\x00"}, "cwd": "a\x00"}
    write(config(**{field: values[field]}))
    code, output = validate(capsys)
    assert code == ExitCode.USAGE and "NUL" in output


# --- override templates ------------------------------------------------------------------------

@pytest.mark.parametrize("template", [
    "--{key}={value!s}", "--{key}={value:>5}", "--{key}={value}{value}", "{{key}}={value}",
    "--{key}=", "--{0}={value}", "--{key}={value}}", "{key}",
])
def test_override_template_must_be_one_the_runner_renders(
        capsys: pytest.CaptureFixture[str], template: str) -> None:
    write(config(override_format=template))
    code, output = validate(capsys)
    assert code == ExitCode.USAGE, output
    assert "presets.p.override_format: " in output
    assert '"--{key}={value}", "{key}={value}", "--{key} {value}"' in output  # what is allowed


@pytest.mark.parametrize("template", ["--{key}={value}", "{key}={value}", "--{key} {value}",
                                      "+{key}={value}"])
def test_documented_templates_validate(capsys: pytest.CaptureFixture[str], template: str) -> None:
    write(config(override_format=template))
    assert validate(capsys)[0] == 0


# --- metrics patterns: validated by the runner's own compile ------------------------------------

@pytest.mark.parametrize("pattern", [
    r"(?u)loss (?P<loss>[0-9.]+)",
    r"\N{DIGIT ONE} (?P<loss>[0-9.]+)",
    "loss (?P<loss>[0-9.]+)\ud800",
    "(" * 3000 + "(?P<loss>a)" + ")" * 3000,
    r"a{99999999999} (?P<loss>1)",
], ids=["unicode-flag", "named-char", "surrogate", "deep-groups", "huge-repeat"])
def test_a_pattern_the_runner_cannot_compile_is_refused(
        capsys: pytest.CaptureFixture[str], pattern: str) -> None:
    with pytest.raises(ValueError):
        compile_metric_pattern(pattern)
    write(config(metrics_from_stdout=[{"pattern": pattern}]))
    code, output = validate(capsys)
    assert code == ExitCode.USAGE, output
    assert "presets.p.metrics_from_stdout.0.pattern: " in output
    assert "Traceback" not in output


def test_a_pattern_that_validates_is_the_one_the_runner_uses(tmp_path: Path) -> None:
    pattern = r"iter (?P<step>\d+): loss (?P<loss>[0-9.]+) é"
    write(config(metrics_from_stdout=[{"pattern": pattern}]))
    loaded = load_config()
    spec = build_spec(loaded, resolve_preset(loaded.config, "p"), "r1",
                      paths=HostPaths("/o", "/h"), code={}, secret_names=[])
    metrics = StdoutMetrics([m["pattern"] for m in spec["metrics"]["from_stdout"]],
                            tmp_path / "metrics.jsonl")
    metrics.feed("iter 3: loss 0.5 é\n".encode())
    metrics.close()
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert (record["step"], record["metrics"]) == (3, {"loss": 0.5})


# --- config files that are not files ------------------------------------------------------------

def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize("kind", ["directory", "dangling", "fifo"])
@pytest.mark.parametrize("which", ["local", "project"])
def test_a_config_path_that_is_not_a_file_is_said_and_exits_2(
        capsys: pytest.CaptureFixture[str], kind: str, which: str) -> None:
    target = LOCAL if which == "local" else PROJECT
    if which == "local":
        write(config())
    if kind == "directory":
        target.mkdir()
    elif kind == "dangling":
        target.symlink_to("nowhere.json")
    else:
        _fifo(target)
    done: list[tuple[int, str]] = []
    worker = threading.Thread(target=lambda: done.append(validate(capsys)), daemon=True)
    worker.start()
    worker.join(10)
    assert done, "ops config validate hung"
    code, output = done[0]
    assert code == ExitCode.USAGE, output
    expected = {"directory": "is a directory", "dangling": "is a dangling symlink",
                "fifo": "is a FIFO"}[kind]
    assert f"{target.name} {expected}" in output


def test_a_symlink_to_a_config_file_is_fine(capsys: pytest.CaptureFixture[str]) -> None:
    write(config())
    Path("local.json").write_text(json.dumps({"project": {"name": "other"}}))
    LOCAL.symlink_to(Path("local.json").resolve())
    assert load_config().config.project.name == "other"


def test_explicit_config_that_is_a_fifo_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    _fifo(Path("p.json"))
    code, output = ops(capsys, "--project-config", "p.json", "config", "validate")
    assert code == ExitCode.USAGE and "p.json is a FIFO" in output


# --- nesting -----------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [3000, 200])
@pytest.mark.parametrize("which", ["project", "local"])
def test_deeply_nested_json_is_a_clean_error(capsys: pytest.CaptureFixture[str], depth: int,
                                             which: str) -> None:
    nested = "[" * depth + "]" * depth
    text = '{"project": {"name": "demo"}, "x": ' + nested + "}"
    write(config())
    (LOCAL if which == "local" else PROJECT).write_text(text)
    code, output = validate(capsys)
    assert code == ExitCode.USAGE, output
    assert "nested too deeply" in output and "Traceback" not in output


def test_deep_merge_of_two_deep_overlays_is_refused_before_merging() -> None:
    deep: Any = {"x": 1}
    for _ in range(90):
        deep = {"a": deep}
    write({**config(), "extra": deep})
    write({"extra": deep}, LOCAL)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config()


# --- ops init next to things that are not files ------------------------------------------------

@pytest.mark.parametrize("kind", ["directory", "fifo"])
@pytest.mark.parametrize("which", [".gitignore", "project.json"])
def test_init_says_what_is_in_the_way(capsys: pytest.CaptureFixture[str], kind: str,
                                      which: str) -> None:
    target = Path(".gitignore") if which == ".gitignore" else PROJECT
    if kind == "directory":
        target.mkdir()
    else:
        _fifo(target)
    done: list[tuple[int, str]] = []
    worker = threading.Thread(target=lambda: done.append(ops(capsys, "init", "--force")),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert done, "ops init hung"
    code, output = done[0]
    assert code == ExitCode.USAGE, output
    assert f"{target.name} is a {'directory' if kind == 'directory' else 'FIFO'}" in output
