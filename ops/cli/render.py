"""Text rendering of command results (JSON output is the results themselves)."""

from __future__ import annotations

import json
import os
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
    """Fetch progress on stderr when it is a terminal: the files being fetched, bytes (binary
    units), rate and time left, drawn by rich in place; silent when piped or under --json."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None

    def start(self, total: int, files: int = 0) -> Callable[[int], None]:
        if not self.enabled:
            return lambda _n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("fetching {task.fields[files]} file{task.fields[plural]}"), BarColumn(),
            DownloadColumn(binary_units=True), TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True))
        self._progress.start()
        task = self._progress.add_task("fetch", total=total, files=files,
                                       plural="" if files == 1 else "s")
        return lambda n: self._progress.advance(task, n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


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


RUN_HEADERS = ["RUN", "STATUS", "PRESET", "STEP", "STARTED", "DURATION", "METRIC", "TMUX/JOB"]


def run_rows(runs: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row of text cells per run, in the order given (the service orders them)."""
    return [[_cell(r.get("run_id"), 130), _status_cell(r), _cell(r.get("preset")),
             _cell(r.get("step")), local_time(r.get("started_at")),
             duration(r.get("duration_s")), headline(r.get("headline")), _launcher_cell(r)]
            for r in runs]


def runs_table(runs: Sequence[dict[str, Any]], empty: str = "no runs") -> str:
    """The run table as plain text (no colour)."""
    if not runs:
        return empty
    return table(run_rows(runs), RUN_HEADERS)


def local_time(stamp: Any) -> str:
    """A UTC timestamp from the host as this machine's local time, to the second."""
    from runner import contract

    if not isinstance(stamp, str):
        return "-"
    try:
        when = contract.parse_iso(stamp)
    except (ValueError, OverflowError):
        return _cell(stamp, 24)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: Any) -> str:
    """Seconds as 8.5s, 2m05s, 1h02m or 3d04h; '-' when unknown."""
    if type(seconds) not in (int, float) or not 0 <= seconds < 1e9:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def size(count: Any) -> str:
    """Bytes as B, KiB, MiB, GiB or TiB with three significant figures; '-' when unknown."""
    if type(count) is not int or count < 0:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"


def number(value: Any) -> str:
    """A metric value, short: 4 significant figures."""
    if type(value) in (int, float):
        return f"{value:.4g}"
    return _cell(value)


def headline(value: Any) -> str:
    """The preset's headline metric: `name best` once the run ended, `name last (now)` while
    it runs, `name -` before it has a value."""
    if not isinstance(value, dict) or not isinstance(value.get("metric"), str):
        return "-"
    if value.get("value") is not None:
        shown = number(value["value"])
    elif type(value.get("last")) in (int, float):
        shown = f"{number(value['last'])} (now)"
    else:
        shown = "-"
    return f"{_cell(value['metric'], 24)} {shown}"


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
    """One run in detail, as plain text (ops.cli.render_run)."""
    from ops.cli.render_run import detail_text

    return detail_text(run)


# -- colour on a terminal -----------------------------------------------------------------------

STATUS_STYLES = {
    "completed": "green", "running": "cyan", "serving": "cyan",
    "failed": "red", "dead": "red", "invalid": "red", "aborted": "red", "timeout": "red",
    "killed": "yellow", "stalled": "yellow", "unhealthy": "yellow",
    "queued": "blue", "launching": "blue", "starting": "blue",
}


def console(*, err: bool = False) -> Any:
    """A rich console on stdout (or stderr): colour only on a terminal, never with NO_COLOR
    set (rich reads both); long lines are left to the terminal, never cut."""
    from rich.console import Console

    return Console(file=sys.stderr if err else sys.stdout, highlight=False, markup=False,
                   emoji=False, soft_wrap=True)


def status_style(status: str) -> str | None:
    return STATUS_STYLES.get(status.split(" ", 1)[0])


def styled_table(rows: Sequence[Sequence[str]], headers: Sequence[str],
                 status_column: int = 1) -> Any:
    """The same layout as ``table`` as rich Text: a bold header and each status coloured."""
    from rich.text import Text

    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    for number_, row in enumerate([headers, *rows]):
        line = Text(end="")
        for column, (cell, width) in enumerate(zip(row, widths, strict=False)):
            last = column == len(row) - 1
            style = "bold" if number_ == 0 else \
                status_style(cell) if column == status_column else None
            line.append(cell, style=style)
            if not last:
                line.append(" " * (width - len(cell) + 2))
        line.rstrip()
        out.append_text(line)
        if number_ < len(rows):
            out.append("\n")
    return out


def show_runs(runs: Sequence[dict[str, Any]], empty: str) -> None:
    """Print the run table, coloured on a terminal (drawn by rich); piped, the same text
    without importing rich."""
    if not runs:
        click.echo(empty)
    elif wants_colour():
        console().print(styled_table(run_rows(runs), RUN_HEADERS))
    else:
        click.echo(table(run_rows(runs), RUN_HEADERS))


def wants_colour() -> bool:
    """Whether rich would colour stdout: a terminal, or FORCE_COLOR / TTY_COMPATIBLE set."""
    forced = any(os.environ.get(name) for name in ("FORCE_COLOR", "TTY_COMPATIBLE"))
    return forced or sys.stdout.isatty()
