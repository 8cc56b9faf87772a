"""The text of `ops run status`: one run in detail, or what is live on the host now.

Every value comes from a run dir, which is untrusted: each one goes through ``printable``
(control characters escaped, long text clipped) before it reaches the terminal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from ops.cli import render
from ops.report.detail import FOLD_KEY_RE, fold_table, printable

KEY_WIDTH = 14
LIVE = ("launching", "queued", "running", "stalled", "starting", "serving", "unhealthy")
TRACEBACK_LINES = 15


def _kv(lines: list[str], key: str, value: Any) -> None:
    if value is not None and value != "":
        lines.append(f"{key:{KEY_WIDTH}} {printable(value)}")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _status(run: dict[str, Any]) -> str:
    status = printable(run.get("status"), 40)
    return f"{status}: {printable(run['reason'])}" if run.get("reason") else status


def _times(lines: list[str], run: dict[str, Any]) -> None:
    for key, field in (("started", "started_at"), ("ended", "ended_at")):
        if run.get(field) is not None:
            _kv(lines, key, f"{render.local_time(run[field])} ({printable(run[field], 40)})")
    seconds = run.get("elapsed_s", run.get("duration_s"))
    if render.duration(seconds) != "-":
        _kv(lines, "elapsed", render.duration(seconds))
    _kv(lines, "exit code", run.get("exit_code"))


def _heartbeat(lines: list[str], run: dict[str, Any]) -> None:
    """Step and phase from the same heartbeat record, and the memory it measured."""
    beat = _dict(run.get("heartbeat")) or {k: run.get(k) for k in (
        "step", "phase", "rss_bytes", "gpu_memory_bytes")}
    age = beat.get("age_s", run.get("heartbeat_age_s"))
    ended = run.get("status") not in LIVE
    step, phase = beat.get("step"), shown_phase(beat.get("phase"), beat.get("step"), ended)
    if step is not None or phase is not None:
        when = f"{render.duration(age)} ago" if render.duration(age) != "-" else "age unknown"
        what = f"step {printable(step, 24)}" if step is not None else "no step yet"
        lead = "last " if ended else ""
        _kv(lines, "heartbeat", f"{lead}{what}, phase {printable(phase, 40)} ({when})")
    if ended:
        return  # the memory of a process that has gone says nothing now
    memory = [f"{label} {render.size(beat.get(key))}" for label, key in (
        ("RSS", "rss_bytes"), ("GPU", "gpu_memory_bytes")) if beat.get(key) is not None]
    _kv(lines, "memory", ", ".join(memory))


def shown_phase(phase: Any, step: Any, ended: bool) -> str | None:
    """The phase that goes with the step: `ended` once the run has, `running` for a workload
    that reports steps but no phase of its own (its heartbeat still says `starting`)."""
    if ended:
        return "ended"
    if phase == "starting" and step is not None:
        return "running"
    return printable(phase, 40) if phase is not None else None


def _service(lines: list[str], run: dict[str, Any]) -> None:
    block = _dict(run.get("service"))
    if not block:
        return
    parts = [f"port {block.get('port')}"] if block.get("port") is not None else []
    if block.get("last_status_code") is not None:
        latency = block.get("last_latency_ms")
        parts.append(f"HTTP {block['last_status_code']}" +
                     (f" in {latency:.1f} ms" if type(latency) in (int, float) else ""))
    if block.get("requests") is not None:
        parts.append(f"{block['requests']} requests")
    for label, key in (("ready since", "ready_at"), ("last probe", "last_probe_at")):
        if block.get(key):
            parts.append(f"{label} {render.local_time(block[key])}")
    if block.get("last_error"):
        parts.append(f"last error: {block['last_error']}")
    _kv(lines, "service", ", ".join(parts))


def _failure(lines: list[str], run: dict[str, Any]) -> None:
    failure = run.get("failure")
    if failure is None:
        return
    if not isinstance(failure, dict):
        _kv(lines, "failure", failure)
        return
    _kv(lines, "failure", f"{printable(failure.get('class'), 100)}: "
                          f"{printable(failure.get('message'))}")
    trace = failure.get("traceback_tail")
    if isinstance(trace, str) and trace.strip():
        shown = trace.rstrip().splitlines()[-TRACEBACK_LINES:]
        lines.append(f"traceback (last {len(shown)} lines):")
        lines += [f"  | {printable(line, 300)}" for line in shown]


def _metrics(lines: list[str], run: dict[str, Any]) -> None:
    """Final values beside the best ones (with the preset's direction), folds as a table."""
    finals, bests = _dict(run.get("metrics_final")), _dict(run.get("metrics_best"))
    rules = _dict(run.get("best_rules"))
    table = fold_table(finals)
    in_table = {k for k in finals if FOLD_KEY_RE.fullmatch(str(k))} if table else set()
    names = [k for k in dict.fromkeys([*finals, *bests]) if k not in in_table and "/" not in k]
    hidden = sum(1 for k in finals if "/" in k and k not in in_table)
    if not (table or names):
        return
    lines.append("metrics:")
    lines += [f"  {line}" for line in table]
    if names:
        lines.append(f"  {'':20} {'final':>12}  {'best':>12}")
    for name in names:
        best = _value(bests, name)
        goal = f" ({rules[name]})" if best and rules.get(name) in ("min", "max") else ""
        lines.append(f"  {printable(name, 40):20} {_value(finals, name):>12}  "
                     f"{best:>12}{goal}".rstrip())
    if hidden:
        lines.append(f"  ({hidden} more per-fold values: --json)")


def _value(values: dict[str, Any], name: str) -> str:
    if name not in values:
        return ""
    return "non-finite" if values[name] is None else render.number(values[name])


def detail_text(run: dict[str, Any]) -> str:
    """One run in detail, as plain text."""
    lines: list[str] = []
    _kv(lines, "run", run.get("run_id"))
    _kv(lines, "status", _status(run))
    for key in ("preset", "kind", "run_dir", "parent_run_id"):
        _kv(lines, key, run.get(key))
    _times(lines, run)
    _heartbeat(lines, run)
    _run_context(lines, run)
    _service(lines, run)
    _failure(lines, run)
    if "gpus_now" in run:
        gpus = _list(run.get("gpus_now"))
        _kv(lines, "gpus now", "; ".join(f"{_dict(g).get('index')}: {_dict(g).get('name')}"
                                         for g in gpus) or "none visible")
    _metrics(lines, run)
    tail = _list(run.get("stdout_tail"))
    if tail:
        lines.append(f"stdout.log (last {len(tail)} lines):")
        lines += [f"  | {printable(line, 300)}" for line in tail]
    lines += [f"note: {printable(n)}" for n in _list(run.get("notes"))]
    return "\n".join(lines)


def _run_context(lines: list[str], run: dict[str, Any]) -> None:
    git = _dict(run.get("git"))
    if isinstance(git.get("commit"), str):
        _kv(lines, "git", git["commit"][:12] + ("*" if git.get("dirty") else ""))
    wandb = _dict(run.get("wandb"))
    _kv(lines, "wandb", " ".join(str(wandb[k]) for k in ("run_id", "url") if wandb.get(k)))
    if run.get("tmux_session"):
        _kv(lines, "tmux", f"{run['tmux_session']} "
                           f"({'alive' if run.get('tmux_alive') is True else 'gone'})")
    _kv(lines, "slurm job", run.get("slurm_job_id"))


def show_detail(run: dict[str, Any]) -> None:
    """Print one run in detail, its status coloured on a terminal."""
    from rich.text import Text

    text = Text(detail_text(run), end="")
    status = run.get("status")
    style = render.status_style(status) if isinstance(status, str) else None
    prefix = f"{'status':{KEY_WIDTH}} "
    start = text.plain.find("\n" + prefix)
    if style and start >= 0:
        begin = start + 1 + len(prefix)
        text.stylize(style, begin, begin + len(printable(status, 40)))
    render.console().print(text)


def show_live(runs: Sequence[dict[str, Any]], where: str) -> None:
    """The live runs as the run table, then how many runs have ended, by status."""
    live = [r for r in runs if r.get("status") in LIVE]
    ended = Counter(str(r.get("status")) for r in runs if r.get("status") not in LIVE)
    render.show_runs(live, f"no live runs in {where}")
    if ended:
        counts = ", ".join(f"{n} {printable(s, 20)}" for s, n in ended.most_common())
        click.echo(f"ended: {counts} (ops run list shows them)")
