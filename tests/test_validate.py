"""validate_run_dir: a hand-built valid run dir passes, and each rule fires on its own."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runner import contract
from runner import schemas as schemas_module
from runner.schemas import load_schema, schema_dir
from runner.validate import ValidationReport, validate_run_dir

RUN_ID = "demo-20260101T120000-ab12"
CREATED = "2026-01-01T12:00:00.000Z"
STARTED = "2026-01-01T12:00:05.000Z"
ENDED = "2026-01-01T12:10:05.000Z"
SHA_A = "a" * 64

# relative path -> a JSON document (dict) or the raw text of the file (str)
Files = dict[str, Any]


def _spec(data_root: Path) -> dict[str, Any]:
    return {
        "schema": "ops.spec/1",
        "run_id": RUN_ID,
        "project": "demo",
        "preset": "demo",
        "kind": "train",
        "created_at": CREATED,
        "parent_run_id": None,
        "sweep_id": None,
        "code": {
            "dir": "/work/code",
            "commit": "c" * 40,
            "ref": "main",
            "branch": "main",
            "dirty": False,
            "base_commit": None,
        },
        "workload": {
            "command": ["python", "train.py"],
            "config": "configs/train.yaml",
            "overrides": {"trainer.max_epochs": 2},
            "override_format": "hydra",
            "cwd": ".",
            "env": {"OMP_NUM_THREADS": "4"},
            "out_dir": None,
            "python": None,
        },
        "config": {"lr": 0.001},
        "overrides": {"lr": 0.001},
        "limits": {
            "rss_limit_bytes": 8 << 30,
            "gpu_mem_limit_bytes": None,
            "grace_sec": 30,
            "timeout_sec": 3600,
            "no_progress_sec": None,
        },
        "heartbeat": {"interval_s": 10, "stall_after_intervals": 3},
        "metrics": {
            "from_stdout": [{"pattern": r"loss=(?P<loss>\S+)"}],
            "summary_from": "metrics",
            "best": {"dice": "max"},
        },
        "dataset": {"name": "toy", "dir": str(data_root)},
        "secrets": {"env_names": ["WANDB_API_KEY"], "files": [], "store": None},
        "tmux": {"socket": None, "session": f"ops-{RUN_ID}"},
    }


def _metadata() -> dict[str, Any]:
    return {
        "schema": "ops.run_metadata/1",
        "run_id": RUN_ID,
        "project": "demo",
        "preset": "demo",
        "kind": "train",
        "parent_run_id": None,
        "sweep_id": None,
        "created_at": CREATED,
        "started_at": STARTED,
        "git": {
            "commit": "c" * 40,
            "ref": "main",
            "branch": "main",
            "dirty": False,
            "base_commit": None,
        },
        "host": {"hostname": "pod-1", "pod_id": None, "boot_id": "b-1"},
        "process": {
            "pid": 4242,
            "pid_start_time": 1767268805.0,
            "pgid": 4243,
            "workload_pid": 4243,
            "tmux_session": f"ops-{RUN_ID}",
            "tmux_socket": None,
        },
        "runner": {"version": "0.1.0", "python": "3.11.7"},
        "wandb": {"mode": "disabled", "project": None, "run_id": None, "url": None},
    }


def _env_snapshot() -> dict[str, Any]:
    return {
        "schema": "ops.env_snapshot/1",
        "run_id": RUN_ID,
        "captured_at": STARTED,
        "python": {
            "version": "3.11.7",
            "executable": "/usr/bin/python3",
            "implementation": "CPython",
        },
        "platform": {"system": "Linux", "release": "6.1", "machine": "x86_64"},
        "env_kind": "docker",
        "cpu_count": 16,
        "memory_total_bytes": 128 << 30,
        "packages": {"list": ["numpy==2.0.0"], "sha256": SHA_A},
        "torch": None,
        "driver": None,
        "gpus": [],
        "env_names": ["OMP_NUM_THREADS"],
    }


def _dataset_manifest(data_root: Path) -> dict[str, Any]:
    files = []
    for path in sorted(data_root.iterdir()):
        hashed = path.name == "a.bin"
        sha = hashlib.sha256(path.read_bytes()).hexdigest() if hashed else None
        files.append(
            {"path": path.name, "size": path.stat().st_size, "mtime": 1767268800.5, "sha256": sha}
        )
    total = sum(f["size"] for f in files)
    return {
        "schema": "ops.dataset_manifest/1",
        "run_id": RUN_ID,
        "name": "toy",
        "root": str(data_root),
        "created_at": STARTED,
        "hash_algorithm": "sha256",
        "files": files,
        "totals": {"files": len(files), "bytes": total, "hashed": 1},
    }


def _jsonl(*records: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def valid_files(data_root: Path) -> Files:
    """Every file of a completed run; summary.json gets its ``files`` digests when written."""
    return {
        contract.SPEC: _spec(data_root),
        contract.COMMAND: "#!/bin/sh\nexec python train.py\n",
        contract.METADATA: _metadata(),
        contract.CONFIG_EFFECTIVE: {
            "schema": "ops.config_effective/1",
            "run_id": RUN_ID,
            "preset": "demo",
            "kind": "train",
            "config": {"lr": 0.001},
            "overrides": {"lr": 0.001},
            "derived": {"batch_size": 2},
            "override_format": None,
        },
        contract.ENV_SNAPSHOT: _env_snapshot(),
        contract.DATASET_MANIFEST: _dataset_manifest(data_root),
        contract.STDOUT_LOG: "epoch 1 loss=0.5\n",
        contract.HEARTBEAT: {
            "schema": "ops.heartbeat/1",
            "run_id": RUN_ID,
            "seq": 60,
            "ts": ENDED,
            "interval_s": 10,
            "deadline": "2026-01-01T12:10:25.000Z",
            "pid": 4242,
            "workload_pid": None,
            "phase": "finishing",
            "step": 2,
            "last_step_at": ENDED,
            "rss_bytes": 1 << 30,
            "gpu_memory_bytes": None,
        },
        contract.METRICS: _jsonl(
            {"ts": STARTED, "step": 1, "metrics": {"loss": 0.5}, "source": "stdout"},
            {"ts": ENDED, "step": 2, "metrics": {"loss": 0.25, "dice": 0.8}, "source": "track"},
        ),
        contract.EVENTS: _jsonl(
            {"ts": STARTED, "seq": 0, "type": "run_start", "source": "wrapper"},
            {"ts": ENDED, "seq": 1, "type": "run_end", "source": "wrapper", "status": "completed"},
        ),
        "checkpoints/ckpt_last.pt": "weights-last",
        "checkpoints/ckpt_best.pt": "weights-best",
        contract.EXIT: {
            "schema": "ops.exit/1",
            "run_id": RUN_ID,
            "exit_code": 0,
            "signal": None,
            "ended_at": ENDED,
        },
        contract.SUMMARY: {
            "schema": "ops.summary/1",
            "run_id": RUN_ID,
            "status": "completed",
            "ok": True,
            "exit_code": 0,
            "signal": None,
            "started_at": STARTED,
            "ended_at": ENDED,
            "elapsed_s": 600.0,
            "metrics_final": {"loss": 0.25, "dice": 0.8},
            "metrics_best": {"dice": 0.8},
            "failure": None,
            "written_by": "wrapper",
            "contract_violations": [],
            "wandb": {},
        },
    }


def write_run_dir(root: Path, files: Files) -> Path:
    """Write ``files`` the way the runner does; summary.json last, with digests of the rest."""
    run_dir = contract.make_run_dir(root, RUN_ID)
    digests = {}
    for relative, content in files.items():
        if relative == contract.SUMMARY:
            continue
        path = run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            data = contract.atomic_write_json(path, content)
        else:
            data = content.encode()
            contract.atomic_write_bytes(path, data)
        digests[relative] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if contract.SUMMARY in files:
        contract.atomic_write_json(
            run_dir / contract.SUMMARY, {**files[contract.SUMMARY], "files": digests}
        )
    return run_dir


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.bin").write_bytes(b"alpha-bytes")
    (root / "b.bin").write_bytes(b"beta-bytes")
    return root


def pairs(report: ValidationReport, which: str = "violations") -> set[tuple[str, str]]:
    return {(v.file, v.rule) for v in getattr(report, which)}


# ---------------------------------------------------------------------------
# the valid run dir


def test_valid_run_dir_passes_every_level(tmp_path: Path, data_root: Path) -> None:
    run_dir = write_run_dir(tmp_path / "runs", valid_files(data_root))
    report = validate_run_dir(run_dir, deep=True)
    assert report.violations == []
    assert report.warnings == []
    assert report.ok
    assert report.levels_checked == ["L0", "L1", "L2", "L3", "L4"]


def test_minimal_run_without_optional_files_passes(tmp_path: Path, data_root: Path) -> None:
    files = valid_files(data_root)
    for optional in (
        contract.DATASET_MANIFEST,
        contract.METRICS,
        "checkpoints/ckpt_last.pt",
        "checkpoints/ckpt_best.pt",
    ):
        del files[optional]
    files[contract.SPEC]["dataset"] = None
    report = validate_run_dir(write_run_dir(tmp_path / "runs", files), deep=True)
    assert report.ok, report.render_text()


# ---------------------------------------------------------------------------
# each rule fires, and nothing else does


Edit = Callable[[Files], None]
After = Callable[[Path, Path], None]  # (run_dir, data_root), after summary.json is written


def _set(relative: str, *keys_and_value: Any) -> Edit:
    *keys, value = keys_and_value

    def edit(files: Files) -> None:
        doc = files[relative]
        for key in keys[:-1]:
            doc = doc[key]
        doc[keys[-1]] = value

    return edit


def _raw(relative: str, text: str) -> Edit:
    def edit(files: Files) -> None:
        files[relative] = text

    return edit


def _drop(relative: str) -> Edit:
    def edit(files: Files) -> None:
        del files[relative]

    return edit


def _append(relative: str, text: str) -> Edit:
    def edit(files: Files) -> None:
        files[relative] += text

    return edit


def _rewrite(relative: str, old: str, new: str) -> After:
    def after(run_dir: Path, data_root: Path) -> None:
        path = run_dir / relative
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))

    return after


def _change_data(name: str, data: bytes | None) -> After:
    def after(run_dir: Path, data_root: Path) -> None:
        if data is None:
            (data_root / name).unlink()
        else:
            (data_root / name).write_bytes(data)

    return after


@dataclass
class Case:
    edit: Edit | None = None
    after: After | None = None
    expected: frozenset[tuple[str, str]] = frozenset()
    deep_only: bool = False


def case(
    *expected: tuple[str, str],
    edit: Edit | None = None,
    after: After | None = None,
    deep_only: bool = False,
) -> Case:
    return Case(edit, after, frozenset(expected), deep_only)


DATA = "<data>/"  # replaced by the dataset root in expected file names
CASES = {
    "missing-required-file": case(
        (contract.HEARTBEAT, "L0.required"), edit=_drop(contract.HEARTBEAT)
    ),
    "json-not-parseable": case(
        (contract.CONFIG_EFFECTIVE, "L1.parse"), edit=_raw(contract.CONFIG_EFFECTIVE, "{nope\n")
    ),
    "json-not-an-object": case((contract.EXIT, "L1.parse"), edit=_raw(contract.EXIT, "[1, 2]\n")),
    "jsonl-bad-complete-line": case(
        (contract.EVENTS, "L1.parse"), edit=_append(contract.EVENTS, "{oops}\n")
    ),
    "metric-nan-line": case(
        (contract.METRICS, "L1.parse"),
        edit=_append(
            contract.METRICS, f'{{"ts": "{ENDED}", "step": 1, "metrics": {{"loss": NaN}}}}\n'
        ),
    ),
    "schema-bad-enum": case(
        (contract.ENV_SNAPSHOT, "L2.schema"), edit=_set(contract.ENV_SNAPSHOT, "env_kind", "laptop")
    ),
    "schema-bad-timestamp": case(
        (contract.EXIT, "L2.schema"), edit=_set(contract.EXIT, "ended_at", "2026-01-01 12:10:05")
    ),
    "schema-failure-class": case(
        (contract.SUMMARY, "L2.schema"),
        (contract.SUMMARY, "L3.status-consistency"),
        edit=_set(contract.SUMMARY, "failure", {"class": "oops", "message": "x"}),
    ),
    "schema-bad-metrics-record": case(
        (contract.METRICS, "L2.schema"),
        edit=_append(
            contract.METRICS, f'{{"ts": "{ENDED}", "step": -1, "metrics": {{"a": "1"}}}}\n'
        ),
    ),
    "schema-unknown-major": case(
        (contract.HEARTBEAT, "L2.schema-version"),
        edit=_set(contract.HEARTBEAT, "schema", "ops.heartbeat/2"),
    ),
    "schema-unknown-major-record": case(
        (contract.EVENTS, "L2.schema-version"),
        edit=_append(contract.EVENTS, f'{{"schema": "ops.event/9", "ts": "{ENDED}"}}\n'),
    ),
    "schema-foreign-tag": case(
        (contract.SPEC, "L2.schema"), edit=_set(contract.SPEC, "schema", "hydra.config/1")
    ),
    "run-id-mismatch": case(
        (contract.METADATA, "L3.run-id"), edit=_set(contract.METADATA, "run_id", "other-run")
    ),
    "run-id-mismatch-record": case(
        (contract.METRICS, "L3.run-id"),
        edit=_append(
            contract.METRICS, _jsonl({"run_id": "x", "ts": ENDED, "step": 3, "metrics": {}})
        ),
    ),
    "ended-before-started": case(
        (contract.SUMMARY, "L3.time-order"), edit=_set(contract.SUMMARY, "ended_at", CREATED)
    ),
    "started-before-created": case(
        (contract.METADATA, "L3.time-order"), edit=_set(contract.METADATA, "created_at", ENDED)
    ),
    "completed-with-exit-code-3": case(
        (contract.SUMMARY, "L3.status-consistency"), edit=_set(contract.SUMMARY, "exit_code", 3)
    ),
    "completed-but-not-ok": case(
        (contract.SUMMARY, "L3.status-consistency"), edit=_set(contract.SUMMARY, "ok", False)
    ),
    "exit-json-disagrees": case(
        (contract.SUMMARY, "L3.status-consistency"), edit=_set(contract.EXIT, "exit_code", 1)
    ),
    "metric-infinite-record": case(
        (contract.METRICS, "L3.finite-metrics"),
        edit=_append(
            contract.METRICS, f'{{"ts": "{ENDED}", "step": 3, "metrics": {{"loss": 1e999}}}}\n'
        ),
    ),
    "metric-infinite-summary": case(
        (contract.SUMMARY, "L3.finite-metrics"),
        after=_rewrite(contract.SUMMARY, '"dice": 0.8\n  }', '"dice": -1e999\n  }'),
    ),
    "unknown-writer": case(
        (contract.SUMMARY, "L2.schema"),
        (contract.SUMMARY, "L3.writer"),
        edit=_set(contract.SUMMARY, "written_by", "workload"),
    ),
    "contract-file-replaced": case(
        (contract.METADATA, "L3.contract-file-replaced"),
        edit=_set(
            contract.SUMMARY,
            "contract_violations",
            [
                {
                    "file": contract.METADATA,
                    "rule": "contract-file-replaced",
                    "message": "the workload wrote run_metadata.json",
                    "kept_as": "out/.displaced/run_metadata.json",
                }
            ],
        ),
    ),
    "file-changed-after-summary": case(
        (contract.STDOUT_LOG, "L3.file-digest"),
        after=_rewrite(contract.STDOUT_LOG, "loss=0.5", "loss=0.4"),
    ),
    "file-removed-after-summary": case(
        (contract.COMMAND, "L3.file-digest"),
        (contract.COMMAND, "L0.required"),
        after=lambda run_dir, _: (run_dir / contract.COMMAND).unlink(),
    ),
    "dataset-file-missing": case(
        (DATA + "b.bin", "L4.dataset-missing"), after=_change_data("b.bin", None), deep_only=True
    ),
    "dataset-size-changed": case(
        (DATA + "b.bin", "L4.dataset-size"),
        after=_change_data("b.bin", b"beta-bytes+"),
        deep_only=True,
    ),
    "dataset-checksum-changed": case(
        (DATA + "a.bin", "L4.dataset-sha256"),
        after=_change_data("a.bin", b"alpha-BYTES"),
        deep_only=True,
    ),
    "dataset-root-absent": case(
        (contract.DATASET_MANIFEST, "L4.dataset-missing"),
        edit=_set(contract.DATASET_MANIFEST, "root", "/nonexistent/dataset"),
        deep_only=True,
    ),
    "checkpoint-changed": case(
        ("checkpoints/ckpt_best.pt", "L4.checkpoint-digest"),
        after=_rewrite("checkpoints/ckpt_best.pt", "best", "BEST"),
        deep_only=True,
    ),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
def test_each_rule_fires_alone(tmp_path: Path, data_root: Path, name: str) -> None:
    c = CASES[name]
    files = valid_files(data_root)
    if c.edit:
        c.edit(files)
    run_dir = write_run_dir(tmp_path / "runs", files)
    if c.after:
        c.after(run_dir, data_root)
    expected = {(f.replace(DATA, f"{data_root}/"), rule) for f, rule in c.expected}
    report = validate_run_dir(run_dir, deep=True)
    assert pairs(report) == expected, report.render_text()
    assert not report.ok
    if c.deep_only:
        assert validate_run_dir(run_dir).ok


# ---------------------------------------------------------------------------
# warnings, levels and envelopes


def test_torn_last_line_is_a_warning_not_a_violation(tmp_path: Path, data_root: Path) -> None:
    files = valid_files(data_root)
    files[contract.METRICS] += f'{{"ts": "{ENDED}", "step": 3, "metr'
    report = validate_run_dir(write_run_dir(tmp_path / "runs", files))
    assert report.ok, report.render_text()
    assert pairs(report, "warnings") == {(contract.METRICS, "L1.torn-line")}


def test_unlisted_checkpoint_is_a_warning(tmp_path: Path, data_root: Path) -> None:
    run_dir = write_run_dir(tmp_path / "runs", valid_files(data_root))
    (run_dir / "checkpoints" / "ckpt_epoch3.pt").write_bytes(b"late")
    report = validate_run_dir(run_dir, deep=True)
    assert report.ok
    assert pairs(report, "warnings") == {("checkpoints/ckpt_epoch3.pt", "L4.checkpoint-unlisted")}


def test_without_jsonschema_l2_is_skipped_with_a_warning(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = valid_files(data_root)
    files[contract.ENV_SNAPSHOT]["env_kind"] = "laptop"  # only JSON Schema can see this
    files[contract.HEARTBEAT]["schema"] = "ops.heartbeat/2"  # the tag check needs no library
    run_dir = write_run_dir(tmp_path / "runs", files)
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    report = validate_run_dir(run_dir)
    assert report.levels_checked == ["L0", "L1", "L3"]
    assert pairs(report) == {(contract.HEARTBEAT, "L2.schema-version")}
    assert [w.message for w in report.warnings] == ["L2 skipped: jsonschema not installed"]


def test_not_a_directory_is_one_violation(tmp_path: Path) -> None:
    report = validate_run_dir(tmp_path / "absent")
    assert pairs(report) == {(".", "L0.run-dir")}
    assert report.levels_checked == ["L0"]


def test_custom_required_list(tmp_path: Path, data_root: Path) -> None:
    run_dir = write_run_dir(tmp_path / "runs", valid_files(data_root))
    report = validate_run_dir(run_dir, required=[contract.SUMMARY, "out"])
    assert pairs(report) == {("out", "L0.required")}


def test_a_flood_of_one_rule_is_cut_short(tmp_path: Path, data_root: Path) -> None:
    files = valid_files(data_root)
    files[contract.METRICS] += "{bad}\n" * 50
    report = validate_run_dir(write_run_dir(tmp_path / "runs", files))
    assert len(report.violations) == 21
    assert report.violations[-1].message == "... and 30 more like these"


def test_report_envelope_matches_its_schema(tmp_path: Path, data_root: Path) -> None:
    files = valid_files(data_root)
    files[contract.SUMMARY]["exit_code"] = 3
    run_dir = write_run_dir(tmp_path / "runs", files)
    validator = jsonschema.Draft202012Validator(load_schema("validate"))
    for report in (validate_run_dir(run_dir), validate_run_dir(tmp_path / "runs")):
        envelope = report.to_json()
        validator.validate(envelope)
        assert envelope["schema"] == "ops.validate/1"
        assert envelope["ok"] is report.ok
    text = validate_run_dir(run_dir).render_text()
    assert "summary.json: L3.status-consistency: status is completed but exit_code is 3" in text


# ---------------------------------------------------------------------------
# the schema files


SCHEMA_NAMES = sorted({*contract.JSON_FILES.values(), *contract.JSONL_FILES.values(), "validate"})


@pytest.mark.parametrize("name", SCHEMA_NAMES, ids=SCHEMA_NAMES)
def test_schema_file_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://pod-ops.dev/schemas/{name}.schema.json"
    assert (schema_dir() / f"{name}.schema.json").is_file()
    if name in contract.JSON_FILES.values():
        assert {"schema", "run_id"} <= set(schema["required"])
        assert schema["properties"]["schema"] == {"const": contract.schema_tag(name)}


def test_load_schema_is_cached_and_rejects_paths() -> None:
    assert load_schema("summary") is load_schema("summary")
    with pytest.raises(ValueError, match="not a schema name"):
        load_schema("../pyproject")


def test_schema_dir_prefers_the_copy_shipped_in_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "runner"
    monkeypatch.setattr(schemas_module, "__file__", str(package / "schemas.py"))
    assert schema_dir() == tmp_path / "site-packages" / "schemas"  # no shipped copy: checkout
    (package / "schemas").mkdir(parents=True)
    assert schema_dir() == package / "schemas"
