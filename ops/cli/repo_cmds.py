"""`ops repo ...`: put the project's code on a host."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ops.cli import render
from ops.cli.context import load, target_for
from ops.config.loader import LoadedConfig
from ops.errors import UsageError
from ops.hosts.ssh import open_host
from ops.services.sync import SyncHost, SyncResult, sync_ref

SCHEMA = "ops.repo_sync/1"


@click.group("repo")
def repo_group() -> None:
    """Code on hosts."""


@repo_group.command("sync")
@click.option("--host", "host_name", default=None,
              help="Host from project.json, an ~/.ssh/config alias or user@host[:port].")
@click.option("--ref", default="HEAD", show_default=True,
              help="Branch, tag, commit, or pr:N (fetched from origin).")
@click.option("--allow-dirty", is_flag=True,
              help="Sync a snapshot of uncommitted changes instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def sync_cmd(ctx: click.Context, host_name: str | None, ref: str, allow_dirty: bool,
             as_json: bool) -> None:
    """Put one commit on the host as an immutable tree under <ops_home>/code/<sha>."""
    loaded = load(ctx)
    with sync_target(loaded, host_name) as (host, ops_home):
        done = sync_command_impl(host, loaded.repo_root, ref, ops_home, allow_dirty)
    if as_json:
        render.echo_json({"schema": SCHEMA, **done.to_json()})
    else:
        click.echo(describe(done))


def sync_command_impl(host: SyncHost, repo_root: Path, ref: str, ops_home: str,
                      allow_dirty: bool) -> SyncResult:
    return sync_ref(host, repo_root, ref, ops_home=ops_home, allow_dirty=allow_dirty)


@contextmanager
def sync_target(loaded: LoadedConfig, name: str | None) -> Iterator[tuple[SyncHost, str]]:
    """The host to sync to and its ops home; an SSH connection is closed afterwards."""
    if name in (None, "local"):
        target = target_for(loaded)
        if not isinstance(target.host, SyncHost):
            raise UsageError(f"host {target.host.name} cannot receive files")
        yield target.host, target.paths.ops_home
        return
    hosts = loaded.config.hosts
    configured = hosts.get(str(name))
    ops_home = (configured.ops_home if configured else None) or loaded.config.project.ops_home
    with open_host(str(name), repo_root=loaded.repo_root, hosts=hosts) as host:
        yield host, ops_home


def describe(done: SyncResult) -> str:
    what = {"present": "already there, nothing sent",
            "mirror": "from the host's mirror, nothing sent",
            "bundle": f"bundle of {done.commits_sent} commit(s), {done.bytes_sent} bytes",
            "archive": f"archive (no git on the host), {done.bytes_sent} bytes"}[done.method]
    head = f"synced {done.ref} ({done.commit[:12]}) to {done.host}: {what}"
    lines = [head, f"  code dir: {done.code_dir}"]
    if done.dirty:
        lines.append(f"  snapshot of uncommitted changes on {done.base_commit[:12]}")
    lines.append(f"  took {done.seconds:.2f} s")
    return "\n".join(lines)
