"""Cross-file invariants (L3) and deep checks (L4) of a run directory.

``runner.validate`` parses the files (L0 to L2) into a ``ParsedRun`` and calls the checks
here; each check adds what it finds to a ``Findings``. Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import math
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from runner import contract, fields, run_warnings, seal
from runner.logpump import compile_metric_pattern

CHUNK_BYTES = 1 << 20
SAME_RULE_LIMIT = 20  # findings kept per (file, rule); the rest are counted in one line
CHECKPOINTS_PREFIX = f"{contract.CHECKPOINTS_DIR}/"


@dataclass(frozen=True)
class Violation:
    """One problem: ``file`` relative to the run dir ("." for the dir itself)."""

    file: str
    rule: str
    message: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Findings:
    """Violations and warnings as the checks find them; a flood of one rule is cut short."""

    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    _counts: dict[tuple[bool, str, str], int] = field(default_factory=dict)

    def fail(self, file: str, rule: str, message: str) -> None:
        self._add(True, Violation(file, rule, message))

    def warn(self, file: str, rule: str, message: str) -> None:
        self._add(False, Violation(file, rule, message))

    def _add(self, is_violation: bool, item: Violation) -> None:
        # values quoted in messages come from the run dir: a message stays one short line
        item = Violation(fields.clip(item.file, 200), item.rule, fields.clip(item.message))
        key = (is_violation, item.file, item.rule)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._counts[key] <= SAME_RULE_LIMIT:
            (self.violations if is_violation else self.warnings).append(item)

    def close(self) -> None:
        """Add one line per (file, rule) that was cut short, saying how many were left out."""
        for (is_violation, file, rule), count in self._counts.items():
            if count > SAME_RULE_LIMIT:
                more = Violation(file, rule, f"... and {count - SAME_RULE_LIMIT} more like these")
                (self.violations if is_violation else self.warnings).append(more)
        self._counts.clear()


@dataclass
class ParsedRun:
    """The contract files of one run dir that parsed and carry our schema tag."""

    run_dir: Path
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.docs.get(contract.SUMMARY)

    def summary_files(self) -> dict[str, Any]:
        files = (self.summary or {}).get("files")
        return files if isinstance(files, dict) else {}


Check = Callable[[ParsedRun, Findings], None]


# ---------------------------------------------------------------------------
# digests


def digest_problem(path: Path, recorded: Mapping[str, Any], *,
                   follow_symlinks: bool = False) -> tuple[str, str] | None:
    """(kind, message) when ``path`` does not match its recorded size and sha256, else None.

    kind is ``missing`` (absent, unreadable or not a regular file), ``size`` or ``sha256``; a
    sha256 that is not recorded is not checked. A run dir's files are never followed through a
    symbolic link; a dataset's files are (``follow_symlinks``).
    """
    size, sha = recorded.get("size"), recorded.get("sha256")
    try:
        info = path.stat() if follow_symlinks else path.lstat()
        if not stat.S_ISREG(info.st_mode):
            return "missing", f"is {contract.file_kind(info.st_mode)}, not a regular file"
        if type(size) is int and info.st_size != size:
            return "size", f"size is {info.st_size} bytes, recorded {fields.describe(size)}"
        actual_sha = contract.sha256_file(path, follow_symlinks=follow_symlinks) \
            if isinstance(sha, str) else sha
    except FileNotFoundError:
        return "missing", "does not exist"
    except (OSError, ValueError, contract.ContractError) as exc:
        return "missing", f"unreadable: {fields.clip(str(exc), 200)}"
    if actual_sha != sha:
        return "sha256", (f"sha256 is {str(actual_sha)[:12]}..., "
                          f"recorded {fields.clip(str(sha), 12)}...")
    return None


def inside(base: Path, relative: object) -> Path | None:
    """``base / relative`` when ``relative`` is a relative path without '..', else None."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        return None
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    return base / rel


# ---------------------------------------------------------------------------
# L3: cross-file invariants


def check_run_ids(run: ParsedRun, out: Findings) -> None:
    expected = run.run_dir.name
    try:
        contract.validate_run_id(expected)
    except contract.ContractError as exc:
        out.fail(".", "L3.run-id", f"the run dir name is not a run id: {exc}")
    for name, doc in run.docs.items():
        if doc.get("run_id") != expected:
            out.fail(name, "L3.run-id", f"run_id is {doc.get('run_id')!r}, the dir is {expected!r}")
    for name, records in run.records.items():
        for line, record in records:
            if "run_id" in record and record["run_id"] != expected:
                got = record["run_id"]
                out.fail(
                    name, "L3.run-id", f"line {line}: run_id is {got!r}, the dir is {expected!r}"
                )


