"""Run ids, presets and hosts on the command line: `-N` kept as a run (not an option), and
shell completion of presets, hosts and the host's run ids (click's ``shell_complete``).

Completion must never fail loudly: a broken config or an unreachable host completes nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # imported when a shell asks for completions, not by every command
    from click.shell_completion import CompletionItem

RECENT_ARG_RE = re.compile(r"-[1-9][0-9]{0,5}")
INSTALL_LINE = 'eval "$(_OPS_COMPLETE=bash_source ops)"'


class RunIdCommand(click.Command):
    """A command whose RUN_ID may be `-1` (the newest run), `-2`, ...: such a word is passed
    on as `@1`, `@2` so that click does not read it as an unknown option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, [f"@{a[1:]}" if RECENT_ARG_RE.fullmatch(a) else a
                                        for a in args])


def _loaded(ctx: click.Context) -> Any:
    """The project config during completion (the group's callback has not run then)."""
    from ops.config.loader import load_config

    root = ctx.find_root()
    value = root.params.get("project_config") or os.environ.get("OPS_PROJECT_CONFIG")
    return load_config(Path(value) if value else None)


def _quietly(produce: Callable[[click.Context], list[str]]) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, _param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            names = produce(ctx)
        except Exception:  # noqa: BLE001 - completion offers nothing rather than a traceback
            return []
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]
    return complete


def _presets(ctx: click.Context) -> list[str]:
    return sorted(_loaded(ctx).config.presets)


def _hosts(ctx: click.Context) -> list[str]:
    loaded = _loaded(ctx)
    names = {"local", *loaded.setting("hosts")}
    pods = loaded.repo_root / ".ops" / "pods.json"
    if pods.is_file():
        import json

        doc = json.loads(pods.read_text())
        found = doc.get("pods") if isinstance(doc, dict) else None
        names.update(str(k) for k in (found if isinstance(found, dict) else {}))
    return sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9._@:-]{1,100}", n))


def _run_ids(ctx: click.Context) -> list[str]:
    from ops.services import resolve
    from ops.services.runs import list_runs
    from ops.services.target import open_target

    target = open_target(_loaded(ctx), ctx.params.get("host"))
    try:
        return resolve.usable_ids(resolve.newest_first(list_runs(target)))
    finally:
        target.close()


complete_preset = _quietly(_presets)
complete_host = _quietly(_hosts)
complete_run_id = _quietly(_run_ids)


def run_id_argument(name: str = "run_id", **kwargs: Any) -> Callable[[Any], Any]:
    """A RUN_ID argument: a run id, a unique prefix of one, @last or -N; completes ids."""
    return click.argument(name, shell_complete=complete_run_id, **kwargs)
