"""`ops repo ...`: put the project's code on a host."""

from __future__ import annotations

import click

from ops.cli import render
from ops.cli.context import host_options, load, target_for
from ops.services.sync import SyncResult, sync_ref
from ops.services.target import file_host

SCHEMA = "ops.repo_sync/1"


@click.group("repo")
def repo_group() -> None:
    """Code on hosts."""


@repo_group.command("sync")
@host_options
@click.option("--ref", default="HEAD", show_default=True,
              help="Branch, tag, commit, or pr:N (fetched from origin).")
@click.option("--allow-dirty", is_flag=True,
              help="Sync a snapshot of uncommitted changes instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def sync_cmd(ctx: click.Context, host: str | None, accept_new: bool, ref: str,
             allow_dirty: bool, as_json: bool) -> None:
    """Put one commit on the host as an immutable tree.

    The tree is <ops_home>/code/<sha>; only the commits the host lacks are sent."""
    loaded = load(ctx)
    target = target_for(ctx, loaded, host, accept_new, need_runner=False)
    done = sync_ref(file_host(target.host), loaded.repo_root, ref,
                    ops_home=target.paths.ops_home, allow_dirty=allow_dirty)
    if as_json:
        render.echo_json({"schema": SCHEMA, **done.to_json()})
    else:
        click.echo(describe(done))



def describe(done: SyncResult) -> str:
    sent = f"{done.bytes_sent} bytes sent" if done.bytes_sent else "nothing sent"
    what = {"present": f"already there, {sent}",
            "mirror": f"the host's mirror had it, {sent}",
            "bundle": f"bundle of {done.commits_sent} commit(s), {sent}",
            "archive": f"tar.gz archive (no git on the host), {sent}"}[done.method]
    lines = [f"synced {done.ref} ({done.commit[:12]}) to {done.host}: {what}",
             f"  code dir: {done.code_dir}"]
    if done.dirty:
        lines.append(f"  snapshot of uncommitted changes on {done.base_commit[:12]}")
    if done.reused_tree:
        lines.append(f"  built from the tree of {done.reused_tree[:12]}")
    lines.append(f"  took {done.seconds:.2f} s")
    return "\n".join(lines)
