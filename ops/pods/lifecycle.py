"""`ops pod up` and `ops pod rm`: the lifecycle, each step written to .ops/pods.json first."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.config.loader import LoadedConfig
from ops.errors import ConflictError, HostError, OpsError, UsageError
from ops.hosts.base import call_runner
from ops.pods import bootstrap
from ops.pods.providers import Observed, ProviderCLI, table
from ops.pods.state import PodRecord, PodStore
from ops.pods.wait import Backoff, wait_banner, wait_endpoint
from ops.services.target import forget_runner, open_pod_host, ready_runner

Say = Callable[[str], None]
LIVE = ("launching", "running", "stalled")


@dataclass(frozen=True)
class UpRequest:
    name: str
    provider: str
    gpu: str = "RTX_4090"
    count: int = 1
    max_price: float | None = None
    image: str = "pytorch/pytorch:latest"
    disk_gb: int = 100
    ttl_s: float | None = None
    address: str | None = None
    identity_file: str | None = None
    user: str | None = None
    ops_home: str | None = None
    outputs_dir: str | None = None
    python: str = "python3"
    netrc_path: str = "~/.netrc"
    keep: bool = False
    backoff: Backoff = field(default_factory=Backoff)


def new_label(project: str, name: str) -> str:
    return f"ops-{project}-{name}-{secrets.token_hex(3)}"


def pod_up(loaded: LoadedConfig, req: UpRequest, say: Say) -> PodRecord:
    store = PodStore(loaded.repo_root)
    spec = table(req.provider)
    project = loaded.config.project
    record = PodRecord(
        name=req.name, provider=req.provider, label=new_label(project.name, req.name),
        user=req.user or spec.user, identity_file=req.identity_file, gpu=req.gpu,
        gpu_count=req.count, ops_home=req.ops_home or project.ops_home,
        outputs_dir=req.outputs_dir or project.outputs_dir(), python=req.python,
        netrc_path=req.netrc_path, ttl_s=req.ttl_s)
    if req.provider == "ssh":
        return _adopt(loaded, store, record, req, say)
    cli = ProviderCLI(spec)
    cli.require_installed()  # a missing CLI leaves no record behind
    store.add(record)  # before create: a crash after it is found again by the label
    say(f"{req.name}: requested ({record.label})")
    try:
        instance_id = _create(cli, store, record, req)
    except OpsError as exc:
        store.update(req.name, state="failed", message=exc.message)
        raise
    store.update(req.name, state="provisioning", instance_id=instance_id)
    say(f"{req.name}: provisioning instance {instance_id}")
    try:
        seen = _state_writer(store, req.name, say)
        found = wait_endpoint(cli, instance_id, req.backoff, seen)
        store.update(req.name, host=found.host, port=found.port)
        wait_banner(str(found.host), int(found.port or 0), req.backoff)
    except OpsError as exc:
        _fail(store, cli, req, instance_id, exc=exc, say=say)
        raise
    return _finish(loaded, store, req, say)


def _create(cli: ProviderCLI, store: PodStore, record: PodRecord, req: UpRequest) -> str:
    offer = cli.offer(req.gpu, req.count, req.max_price)
    price = None
    if offer is not None and cli.spec.offer_price:
        value = offer.get(cli.spec.offer_price)
        price = float(value) if isinstance(value, (int, float)) else None
        store.update(record.name, price_per_hour=price,
                     gpu=str(offer.get(cli.spec.offer_gpu or "") or req.gpu))
    values = {
        "offer": offer.get(cli.spec.offer_id) if offer else "", "image": req.image,
        "disk": req.disk_gb, "label": record.label, "gpu": req.gpu, "count": req.count,
        "env_public_key": json.dumps({"PUBLIC_KEY": _public_key(req.identity_file)}),
        "ttl": f"{int(req.ttl_s or 0)}s",
        "ttl_until": _utc_after(req.ttl_s or 0),
    }
    return cli.create(values, ttl=req.ttl_s is not None)


def _state_writer(store: PodStore, name: str, say: Say) -> Callable[[Observed], None]:
    def seen(obs: Observed) -> None:
        record = store.get(name)
        if record.state == "provisioning" and obs.phase in ("booting", "running"):
            store.update(name, state="booting", message=obs.raw_state)
            say(f"{name}: booting ({obs.raw_state})")
        if obs.price_per_hour is not None and record.price_per_hour is None:
            store.update(name, price_per_hour=obs.price_per_hour)
    return seen


def _fail(store: PodStore, cli: ProviderCLI, req: UpRequest, instance_id: str, *,
          exc: OpsError, say: Say) -> None:
    store.update(req.name, state="failed", message=exc.message)
    if req.keep:
        say(f"{req.name}: failed, kept (--keep): {exc.message}")
        return
    say(f"{req.name}: failed, destroying instance {instance_id}: {exc.message}")
    with contextlib.suppress(OpsError):
        cli.destroy(instance_id)
        if _confirm_gone(cli, instance_id):
            store.update(req.name, state="gone", message=f"destroyed after: {exc.message}")


def _adopt(loaded: LoadedConfig, store: PodStore, record: PodRecord, req: UpRequest,
           say: Say) -> PodRecord:
    from ops.hosts.ssh_config import resolve_target

    if not req.address:
        raise UsageError("--provider ssh needs --address (user@host[:port] or an ssh alias)")
    target = resolve_target(req.address)
    record.host, record.port = target.hostname, target.port
    record.user = req.user or target.user
    record.identity_file = req.identity_file or (target.identity_files[0]
                                                 if target.identity_files else None)
    store.add(record)
    store.update(req.name, state="provisioning", instance_id=req.address)
    store.update(req.name, state="booting")
    say(f"{req.name}: adopting {record.address}")
    try:
        wait_banner(record.host, record.port, req.backoff)
    except OpsError as exc:
        store.update(req.name, state="failed", message=exc.message)
        raise
    return _finish(loaded, store, req, say)


def _finish(loaded: LoadedConfig, store: PodStore, req: UpRequest, say: Say) -> PodRecord:
    """SSH answers: trust its key once, run one command, bootstrap, mark ready."""
    record = store.get(req.name)
    host = open_pod_host(store.known_hosts(req.name), record, accept_new=True,
                         retry_for=min(req.backoff.timeout_s, 120.0))
    try:
        host.exec(["true"], timeout=60)
        store.update(req.name, state="ssh_ready")
        say(f"{req.name}: ssh ready at {record.address}")
        done = bootstrap.bootstrap(loaded, host, record)
        store.update(req.name, state="bootstrapped", ops_home=done.ops_home,
                     outputs_dir=done.outputs_dir)
        say(f"{req.name}: bootstrapped ({'; '.join(done.actions)})")
        say(f"{req.name}: {_preflight_line(host, done.outputs_dir)}")
        return store.update(req.name, state="ready", message=None)
    except OpsError as exc:
        store.update(req.name, state="failed", message=exc.message)
        raise
    finally:
        host.close()


def _preflight_line(host: Any, outputs: str) -> str:
    """One line of the pod's preflight; its failures are shown, not fatal (a preset's own
    needs are checked again by submit)."""
    doc = call_runner(host, ["preflight", "--json", "--outputs-root", outputs], timeout=120)
    bad = [f"{c.get('name')}: {c.get('detail')}" for c in doc.get("checks") or []
           if isinstance(c, dict) and c.get("status") == "fail"]
    return (f"preflight {doc.get('status')} (profile {doc.get('profile')}, "
            f"{doc.get('gpu_model')})" + (f"; failed: {'; '.join(bad)}" if bad else ""))


def _confirm_gone(cli: ProviderCLI, instance_id: str, tries: int = 10) -> bool:
    for attempt in range(tries):
        if cli.describe(instance_id).phase == "gone":
            return True
        time.sleep(min(5.0, 0.2 * (attempt + 1)))
    return False


# -- rm -------------------------------------------------------------------------------------

@dataclass
class RmResult:
    name: str
    destroyed: str | None = None
    scrubbed: bool = False
    notes: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema": "ops.pod_rm/1", "name": self.name, "destroyed": self.destroyed,
                "scrubbed": self.scrubbed, "notes": self.notes or []}


def pod_rm(loaded: LoadedConfig, name: str, *, force: bool, say: Say) -> RmResult:
    store = PodStore(loaded.repo_root)
    record = store.get(name)
    result = RmResult(name, notes=[])
    if record.address and record.state not in ("gone",):
        result.scrubbed = _check_and_scrub(loaded, store, record, force, result)
    if record.provider != "ssh" and record.state != "gone":
        try:
            result.destroyed = _destroy(record, say, result)
        except UsageError as exc:  # the provider's CLI is gone: only --force forgets the pod
            if not force:
                raise
            assert result.notes is not None  # noqa: S101 - set above
            result.notes.append(f"not destroyed: {exc.message}; check {record.provider}'s "
                                f"console for label {record.label}")
    shutil.rmtree(store.pod_dir(name), ignore_errors=True)  # its known_hosts: forgotten
    forget_runner(loaded.repo_root, name)
    store.remove(name)
    return result


def _check_and_scrub(loaded: LoadedConfig, store: PodStore, record: PodRecord, force: bool,
                     result: RmResult) -> bool:
    try:
        host = open_pod_host(store.known_hosts(record.name), record, accept_new=False,
                             retry_for=10.0)
    except OpsError as exc:
        return _unreachable(exc, force, result)
    try:
        blockers = _blocking_runs(loaded, host, record)
        if blockers and not force:
            raise ConflictError(f"pod {record.name!r} still has runs that would be lost",
                                details=blockers,
                                hint="fetch them (`ops run fetch RUN -H POD`) or cancel them; "
                                     "--force destroys the pod anyway")
        bootstrap.scrub(host, record)
        return True
    except HostError as exc:
        return _unreachable(exc, force, result)
    finally:
        host.close()


def _unreachable(exc: OpsError, force: bool, result: RmResult) -> bool:
    if not force:
        raise HostError(f"cannot reach the pod to check its runs and scrub credentials: "
                        f"{exc.message}", hint="--force destroys it without that") from exc
    assert result.notes is not None  # noqa: S101 - set by pod_rm
    result.notes.append(f"not scrubbed (unreachable): {exc.message}")
    return False


def _blocking_runs(loaded: LoadedConfig, host: Any, record: PodRecord) -> list[str]:
    """Runs that are live, or ended but never fetched here (their record dies with the pod)."""
    if record.state in ("requested", "provisioning", "booting", "ssh_ready"):
        return []  # never bootstrapped: nothing could have been submitted to it
    outputs = host.expand(record.outputs_dir or loaded.config.project.outputs_dir())
    ops_home = host.expand(record.ops_home or loaded.config.project.ops_home)
    ready_runner(loaded, host, record.name, ops_home, record.python)  # the uploaded build
    answer = call_runner(host, ["status", outputs])
    runs = [r for r in answer.get("runs") or [] if isinstance(r, dict)]
    artifacts = loaded.artifacts_root
    blockers = []
    for run in runs:
        run_id, status = str(run.get("run_id")), str(run.get("status"))
        if status in LIVE:
            blockers.append(f"{run_id}: {status}")
        elif not (artifacts / run_id / "summary.json").is_file():
            blockers.append(f"{run_id}: {status}, never fetched")
    return blockers


def _destroy(record: PodRecord, say: Say, result: RmResult) -> str | None:
    cli = ProviderCLI(table(record.provider))
    instance_id = record.instance_id
    if instance_id is None:  # the create's answer was lost: find the instance by its label
        found = cli.by_label(record.label)
        if found is None:
            assert result.notes is not None  # noqa: S101
            result.notes.append(f"no instance labelled {record.label} at {record.provider}")
            return None
        instance_id = str(found.get(cli.spec.id_field))
        say(f"{record.name}: found instance {instance_id} by its label {record.label}")
    cli.destroy(instance_id)
    if not _confirm_gone(cli, instance_id):
        raise HostError(f"{record.provider} still lists instance {instance_id} after destroy",
                        hint="check the provider's console; it may still bill")
    say(f"{record.name}: instance {instance_id} destroyed (confirmed gone)")
    return instance_id


def _public_key(identity_file: str | None) -> str:
    if not identity_file:
        return ""
    pub = Path(identity_file).expanduser().with_suffix(".pub")
    with contextlib.suppress(OSError):
        return pub.read_text().strip()
    return ""


def _utc_after(seconds: float) -> str:
    when = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
