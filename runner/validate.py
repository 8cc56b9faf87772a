"""Validate a run directory against the contract, level by level.

L0 required files present; L1 every JSON file and JSONL line parses (a torn last line is a
warning); L2 schema tags and JSON Schema (jsonschema is imported lazily: a pod without it still
validates L0, L1 and L3); L3 cross-file invariants; L4 (``deep``) dataset and checkpoint
contents. The checks of L3 and L4 live in ``runner.validate_checks``.
"""

from __future__ import annotations

import functools
import importlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from runner import contract
from runner.schemas import load_schema
from runner.validate_checks import L3_CHECKS, L4_CHECKS, Findings, ParsedRun, Violation

__all__ = ["ENVELOPE_SCHEMA", "ValidationReport", "Violation", "validate_run_dir"]

ENVELOPE_SCHEMA = "ops.validate/1"
MESSAGE_LIMIT = 300


@dataclass
class ValidationReport:
    """What validate found in one run dir; ``ok`` when there is no violation.

    Warnings have the shape of a violation but never make the run dir invalid.
    """

    run_dir: Path
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    levels_checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": ENVELOPE_SCHEMA,
            "run_dir": str(self.run_dir),
            "ok": self.ok,
            "levels": list(self.levels_checked),
            "violations": [v.to_json() for v in self.violations],
            "warnings": [w.to_json() for w in self.warnings],
        }

    def render_text(self) -> str:
        verdict = "ok" if self.ok else f"{len(self.violations)} violation(s)"
        lines = [f"{self.run_dir}: {verdict} (checked {', '.join(self.levels_checked)})"]
        lines.extend(f"{v.file}: {v.rule}: {v.message}" for v in self.violations)
        lines.extend(f"warning: {w.file}: {w.rule}: {w.message}" for w in self.warnings)
        return "\n".join(lines)


def validate_run_dir(
    run_dir: Path,
    *,
    required: Sequence[str] = contract.DEFAULT_REQUIRED,
    deep: bool = False,
) -> ValidationReport:
    """Check ``run_dir`` at levels L0 to L3, and L4 when ``deep``; never raises on bad files."""
    run_dir = Path(run_dir)
    out = Findings()
    if not run_dir.is_dir():
        out.fail(".", "L0.run-dir", f"{run_dir} is not a directory")
        return ValidationReport(run_dir, out.violations, out.warnings, ["L0"])
    levels = ["L0", "L1"]
    check_required(run_dir, required, out)
    check_temp_files(run_dir, out)
    run = check_tags(parse_files(run_dir.resolve(), out), out)
    if check_schemas(run, out):
        levels.append("L2")
    levels.append("L3")
    for check in L3_CHECKS:
        check(run, out)
    if deep:
        levels.append("L4")
        for check in L4_CHECKS:
            check(run, out)
    out.close()
    return ValidationReport(run_dir, out.violations, out.warnings, levels)


# ---------------------------------------------------------------------------
# L0 and L1


DIRECTORIES = (contract.CHECKPOINTS_DIR, contract.OUT_DIR)
# the contract's own files: each must be a regular file when present
CONTRACT_FILES = (*contract.JSON_FILES, *contract.JSONL_FILES, contract.STDOUT_LOG,
                  contract.COMMAND, contract.WRAPPER_LOG)


def check_required(run_dir: Path, required: Sequence[str], out: Findings) -> None:
    for name in required:
        try:
            mode = (run_dir / name).lstat().st_mode
        except FileNotFoundError:
            out.fail(name, "L0.required", "required file is missing")
            continue
        except OSError as exc:
            out.fail(name, "L0.required", f"cannot be inspected: {exc.strerror or exc}")
            continue
        wanted = stat.S_ISDIR if name in DIRECTORIES else stat.S_ISREG
        if not wanted(mode) and name not in CONTRACT_FILES:
            kind = "a directory" if name in DIRECTORIES else "a regular file"
            out.fail(name, "L0.file-kind", f"is {contract.file_kind(mode)}, not {kind}")


def check_temp_files(run_dir: Path, out: Findings) -> None:
    """Temp files of an interrupted write are not the contract's: a warning, never a violation
    (`runner status` removes them once the run has ended)."""
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:
        return
    for name in names:
        if contract.is_temp_name(name):
            out.warn(name, "L0.temp-file", "left by an interrupted write; not a contract file")


def check_file_kinds(run_dir: Path, out: Findings) -> list[str]:
    """The contract files present as regular files; any other kind (a FIFO, a directory, a
    symbolic link, ...) where one belongs is a violation and is never opened."""
    regular = []
    for name in CONTRACT_FILES:
        try:
            mode = (run_dir / name).lstat().st_mode
        except OSError:
            continue
        if stat.S_ISREG(mode):
            regular.append(name)
        else:
            out.fail(name, "L0.file-kind", f"is {contract.file_kind(mode)}, not a regular file")
    return regular