def check_time_order(run: ParsedRun, out: Findings) -> None:
    pairs = (
        (contract.SUMMARY, "started_at", "ended_at"),
        (contract.METADATA, "created_at", "started_at"),
    )
    for name, first, then in pairs:
        doc = run.docs.get(name)
        if doc is None or first not in doc or then not in doc:
            continue
        try:
            early, late = contract.parse_iso(doc[first]), contract.parse_iso(doc[then])
        except (TypeError, ValueError) as exc:
            out.fail(name, "L3.time-order", f"cannot compare {first} and {then}: {exc}")
            continue
        if late < early:
            gap = _seconds(early - late)
            out.fail(name, "L3.time-order", f"{then} is {gap} s before {first}")


def _seconds(delta: _dt.timedelta) -> str:
    return f"{delta.total_seconds():.3f}"


def check_status(run: ParsedRun, out: Findings) -> None:
    summary = run.summary
    if summary is None:
        return
    status, ok, code = summary.get("status"), summary.get("ok"), summary.get("exit_code")
    for problem in _status_problems(status, ok, code, summary.get("failure")):
        out.fail(contract.SUMMARY, "L3.status-consistency", problem)
    exit_doc = run.docs.get(contract.EXIT)
    if exit_doc is not None and "exit_code" in exit_doc and exit_doc["exit_code"] != code:
        out.fail(
            contract.SUMMARY,
            "L3.status-consistency",
            f"exit_code is {code!r} but exit.json says {exit_doc['exit_code']!r}",
        )


def _status_problems(status: object, ok: object, code: object, failure: object) -> Iterator[str]:
    if status not in contract.RECORDED_STATUSES:
        yield f"status {status!r} is not one of {', '.join(contract.RECORDED_STATUSES)}"
    if isinstance(ok, bool) and ok != (status == "completed"):
        yield f"ok is {str(ok).lower()} but status is {status!r} (ok means completed)"
    if status == "completed" and not (type(code) is int and code == 0):
        yield f"status is completed but exit_code is {code!r}"
    if status == "completed" and failure is not None:
        yield "status is completed but failure is set"


def check_finite_metrics(run: ParsedRun, out: Findings) -> None:
    for line, record in run.records.get(contract.METRICS, []):
        for key in _non_finite(record.get("metrics")):
            out.fail(contract.METRICS, "L3.finite-metrics", f"line {line}: {key} is not finite")
    summary = run.summary or {}
    for section in ("metrics_final", "metrics_best"):
        for key in _non_finite(summary.get(section)):
            out.fail(contract.SUMMARY, "L3.finite-metrics", f"{section}.{key} is not finite")


def _non_finite(metrics: object) -> list[str]:
    if not isinstance(metrics, dict):
        return []
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


def check_writer(run: ParsedRun, out: Findings) -> None:
    summary = run.summary
    if summary is not None and summary.get("written_by") not in contract.WRITERS:
        got = summary.get("written_by")
        out.fail(contract.SUMMARY, "L3.writer", f"written_by is {got!r}, not wrapper or runner")


def check_seal(run: ParsedRun, out: Findings) -> None:
    """summary.json must carry the key whose SHA-256 spec.json commits to (legacy specs
    commit to none)."""
    summary, spec = run.summary, run.docs.get(contract.SPEC)
    if summary is None or spec is None:
        return
    problem = seal.problem(summary, spec)
    if problem is not None:
        out.fail(contract.SUMMARY, "L3.summary-seal", problem)


def check_contract_violations(run: ParsedRun, out: Findings) -> None:
    entries = (run.summary or {}).get("contract_violations")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        file = entry.get("file") if isinstance(entry.get("file"), str) else contract.SUMMARY
        message = f"the workload replaced this file: {entry.get('message', '')}"
        if entry.get("kept_as"):
            message += f" (its copy is kept as {entry['kept_as']})"
        out.fail(str(file), "L3.contract-file-replaced", message)


def check_file_digests(run: ParsedRun, out: Findings) -> None:
    for relative, recorded in sorted(run.summary_files().items()):
        if relative.startswith(CHECKPOINTS_PREFIX) or not isinstance(recorded, dict):
            continue
        path = inside(run.run_dir, relative)
        if path is None:
            out.fail(relative, "L3.file-digest", "summary.json lists a path outside the run dir")
            continue
        problem = digest_problem(path, recorded)
        if problem is not None:
            message = f"{problem[1]}: the file changed after summary.json was written"
            out.fail(relative, "L3.file-digest", message)


def check_metric_warnings(run: ParsedRun, out: Findings) -> None:
    """Metrics that were silently lost: warnings, never violations. A summary that carries
    ``warnings`` (the wrapper counted the matches) is taken at its word; an older one, or one
    the runner wrote, gets the same checks derived from spec.json and metrics.jsonl."""
    summary, spec = run.summary, run.docs.get(contract.SPEC)
    if summary is None:
        return
    if "warnings" in summary:
        found = run_warnings.read_warnings(summary.get("warnings"))
    else:
        found = _derived_metric_warnings(run, spec or {}, fields.obj(summary, "metrics_best"))
    for item in found:
        out.warn(contract.SUMMARY, f"L3.{item['code']}", item["message"])


