"""The detailed `ops run status RUN` and the services behind `ops run diff`: finding a run's
record (a path, a fetched copy, or the host in one round trip) and rendering both as text."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ops.errors import NotFoundError, UsageError
from ops.report import sources
from ops.report.table import fmt_number
from ops.services.runs import Target
from runner import contract, report_data
from runner.report_data import Want

FOLD_KEY_RE = re.compile(r"(?:fold(\d+)/)?(\w+?)_(mean|ci_low|ci_high)$")


def status_detail(target: Target, run_id: str) -> dict[str, Any]:
    """One run's record with its detail and the host's GPUs now, in one round trip."""
    gathered = sources.host_runs(target, [run_id], Want(detail=True))
    if not gathered.runs:
        raise NotFoundError(f"no run {run_id!r} on {target.host.name}")
    run = gathered.runs[0]
    if sources.missing(run):
        raise NotFoundError(f"no run {run_id!r} under {target.paths.outputs_root} on "
                            f"{target.host.name}")
    return {**run, "gpus_now": gathered.gpus}


def diff_records(names: Sequence[str], artifacts: Path,
                 open_host: Callable[[], Target]) -> list[dict[str, Any]]:
    """Records with docs for each name: a run dir path, a fetched copy, else the host's run
    (all host runs in one round trip)."""
    want = Want(docs=True)
    local: dict[str, dict[str, Any]] = {}
    remote: list[str] = []
    for name in names:
        path = Path(name)
        if "/" in name or path.is_dir():
            if not path.is_dir():
                raise NotFoundError(f"{name}: no such run directory")
            local[name] = report_data.collect(path, want)
        elif (artifacts / name).is_dir():
            local[name] = report_data.collect(artifacts / name, want)
        else:
            try:
                contract.validate_run_id(name)
            except contract.ContractError as exc:
                raise UsageError(str(exc)) from exc
            remote.append(name)
    if remote:
        target = open_host()
        for run in sources.host_runs(target, remote, want).runs:
            if sources.missing(run):
                raise NotFoundError(f"no run {run['run_id']!r} on {target.host.name} and no "
                                    f"fetched copy under {artifacts}")
            local[str(run["run_id"])] = run
    return [local[n] for n in names]


# -- text --------------------------------------------------------------------------------------


def fold_table(metrics: dict[str, Any]) -> list[str]:
    """``foldK/<m>_mean`` (with ``_ci_low``/``_ci_high``) as a fold x metric table, the overall
    values as the last row; [] when the run has no such metrics."""
    cells: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        match = FOLD_KEY_RE.fullmatch(key)
        if match and value is not None:
            row = f"fold {match.group(1)}" if match.group(1) is not None else "overall"
            cells.setdefault(row, {}).setdefault(match.group(2), {})[match.group(3)] = value
    if not any(r.startswith("fold") for r in cells):
        return []
    names = list(dict.fromkeys(m for row in cells.values() for m in row))
    rows = sorted((r for r in cells if r != "overall"), key=lambda r: int(r.split()[1]))
    rows += ["overall"] if "overall" in cells else []
    table = [["", *names]]
    for row in rows:
        table.append([row, *(_mean_ci(cells[row].get(m)) for m in names)])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(printable(c, 60).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in table]


def _metric(value: Any) -> str:
    if value is None:
        return "non-finite"
    return fmt_number(float(value)) if isinstance(value, (int, float)) else printable(value, 60)


def _mean_ci(cell: dict[str, float] | None) -> str:
    if not cell or "mean" not in cell:
        return ""
    text = fmt_number(cell["mean"])
    if "ci_low" in cell and "ci_high" in cell:
        text += f" [{fmt_number(cell['ci_low'])}, {fmt_number(cell['ci_high'])}]"
    return text


CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
TEXT_LIMIT = 300


def printable(value: Any, limit: int = TEXT_LIMIT) -> str:
    """A value from a run dir as one safe line: control characters (terminal escapes, line
    breaks) shown escaped, long text clipped."""
    text = CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."