def parse_files(run_dir: Path, out: Findings) -> ParsedRun:
    run = ParsedRun(run_dir)
    present = set(check_file_kinds(run_dir, out))
    for name in contract.JSON_FILES:
        if name in present:
            try:
                run.docs[name] = contract.read_json(run_dir / name)
            except (OSError, contract.ContractError) as exc:
                out.fail(name, "L1.parse", _clip(str(exc).removeprefix(f"{name}: ")))
    for name in contract.JSONL_FILES:
        if name in present:
            run.records[name] = _parse_jsonl(run_dir / name, out)
    return run


def _parse_jsonl(path: Path, out: Findings) -> list[tuple[int, dict[str, Any]]]:
    """Records with their 1-based line numbers; bad lines and a torn tail are reported."""
    try:
        data, truncated = contract.read_jsonl_bytes(path)
    except (OSError, contract.ContractError) as exc:
        out.fail(path.name, "L1.parse", _clip(str(exc).removeprefix(f"{path.name}: ")))
        return []
    if truncated:
        out.warn(path.name, "L1.truncated",
                 f"over {contract.JSONL_LIMIT} bytes: only the first part was checked")
    lines = data.split(b"\n")
    tail = lines.pop()  # text after the last newline: empty unless the last write was torn
    records = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        value, problem = _parse_record(raw)
        if value is None:
            out.fail(path.name, "L1.parse", f"line {number}: {problem}")
        else:
            records.append((number, value))
    if tail.strip():
        value, _problem = _parse_record(tail)
        if value is None:
            out.warn(path.name, "L1.torn-line",
                     "last line is incomplete (torn write); it was ignored")
        else:
            records.append((len(lines) + 1, value))
    return records


def _parse_record(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        value = contract.parse_json(raw)
    except ValueError as exc:
        return None, _clip(f"not valid JSON: {exc}")
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    return value, ""


# ---------------------------------------------------------------------------
# L2


def check_tags(run: ParsedRun, out: Findings) -> ParsedRun:
    """Report schema tags that are not ours; the rest of the checks see only our files."""
    ours = ParsedRun(run.run_dir)
    for name, doc in run.docs.items():
        if _tag_ok(name, doc, contract.JSON_FILES[name], out):
            ours.docs[name] = doc
    for name, records in run.records.items():
        kept = [
            (line, record)
            for line, record in records
            if "schema" not in record
            or _tag_ok(name, record, contract.JSONL_FILES[name], out, f"line {line}: ")
        ]
        ours.records[name] = kept
    return ours


def _tag_ok(file: str, doc: dict[str, Any], name: str, out: Findings, where: str = "") -> bool:
    problem = contract.check_schema_tag(doc, name)
    if problem is None:
        return True
    tag = doc.get("schema")
    newer = isinstance(tag, str) and tag.startswith(f"ops.{name}/")
    out.fail(file, "L2.schema-version" if newer else "L2.schema", where + problem)
    return False


def check_schemas(run: ParsedRun, out: Findings) -> bool:
    """JSON Schema of every file and record; False when jsonschema is not installed."""
    if _import_jsonschema() is None:
        out.warn(".", "L2.skipped", "L2 skipped: jsonschema not installed")
        return False
    for name, doc in run.docs.items():
        for problem in schema_problems(contract.JSON_FILES[name], doc):
            out.fail(name, "L2.schema", problem)
    for name, records in run.records.items():
        for line, record in records:
            for problem in schema_problems(contract.JSONL_FILES[name], record):
                out.fail(name, "L2.schema", f"line {line}: {problem}")
    return True


def schema_problems(schema_name: str, doc: Any) -> list[str]:
    """One ``path: message`` per way ``doc`` breaks ``schemas/<schema_name>.schema.json``."""
    errors = _validator(schema_name).iter_errors(doc)
    found = sorted((_dotted(err.absolute_path), str(err.message)) for err in errors)
    return [_clip(f"{where}: {message}") for where, message in found]


def _dotted(path: Sequence[Any]) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _import_jsonschema() -> ModuleType | None:
    try:
        return importlib.import_module("jsonschema")
    except ImportError:
        return None


@functools.cache
def _validator(schema_name: str) -> Any:
    # jsonschema ships no type hints; it is imported by name so the runner does not need it
    jsonschema = importlib.import_module("jsonschema")
    schema = load_schema(schema_name)
    return jsonschema.Draft202012Validator(schema)


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."
