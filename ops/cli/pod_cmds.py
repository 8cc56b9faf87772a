"""`ops pod ...`: rent (or adopt) a machine, look at it, give it back."""

from __future__ import annotations

import re

import click

from ops.cli import render
from ops.cli.context import host_options, load, target_for
from ops.errors import ExitCode, UsageError
from ops.pods import inspect, lifecycle
from ops.pods.providers import TABLES
from ops.pods.wait import Backoff
from ops.services import preflight

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None) -> float | None:
    if text is None:
        return None
    match = _DURATION.match(text.strip())
    if not match:
        raise UsageError(f"not a duration: {text!r}", hint="e.g. 90m, 8h, 2d")
    return float(match[1]) * _UNIT_S[match[2]]


@click.group("pod")
def pod_group() -> None:
    """Pods: provision or adopt, inspect, destroy."""


@pod_group.command("up")
@click.argument("name", default="pod")
@click.option("--provider", type=click.Choice(sorted(TABLES)), required=True)
@click.option("--gpu", default="RTX_4090", show_default=True, help="GPU model.")
@click.option("--count", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--max-price", type=float, default=None, help="Most $/h to pay.")
@click.option("--image", default="pytorch/pytorch:latest", show_default=True)
@click.option("--disk", type=click.IntRange(1, 100000), default=100, show_default=True,
              help="Disk in GB.")
@click.option("--ttl", default=None, help="Self-destruct after this long (e.g. 8h).")
@click.option("--address", default=None, help="--provider ssh: user@host[:port] or an alias.")
@click.option("--identity", "identity_file", default=None, type=click.Path(),
              help="SSH private key for the pod (its .pub is given to the provider).")
@click.option("--user", default=None, help="SSH user (default: the provider's, root).")
@click.option("--ops-home", default=None, help="ops home on the pod (default: project's).")
@click.option("--outputs-dir", default=None, help="Outputs root on the pod.")
@click.option("--python", default="python3", show_default=True,
              help="Interpreter on the pod that runs the runner.")
@click.option("--netrc-path", default="~/.netrc", show_default=True,
              help="Where the pod's W&B client reads its netrc.")
@click.option("--timeout", type=float, default="900", show_default=True,
              help="Seconds to wait for the pod to boot and answer SSH.")
@click.option("--keep", is_flag=True, help="Keep a pod that fails to boot (default: destroy).")
@click.option("--json", "as_json", is_flag=True, help="Print the pod record as JSON (ops.pod/1).")
@click.pass_context
def up_cmd(ctx: click.Context, name: str, provider: str, gpu: str, count: int,
           max_price: float | None, image: str, disk: int, ttl: str | None,
           address: str | None, identity_file: str | None, user: str | None,
           ops_home: str | None, outputs_dir: str | None, python: str, netrc_path: str,
           timeout: float, keep: bool, as_json: bool) -> None:
    """Provision a pod (or adopt an SSH host), wait for SSH, bootstrap it."""
    req = lifecycle.UpRequest(
        name=name, provider=provider, gpu=gpu, count=count, max_price=max_price, image=image,
        disk_gb=disk, ttl_s=parse_duration(ttl), address=address, identity_file=identity_file,
        user=user, ops_home=ops_home, outputs_dir=outputs_dir, python=python,
        netrc_path=netrc_path, keep=keep, backoff=Backoff(timeout_s=timeout))
    record = lifecycle.pod_up(load(ctx), req, lambda line: click.echo(line, err=True))
    if as_json:
        render.echo_json({"schema": "ops.pod/1", **inspect.row(record)})
    else:
        click.echo(f"{record.name}: {record.state} at {record.address}")


@pod_group.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print the pods as JSON (ops.pod_list/1).")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every pod this project knows, one line each.

    State, GPU, $/h, cost so far, age and TTL left."""
    rows = inspect.list_rows(load(ctx))
    if as_json:
        render.echo_json({"schema": "ops.pod_list/1", "pods": rows})
        return
    click.echo(pod_table(rows))


def pod_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no pods"
    head = ("NAME", "PROVIDER", "STATE", "GPU", "$/H", "COST", "AGE", "TTL LEFT")
    lines = [head] + [(str(r["name"]), str(r["provider"]), str(r["state"]), str(r["gpu"] or "-"),
                       _money(r["price_per_hour"]), _money(r["cost_so_far"]),
                       _age(r["age_s"]), _age(r["ttl_left_s"])) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _money(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _age(value: object) -> str:
    if not isinstance(value, (int, float)):
        return "-"
    seconds = int(value)
    if seconds < 0:
        return "expired"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@pod_group.command("status")
@click.argument("name", default="pod")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status_cmd(ctx: click.Context, name: str, as_json: bool) -> None:
    """One pod's health: reachable, state, GPUs, disk, RAM, runs.

    Reachability, provider state, GPUs, disk at the outputs root, RAM, load and runs."""
    doc = inspect.pod_status(load(ctx), name)
    if as_json:
        render.echo_json(doc)
        return
    for key, value in doc.items():
        if key != "schema" and value is not None:
            click.echo(f"{key}: {value}")


@pod_group.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("name", default="pod")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def ssh_cmd(ctx: click.Context, name: str, command: tuple[str, ...]) -> None:
    """A shell on the pod, or one command (after --), with the system ssh."""
    inspect.exec_ssh(inspect.ssh_argv(load(ctx), name, command))


@pod_group.command("rm")
@click.argument("name", default="pod")
@click.option("--force", is_flag=True,
              help="Destroy even with live or unfetched runs, or when unreachable.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_context
def rm_cmd(ctx: click.Context, name: str, force: bool, as_json: bool) -> None:
    """Destroy a pod once no run on it is live or unfetched.

    Refuses while runs are live or unfetched; scrubs credentials; destroys and confirms."""
    done = lifecycle.pod_rm(load(ctx), name, force=force,
                            say=lambda line: click.echo(line, err=True))
    if as_json:
        render.echo_json(done.to_json())
    else:
        click.echo(f"{name}: removed" + (f" (instance {done.destroyed} destroyed)"
                                        if done.destroyed else ""))
        for note in done.notes or []:
            click.echo(f"  note: {note}")


@click.command("preflight")
@click.option("--preset", "-p", default=None, help="Also check what this preset needs.")
@click.option("--json", "as_json", is_flag=True, help="Print every check as JSON.")
@host_options
@click.pass_context
def preflight_command(ctx: click.Context, preset: str | None, as_json: bool, host: str | None,
                      accept_new: bool) -> None:
    """Check that the host can run a preset: pass, warn or fail.

    GPU, RAM, disk, swap, tools, packages, data and W&B, each with a hint."""
    loaded = load(ctx)
    doc = preflight.run_preflight(loaded, target_for(ctx, loaded, host, accept_new), preset)
    if as_json:
        render.echo_json(doc)
    else:
        click.echo(preflight.preflight_text(doc))
    if doc.get("status") == "fail":
        ctx.exit(ExitCode.PREFLIGHT)
