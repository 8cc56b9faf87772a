"""Text rendering of command results (JSON output is the results themselves)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
             for row in [headers, *rows]]
    return "\n".join(lines)


def submitted(done: Any) -> str:
    order = "all at once" if getattr(done, "parallel", False) else "one after another"
    head = (f"submitted sweep {done.sweep_id} on {done.host}: {len(done.run_ids)} runs, "
            f"{order}" if done.sweep_id else f"submitted {done.run_id} on {done.host}")
    lines = [head]
    if done.parent_run_id:
        lines.append(f"  resumes: {done.parent_run_id}")
    lines += [f"  run dir: {d}" for d in done.run_dirs]
    if done.slurm_job_ids:
        lines.append(f"  slurm:   job {', '.join(done.slurm_job_ids)} "
                     f"(squeue -j {','.join(done.slurm_job_ids)})")
    else:
        lines.append(f"  tmux:    tmux -L {done.tmux_socket} attach -t {done.tmux_session}")
    return "\n".join(lines)


class ProgressBar:
    """A byte progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> Callable[[int], None]:
        if not self.enabled:
            return lambda _n: None
        self._bar = click.progressbar(length=total, label="fetching", file=sys.stderr,
                                      show_pos=False, show_percent=True, show_eta=True)
        self._bar.__enter__()
        return self._bar.update  # type: ignore[no-any-return]

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def fetched(result: Any) -> str:
    mib = result.bytes_fetched / 2**20
    return (f"fetched {len(result.files_fetched)} files ({mib:.1f} MiB) into {result.dest}; "
            f"{result.files_current} already up to date; remote status: {result.remote_status}")


CELL_LIMIT = 60  # characters of a value shown in a table cell
DETAIL_LIMIT = 300  # characters of a value shown in run details


def _cell(value: Any, limit: int = CELL_LIMIT) -> str:
    """A value from the host as one short printable line: None is '-', text is clipped, and
    control characters (a terminal escape a workload put in a name) become '?'."""
    if value is None:
        return "-"
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)):
        text = json.dumps(value) if not isinstance(value, int) or abs(value) < 10**30 \
            else "(a huge integer)"
    else:
        text = f"({type(value).__name__})"
    text = text[: limit + 1]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(value: Any) -> str:
    return _cell(value)


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = [[_cell(r.get("run_id"), 130), _status_cell(r), _cell(r.get("preset")),
             _cell(r.get("step")), _cell(r.get("started_at") or r.get("created_at")),
             _launcher_cell(r)] for r in runs]
    return table(rows, ["RUN", "STATUS", "PRESET", "STEP", "STARTED", "TMUX/JOB"])


def _status_cell(run: dict[str, Any]) -> str:
    """The status; a run queued in SLURM also says why (Resources, Priority, Dependency)."""
    slurm = run.get("slurm")
    if run.get("status") == "queued" and isinstance(slurm, dict) and slurm.get("reason"):
        return f"queued ({_cell(slurm.get('reason'), 24)})"
    return _cell(run.get("status"))


def _launcher_cell(run: dict[str, Any]) -> str:
    """tmux alive yes/no, or the SLURM job id of a run SLURM launched."""
    if run.get("slurm_job_id") is not None:
        return f"job {_cell(run.get('slurm_job_id'), 24)}"
    return "yes" if run.get("tmux_alive") is True else "no"


def run_detail(run: dict[str, Any]) -> str:
    keys = ["run_id", "status", "reason", "preset", "kind", "run_dir", "created_at",
            "started_at", "ended_at", "elapsed_s", "exit_code", "phase", "step",
            "heartbeat_age_s", "rss_bytes", "gpu_memory_bytes", "tmux_session", "tmux_alive",
            "slurm_job_id"]
    lines = [f"{k:17} {_cell(run[k], DETAIL_LIMIT)}" for k in keys if run.get(k) is not None]
    failure = run.get("failure")
    if isinstance(failure, dict):
        lines.append(f"{'failure':17} {_cell(failure.get('class'))}: "
                     f"{_cell(failure.get('message'), DETAIL_LIMIT)}")
    elif failure is not None:
        lines.append(f"{'failure':17} {_cell(failure, DETAIL_LIMIT)}")
    metrics = run.get("metrics_final")
    for name, value in sorted((metrics if isinstance(metrics, dict) else {}).items()):
        shown = f"{value:g}" if type(value) in (int, float) else _cell(value)
        lines.append(f"  {_cell(name, 40):15} {shown}")
    notes = run.get("notes")
    lines += [f"note: {_cell(n, DETAIL_LIMIT)}" for n in (notes if isinstance(notes, list) else [])]
    return "\n".join(lines)
