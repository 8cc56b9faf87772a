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
    head = (f"submitted sweep {done.sweep_id} on {done.host}: {len(done.run_ids)} runs, "
            "one after another" if done.sweep_id else f"submitted {done.run_id} on {done.host}")
    lines = [head]
    if done.parent_run_id:
        lines.append(f"  resumes: {done.parent_run_id}")
    lines += [f"  run dir: {d}" for d in done.run_dirs]
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


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = [[r["run_id"], str(r.get("status")), _num(r.get("preset")), _num(r.get("step")),
             _num(r.get("started_at") or r.get("created_at")),
             "yes" if r.get("tmux_alive") else "no"] for r in runs]
    return table(rows, ["RUN", "STATUS", "PRESET", "STEP", "STARTED", "TMUX"])


def run_detail(run: dict[str, Any]) -> str:
    keys = ["run_id", "status", "reason", "preset", "kind", "run_dir", "created_at",
            "started_at", "ended_at", "elapsed_s", "exit_code", "phase", "step",
            "heartbeat_age_s", "rss_bytes", "gpu_memory_bytes", "tmux_session", "tmux_alive"]
    lines = [f"{k:17} {run[k]}" for k in keys if run.get(k) is not None]
    failure = run.get("failure")
    if failure:
        lines.append(f"{'failure':17} {failure.get('class')}: {failure.get('message')}")
    for name, value in sorted((run.get("metrics_final") or {}).items()):
        lines.append(f"  {name:15} {value:g}")
    lines += [f"note: {n}" for n in run.get("notes", [])]
    return "\n".join(lines)