def _derived_metric_warnings(run: ParsedRun, spec: Mapping[str, Any],
                             best: Mapping[str, Any]) -> list[dict[str, str]]:
    lifted = {name for _, record in run.records.get(contract.METRICS, [])
              if record.get("source") == "stdout"
              for name in fields.obj(record, "metrics")}
    found = []
    for pattern in run_warnings.stdout_patterns(spec)[:run_warnings.WARNINGS_LIMIT]:
        try:
            names = set(compile_metric_pattern(pattern).groupindex) - {"step"}
        except ValueError:
            continue  # a pattern the runner cannot use failed the run at its start
        if not names & lifted:
            found.append(run_warnings.pattern_unmatched(pattern))
    found += [run_warnings.best_missing(name, direction)
              for name, direction in run_warnings.best_rules(spec).items() if name not in best]
    return found[:run_warnings.WARNINGS_LIMIT]


L3_CHECKS: tuple[Check, ...] = (
    check_run_ids,
    check_time_order,
    check_status,
    check_finite_metrics,
    check_writer,
    check_seal,
    check_contract_violations,
    check_file_digests,
    check_metric_warnings,
)


# ---------------------------------------------------------------------------
# L4: dataset and checkpoint contents


def fetch_record(run_dir: Path) -> dict[str, Any] | None:
    """`.ops/fetch.json` of a run dir that `ops run fetch` copied here, else None."""
    return contract.read_json_or_none(run_dir / FETCH_RECORD)


def check_dataset(run: ParsedRun, out: Findings) -> None:
    manifest = run.docs.get(contract.DATASET_MANIFEST)
    if manifest is None:
        return
    root_text = manifest.get("root")
    if not isinstance(root_text, str) or not root_text or "\0" in root_text:
        out.fail(contract.DATASET_MANIFEST, "L4.dataset-missing",
                 f"root is {fields.describe(root_text)}, not a directory path")
        return
    root = Path(root_text)
    if not _is_dir(root):
        fetched = fetch_record(run.run_dir)
        if fetched is not None:
            host = fields.text(fetched.get("host"), 100)
            out.warn(contract.DATASET_MANIFEST, "L4.dataset-elsewhere",
                     f"dataset root {fields.clip(str(root))} is on {host}, not here: not checked")
        else:
            out.fail(contract.DATASET_MANIFEST, "L4.dataset-missing",
                     f"dataset root {fields.clip(str(root))} is absent")
        return
    files = manifest.get("files")
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict):
            continue
        path = inside(root, entry.get("path"))
        if path is None:
            bad = fields.describe(entry.get("path"))
            out.fail(contract.DATASET_MANIFEST, "L4.dataset-missing", f"bad path: {bad}")
            continue
        problem = digest_problem(path, entry, follow_symlinks=True)
        if problem is not None:
            out.fail(str(path), f"L4.dataset-{problem[0]}", problem[1])


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def check_checkpoints(run: ParsedRun, out: Findings) -> None:
    if run.summary is None:
        out.warn(contract.CHECKPOINTS_DIR, "L4.checkpoints", "not checked: no usable summary.json")
        return
    listed = {k: v for k, v in run.summary_files().items() if k.startswith(CHECKPOINTS_PREFIX)}
    fetched = fetch_record(run.run_dir)
    skipped = fetched is not None and not fetched.get("with_checkpoints")
    for relative, recorded in sorted(listed.items()):
        path = inside(run.run_dir, relative)
        if path is None or not isinstance(recorded, dict):
            out.fail(relative, "L4.checkpoint-digest", "not a usable entry of summary.json files")
            continue
        if skipped and not path.exists():
            out.warn(relative, "L4.checkpoint-not-fetched",
                     "fetched without --with-checkpoints: not checked")
            continue
        problem = digest_problem(path, recorded)
        if problem is not None:
            out.fail(relative, "L4.checkpoint-digest", problem[1])
    for relative in _files_under(run.run_dir, contract.CHECKPOINTS_DIR):
        if relative not in listed:
            out.warn(relative, "L4.checkpoint-unlisted", "not listed in summary.json files")


def _files_under(run_dir: Path, subdir: str) -> list[str]:
    base = run_dir / subdir
    if not base.is_dir():
        return []
    return sorted(p.relative_to(run_dir).as_posix() for p in base.rglob("*")
                  if p.is_file() and not contract.is_temp_name(p.name))


L4_CHECKS: tuple[Check, ...] = (check_dataset, check_checkpoints)
FETCH_RECORD = ".ops/fetch.json"
