"""Fuzzing the config loader: whatever the files hold, `load_config` returns a config or raises
the config error (exit 2), and a config that loads becomes a spec and an argv without raising
anything but an OpsError. Bounded and derandomized, so CI runs the same cases every time."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ops.config.loader import LOCAL_NAME, load_config, resolve_preset
from ops.config.models import SweepPreset
from ops.errors import ConfigError, ExitCode, OpsError
from ops.services.spec import HostPaths, build_spec
from runner import workload_command
from runner.logpump import StdoutMetrics

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# values that broke things before, mixed into every text and number a strategy draws
NASTY_TEXT = ["\ud800", "{value!s}", "--{key}={value!s}", "{key}", "{{", "\x00", "", "..",
              "/abs", "~", "(?u)(?P<loss>1)", r"\N{DIGIT ONE}(?P<a>1)", "é", "{data_dir}"]
NASTY_NUMBERS = [0, -1, 1e308, -1e308, 1e-300, 2**30, 2**63, 10**40, 0.5, 3, 1e300]

plain = st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=12)
texts = st.one_of(plain, plain, plain, st.text(max_size=20), st.sampled_from(NASTY_TEXT))
numbers = st.one_of(st.integers(), st.floats(allow_nan=False), st.sampled_from(NASTY_NUMBERS),
                    st.sampled_from(NASTY_NUMBERS))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_docs = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=25)


finite = st.one_of(st.floats(min_value=1e-3, max_value=3600.0), st.integers(1, 3600))
override_values = st.dictionaries(
    st.sampled_from(["lr", "max_iters", "data_dir", "name"]),
    st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              plain, st.sampled_from(["{value!s}", "é", "{data_dir}", "a b", "--x=1"])),
    max_size=4)
valid_preset = st.fixed_dictionaries(
    {"kind": st.sampled_from(["command", "monai_seg"]),
     "command": st.lists(st.one_of(plain, st.sampled_from(
         ["{python}", "--data={data_dir}", "{out_dir}", "{nope}"])), min_size=1, max_size=4),
     "dataset": st.fixed_dictionaries({"name": st.just("d"), "dir": st.sampled_from(
         ["/data/x", "{code_dir}/d", "rel/dir", "é"])})},
    optional={
        "overrides": override_values,
        "debug_overrides": override_values,
        "override_format": st.sampled_from(["--{key}={value}", "{key}={value}",
                                            "--{key} {value}", "+{key}:{value}"]),
        "cwd": st.sampled_from([".", "src", "a/b"]),
        "env": st.dictionaries(st.sampled_from(["A", "B_1"]), plain, max_size=2),
        "out_dir": st.sampled_from(["{run_dir}/out", "/tmp/x", "{run_dir}/{run_id}"]),
        "metrics_from_stdout": st.lists(st.fixed_dictionaries({"pattern": st.sampled_from(
            [r"loss (?P<loss>[0-9.]+)", r"(?P<step>\d+) (?P<acc>\S+) é", r"(?i)x(?P<x>.)"])}),
            max_size=2),
        "limits": st.fixed_dictionaries({}, optional={
            "rss_limit_mb": st.floats(min_value=1e-6, max_value=2.0**30),
            "gpu_mem_limit_mb": st.floats(min_value=1e-6, max_value=2.0**30),
            "grace_sec": st.floats(min_value=0, max_value=3600),
            "timeout_sec": st.floats(min_value=1e-6, max_value=366 * 86400.0),
            "no_progress_sec": finite}),
        "best": st.dictionaries(plain, st.sampled_from(["min", "max"]), max_size=2),
        "resume_override": st.sampled_from(["lr", "resume_from"]),
    })
PRESET_FIELDS = ["command", "overrides", "debug_overrides", "override_format", "cwd", "env",
                 "dataset", "out_dir", "config", "metrics_from_stdout", "limits", "best",
                 "resume_override", "summary_from", "python"]
LIMIT_FIELDS = ["rss_limit_mb", "gpu_mem_limit_mb", "grace_sec", "timeout_sec",
                "no_progress_sec"]
# a valid config, then (half the time) one or two fields replaced: by a hostile value of the
# field's own shape, or by anything at all
huge = st.one_of(st.sampled_from(NASTY_NUMBERS), st.floats(min_value=1e303, max_value=1e308))
limit_change = st.tuples(st.sampled_from(LIMIT_FIELDS).map(lambda f: f"limits.{f}"),
                         st.one_of(huge, numbers))
mutations = st.lists(st.one_of(
    limit_change, limit_change,
    st.tuples(st.just("override_format"), texts),
    st.tuples(st.just("metrics_from_stdout"),
              st.lists(st.fixed_dictionaries({"pattern": texts}), min_size=1, max_size=2)),
    st.tuples(st.just("overrides"), st.dictionaries(st.sampled_from(["lr", "x"]), scalars)),
    st.tuples(st.just("env"), st.dictionaries(st.sampled_from(["A", "B"]), texts)),
    st.tuples(st.sampled_from(PRESET_FIELDS), st.one_of(scalars, json_docs))),
    min_size=1, max_size=2)
shaped_configs = st.fixed_dictionaries({
    "project": st.just({"name": "demo"}),
    "presets": st.dictionaries(st.sampled_from(["a", "b"]), valid_preset, min_size=1,
                               max_size=2),
    "tmux": st.fixed_dictionaries({}, optional={
        "watch_interval_sec": st.floats(min_value=0.01, max_value=3600),
        "stall_after_intervals": st.integers(2, 1000)}),
}).flatmap(lambda doc: st.tuples(st.just(doc), st.one_of(st.just([]), mutations, mutations)))


def _mutate(doc: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    target = doc["presets"][sorted(doc["presets"])[0]]
    for field, value in changes:
        if field.startswith("limits."):
            if not isinstance(target.get("limits"), dict):
                target["limits"] = {}
            target["limits"][field.split(".", 1)[1]] = value
        else:
            target[field] = value
    return doc


def _config_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _load(directory: Path, project: bytes, local: bytes | None = None) -> None:
    path = directory / "project.json"
    path.write_bytes(project)
    local_path = directory / LOCAL_NAME
    local_path.unlink(missing_ok=True)
    if local is not None:
        local_path.write_bytes(local)
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        assert exc.exit_code == ExitCode.USAGE
        assert exc.message and all(isinstance(line, str) for line in exc.details)
        return
    _every_preset_runs(loaded)


def _every_preset_runs(loaded: Any) -> None:
    """Spec, argv, environment and metrics patterns of every workload preset: only OpsError."""
    for name, preset in loaded.config.presets.items():
        if isinstance(preset, SweepPreset):
            continue
        try:
            resolved = resolve_preset(loaded.config, name)
            spec = build_spec(loaded, resolved, "run-1", paths=HostPaths("/o", "/h"), code={},
                              secret_names=[])
        except OpsError:
            continue
        json.dumps(spec, allow_nan=False)  # what submit sends to the host
        # the template is rendered, not passed on: no brace survives in a rendered override
        rendered = workload_command.override_args({"K": "V"}, spec["workload"]["override_format"])
        assert not any("{" in arg or "}" in arg for arg in rendered), rendered
        values = workload_command.placeholder_values(spec, Path("/o/run-1"), "python3")
        workload_command.build_argv(spec["workload"], values)
        workload_command.build_env(spec["workload"], values, {}, base={})
        StdoutMetrics([m["pattern"] for m in spec["metrics"]["from_stdout"]],
                      Path("/nonexistent/metrics.jsonl"))


@FUZZ
@given(doc=json_docs)
def test_any_json_document_loads_or_is_a_config_error(doc: Any) -> None:
    for directory in _config_dir():
        _load(directory, json.dumps(doc).encode())


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_are_a_config_error(data: bytes) -> None:
    for directory in _config_dir():
        _load(directory, data)
        _load(directory, json.dumps({"project": {"name": "demo"}}).encode(), data)


def _known(*changes: tuple[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """A case that once got through: a plain preset with ``changes``."""
    return ({"project": {"name": "demo"}, "presets": {"a": {
        "kind": "command", "command": ["python", "t.py"], "overrides": {"lr": 0.1}}}},
        list(changes))


@FUZZ
@given(shaped=shaped_configs, overlay=st.one_of(st.none(), st.none(), st.none(), json_docs))
@example(shaped=_known(("limits.rss_limit_mb", 1e308)), overlay=None)
@example(shaped=_known(("limits.gpu_mem_limit_mb", 1e303)), overlay=None)
@example(shaped=_known(("override_format", "--{key}={value!s}")), overlay=None)
@example(shaped=_known(("metrics_from_stdout", [{"pattern": "(?u)loss (?P<loss>1)"}])),
         overlay=None)
@example(shaped=_known(("metrics_from_stdout", [{"pattern": "(?P<loss>1)\ud800"}])),
         overlay=None)
@example(shaped=_known(("env", {"A": "x\x00"})), overlay=None)
def test_a_config_that_validates_becomes_a_spec_and_an_argv(
        shaped: tuple[dict[str, Any], list[tuple[str, Any]]], overlay: Any) -> None:
    doc = _mutate(*shaped)
    for directory in _config_dir():
        local = None if overlay is None else json.dumps(overlay).encode()
        _load(directory, json.dumps(doc).encode(), local)
