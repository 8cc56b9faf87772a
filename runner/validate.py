"""Validate a run directory against the contract, level by level.

L0 required files present; L1 every JSON file and JSONL line parses (a torn last line is a
warning); L2 schema tags and JSON Schema (jsonschema is imported lazily: a pod without it still
validates L0, L1 and L3); L3 cross-file invariants; L4 (``deep``) dataset and checkpoint
contents. The checks of L3 and L4 live in ``runner.validate_checks``.
"""

from __future__ import annotations

import functools
import importlib
import json
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


def check_required(run_dir: Path, required: Sequence[str], out: Findings) -> None:
    for name in required:
        if not (run_dir / name).exists():
            out.fail(name, "L0.required", "required file is missing")


def parse_files(run_dir: Path, out: Findings) -> ParsedRun:
    run = ParsedRun(run_dir)
    for name in contract.JSON_FILES:
        if (run_dir / name).is_file():
            try:
                run.docs[name] = contract.read_json(run_dir / name)
            except (OSError, contract.ContractError) as exc:
                out.fail(name, "L1.parse", _clip(str(exc).removeprefix(f"{name}: ")))
    for name in contract.JSONL_FILES:
        if (run_dir / name).is_file():
            run.records[name] = _parse_jsonl(run_dir / name, out)
    return run


def _parse_jsonl(path: Path, out: Findings) -> list[tuple[int, dict[str, Any]]]:
    """Records with their 1-based line numbers; bad lines and a torn tail are reported."""
    read = contract.read_jsonl(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        out.fail(path.name, "L1.parse", f"unreadable: {exc}")
        return []
    if read.torn_tail:
        out.warn(path.name, "L1.torn-line", "last line is incomplete (torn write); it was ignored")
    for number in read.bad_lines:
        out.fail(path.name, "L1.parse", f"line {number}: {_line_problem(lines[number - 1])}")
    numbers = [n for n, raw in enumerate(lines, start=1) if raw.strip()]
    skipped = set(read.bad_lines) | ({len(lines)} if read.torn_tail else set())
    # strict=False: a line appended between the two reads has no record yet
    return list(zip([n for n in numbers if n not in skipped], read.records, strict=False))


def _line_problem(raw: bytes) -> str:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        return _clip(f"not valid JSON: {exc}")
    return f"expected a JSON object, got {type(value).__name__}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


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
