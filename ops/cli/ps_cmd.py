"""`ops ps`: the newest runs at a glance, and `--watch` to keep that table fresh.

`ops run list` shares the table and its filters; this is its short form.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ops.cli.context import host_options, load, target_for

if TYPE_CHECKING:
    from ops.services import resolve

STATUSES = ("launching", "queued", "running", "stalled", "starting", "serving", "unhealthy",
            "completed", "failed", "killed", "timeout", "aborted", "dead", "invalid")
PS_LIMIT = 10

F = TypeVar("F", bound=Callable[..., Any])


def table_options(default_limit: int | None) -> Callable[[F], F]:
    """--status, --preset, --since and -n, the filters of the run table."""
    def add(func: F) -> F:
        func = click.option("-n", "--limit", type=click.IntRange(min=1), default=default_limit,
                            show_default=default_limit is not None,
                            help="Show at most N runs (the newest).")(func)
        func = click.option("--since", default=None, metavar="AGE",
                            help="Only runs started within AGE (2d, 12h, 30m, 1w) or since a "
                                 "date (2026-01-31).")(func)
        func = click.option("--preset", "presets", multiple=True, metavar="GLOB",
                            shell_complete=_complete_preset,
                            help="Only runs of this preset (a glob; repeatable).")(func)
        return click.option("--status", "statuses", multiple=True,
                            type=click.Choice(STATUSES),
                            help="Only runs with this status (repeatable).")(func)
    return add


def _complete_preset(ctx: click.Context, param: click.Parameter, incomplete: str) -> Any:
    from ops.cli.run_args import complete_preset

    return complete_preset(ctx, param, incomplete)


@click.command("ps")
@table_options(PS_LIMIT)
@click.option("-w", "--watch", is_flag=True,
              help="Redraw the table every --interval seconds until Ctrl-C (in place on a "
                   "terminal; piped, one table after another).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              metavar="SECONDS", help="Seconds between two redraws of --watch.")
@host_options
@click.pass_context
def ps_command(ctx: click.Context, statuses: tuple[str, ...], presets: tuple[str, ...],
               since: str | None, limit: int | None, watch: bool, interval: float,
               host: str | None, accept_new: bool) -> None:
    """The newest runs, one line each.

    The short form of `ops run list` (10 runs by default); --watch keeps it fresh."""
    from ops.services import resolve

    target = target_for(ctx, load(ctx), host, accept_new)
    chosen = resolve.TableFilter(statuses, presets, since, limit)
    if watch:
        watch_runs(lambda: resolve.listing(target, chosen), interval)
    else:
        show_listing(resolve.listing(target, chosen))


def show_listing(found: resolve.Listing) -> None:
    from ops.cli import render

    render.show_runs(found.runs, found.empty_text())


def _frame(produce: Callable[[], resolve.Listing], interval: float) -> Any:
    """One redraw: a header line and the table; a host that fails this once (a dropped
    connection) is shown as such, and the next redraw asks again."""
    from rich.text import Text

    from ops.cli import render
    from ops.errors import HostError

    try:
        found = produce()
    except HostError as exc:
        return Text(f"{time.strftime('%H:%M:%S')}, every {interval:g}s (Ctrl-C to stop)\n"
                    f"the host did not answer: {exc.message} (asking again)", end="")
    head = Text(f"{time.strftime('%H:%M:%S')}, every {interval:g}s (Ctrl-C to stop): "
                f"{found.where}\n", style="dim", end="")
    body = render.styled_table(render.run_rows(found.runs), render.RUN_HEADERS) \
        if found.runs else Text(found.empty_text())
    return Text.assemble(head, body)


def watch_runs(produce: Callable[[], resolve.Listing], interval: float,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Redraw the table until Ctrl-C: in place on a terminal (rich's Live), one table after
    another when piped. Ctrl-C is the way out, so it ends quietly with exit 0."""
    from ops.cli import render

    out = render.console()
    try:
        if out.is_terminal:
            from rich.live import Live

            with Live(console=out, auto_refresh=False, redirect_stderr=False) as live:
                while True:
                    live.update(_frame(produce, interval), refresh=True)
                    sleep(interval)
        while True:
            out.print(_frame(produce, interval))
            out.print()
            sys.stdout.flush()
            sleep(interval)
    except KeyboardInterrupt:
        return
