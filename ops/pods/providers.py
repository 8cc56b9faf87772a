"""Providers as data: one table per provider, one adapter that reads any table.

Each table says how to call the provider's own CLI (argv templates, run without a shell),
which JSON fields hold the id, the state, the price and the SSH endpoint, and how the
provider's states map onto ours (`booting`, `running`, `failed`, `gone`). A new provider is
a new table. Field names follow what the CLIs print: vast.ai `vastai ... --raw` (vast-cli's
vast.py), RunPod `runpodctl pod get` (api.Pod plus its `ssh` block), Lium `lium ps --format
json` (the Lium API's pod objects: pod_name, status, ssh_connect_cmd).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ops.errors import HostError, UsageError

CLI_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Endpoint:
    """Where the SSH endpoint is in a describe answer: host and port fields (dotted paths,
    `ports.22/tcp.0.HostPort` style), or a regex over one field (named groups host, port)."""

    host: str | None = None
    port: str | None = None
    regex_field: str | None = None
    regex: str | None = None


@dataclass(frozen=True)
class ProviderTable:
    name: str
    binary: str | None  # None: no CLI (adopt a machine you have)
    user: str = "root"
    search: tuple[str, ...] = ()  # argv for offers; empty: create takes the GPU directly
    offer_id: str = "id"
    offer_price: str | None = None
    offer_gpu: str | None = None
    create: tuple[str, ...] = ()
    ttl_args: tuple[str, ...] = ()  # appended when --ttl is given and the provider has one
    ttl_timer: str | None = None  # else: a pod-side shell line started at bootstrap
    created_id: str | None = None  # field of create's answer; None: the label is the id
    describe: tuple[str, ...] = ()  # argv for one instance; empty: find it in `list`
    list_all: tuple[str, ...] = ()
    list_key: str | None = None  # the list under this key of list's answer (None: top level)
    label_field: str = "label"
    id_field: str = "id"
    state_field: str = "status"
    states: Mapping[str, str] = field(default_factory=dict)
    gone_if_null: str | None = None  # describe answers {<this>: null} for a gone instance
    gone_error: str | None = None  # describe fails with this text for a gone instance
    price_field: str | None = None
    endpoints: tuple[Endpoint, ...] = ()
    destroy: tuple[str, ...] = ()


VAST = ProviderTable(
    name="vast", binary="vastai",
    search=("vastai", "search", "offers",
            "gpu_name={gpu_query} num_gpus={count} dph_total<={max_price} rentable=true",
            "-o", "dph_total", "--raw"),
    offer_price="dph_total", offer_gpu="gpu_name",
    create=("vastai", "create", "instance", "{offer}", "--image", "{image}", "--disk", "{disk}",
            "--ssh", "--direct", "--label", "{label}",
            "--onstart-cmd", "touch ~/.no_auto_tmux", "--raw"),
    created_id="new_contract",
    describe=("vastai", "show", "instance", "{id}", "--raw"),
    list_all=("vastai", "show", "instances", "--raw"),
    label_field="label", id_field="id", state_field="actual_status",
    states={"loading": "booting", "created": "booting", "scheduling": "booting",
            "running": "running", "exited": "failed", "offline": "failed",
            "unknown": "booting"},
    gone_if_null="instances", price_field="dph_total",
    endpoints=(Endpoint(host="public_ipaddr", port="ports.22/tcp.0.HostPort"),
               Endpoint(host="ssh_host", port="ssh_port")),
    destroy=("vastai", "destroy", "instance", "{id}", "-y"),
    # vast gives every instance its id and a key scoped to it in the environment
    ttl_timer=("sleep {ttl_s}; vastai destroy instance \"$CONTAINER_ID\" -y "
               "--api-key \"$CONTAINER_API_KEY\""),
)

RUNPOD = ProviderTable(
    name="runpod", binary="runpodctl",
    create=("runpodctl", "pod", "create", "--name", "{label}", "--image", "{image}",
            "--gpu-id", "{gpu}", "--gpu-count", "{count}", "--container-disk-in-gb", "{disk}",
            "--ports", "22/tcp", "--public-ip", "--env", "{env_public_key}"),
    ttl_args=("--terminate-after", "{ttl_until}"),
    created_id="id",
    describe=("runpodctl", "pod", "get", "{id}"),
    list_all=("runpodctl", "pod", "list", "--all"),
    label_field="name", id_field="id", state_field="desiredStatus",
    states={"CREATED": "booting", "RESTARTING": "booting", "RUNNING": "running",
            "EXITED": "failed", "TERMINATED": "gone"},
    gone_error="not found", price_field="costPerHr",
    endpoints=(Endpoint(host="ssh.ip", port="ssh.port"),),
    destroy=("runpodctl", "pod", "delete", "{id}"),  # never stop: a stopped pod bills its disk
)

LIUM = ProviderTable(
    name="lium", binary="lium",
    search=("lium", "ls", "{gpu}", "--format", "json"),
    offer_id="huid", offer_price="price_per_hour", offer_gpu="machine_name",
    create=("lium", "up", "{offer}", "--name", "{label}", "--image", "{image}", "--yes"),
    ttl_args=("--ttl", "{ttl}"),
    created_id=None,
    list_all=("lium", "ps", "--format", "json"),
    label_field="pod_name", id_field="pod_name", state_field="status",
    states={"PENDING": "booting", "STARTING": "booting", "RUNNING": "running",
            "FAILED": "failed", "STOPPED": "failed", "DELETED": "gone"},
    price_field="price_per_hour",
    endpoints=(Endpoint(regex_field="ssh_connect_cmd",
                        regex=r"ssh\s+(?:\S+@)?(?P<host>[^\s@]+)\s+-p\s+(?P<port>\d+)"),),
    destroy=("lium", "rm", "{id}", "--yes"),
)

SSH = ProviderTable(name="ssh", binary=None)

TABLES: dict[str, ProviderTable] = {t.name: t for t in (VAST, RUNPOD, LIUM, SSH)}


def table(name: str) -> ProviderTable:
    if name not in TABLES:
        raise UsageError(f"unknown provider {name!r}", hint=f"one of: {', '.join(TABLES)}")
    return TABLES[name]


def dig(doc: Any, path: str) -> Any:
    """A dotted path into JSON (`ports.22/tcp.0.HostPort`); None where it is missing."""
    for part in path.split("."):
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


@dataclass(frozen=True)
class Observed:
    """What describe said about an instance, in our words."""

    phase: str  # booting, running, failed, gone
    raw_state: str | None = None
    host: str | None = None
    port: int | None = None
    price_per_hour: float | None = None
    message: str | None = None


class ProviderCLI:
    """Runs one provider's CLI as the table says; every answer is parsed JSON."""

    def __init__(self, spec: ProviderTable):
        self.spec = spec

    def require_installed(self) -> str:
        binary = self.spec.binary
        if binary is None or shutil.which(binary) is None:
            raise UsageError(f"{binary or self.spec.name} is not installed or not on PATH",
                             hint=f"see docs/how-to/pods-{self.spec.name}.md")
        return binary

    def _run(self, template: Sequence[str], values: Mapping[str, Any],
             *, check: bool = True) -> tuple[int, Any, str]:
        binary = self.require_installed()
        argv = [part.format(**values) for part in template]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostError(f"{binary} failed to run: {exc}") from exc
        try:
            doc = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            doc = None
        if check and proc.returncode != 0:
            raise HostError(f"`{' '.join(argv[:3])}` exited with {proc.returncode}",
                            details=(proc.stderr or proc.stdout).strip().splitlines()[-5:])
        return proc.returncode, doc, proc.stderr

    def offer(self, gpu: str, count: int, max_price: float | None) -> dict[str, Any] | None:
        """The cheapest offer that fits, or None when the provider takes the GPU in create."""
        if not self.spec.search:
            return None
        values = {"gpu": gpu, "gpu_query": gpu.replace(" ", "_"), "count": count,
                  "max_price": max_price if max_price is not None else 1e9}
        _, doc, _ = self._run(self.spec.search, values)
        offers = doc if isinstance(doc, list) else []
        fitting = [o for o in offers if isinstance(o, dict) and o.get(self.spec.offer_id)]
        if self.spec.offer_price and max_price is not None:
            fitting = [o for o in fitting
                       if _number(o.get(self.spec.offer_price), 1e18) <= max_price]
        if not fitting:
            raise UsageError(f"{self.spec.name}: no offer for {count}x {gpu}"
                             + (f" at <= ${max_price}/h" if max_price is not None else ""))
        if self.spec.offer_price:
            fitting.sort(key=lambda o: _number(o.get(self.spec.offer_price), 1e18))
        return fitting[0]

    def create(self, values: Mapping[str, Any], *, ttl: bool) -> str:
        """Ask for an instance; returns its id (the label where the provider names by it)."""
        template = [*self.spec.create, *(self.spec.ttl_args if ttl else ())]
        _, doc, _ = self._run(template, values)
        if self.spec.created_id is None:
            return str(values["label"])
        found = dig(doc, self.spec.created_id)
        if found in (None, ""):
            raise HostError(f"{self.spec.name}: create answered without "
                            f"{self.spec.created_id!r}", details=[json.dumps(doc)[:300]])
        return str(found)

    def list_instances(self) -> list[dict[str, Any]]:
        _, doc, _ = self._run(self.spec.list_all, {})
        if self.spec.list_key:
            doc = dig(doc, self.spec.list_key)
        return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []

    def by_label(self, label: str) -> dict[str, Any] | None:
        """The instance ops labelled so: how a create whose answer was lost is recovered."""
        for inst in self.list_instances():
            if inst.get(self.spec.label_field) == label:
                return inst
        return None

    def describe(self, instance_id: str) -> Observed:
        doc = self._describe_doc(instance_id)
        if doc is None:
            return Observed("gone")
        raw = dig(doc, self.spec.state_field)
        phase = self.spec.states.get(str(raw), "booting") if raw is not None else "booting"
        host, port = self._endpoint(doc)
        price = dig(doc, self.spec.price_field) if self.spec.price_field else None
        message = doc.get("status_msg") if isinstance(doc.get("status_msg"), str) else None
        return Observed(phase, None if raw is None else str(raw), host, port,
                        float(price) if isinstance(price, (int, float)) else None, message)

    def _describe_doc(self, instance_id: str) -> dict[str, Any] | None:
        if not self.spec.describe:
            found = [i for i in self.list_instances()
                     if str(i.get(self.spec.id_field)) == instance_id]
            return found[0] if found else None
        code, doc, err = self._run(self.spec.describe, {"id": instance_id}, check=False)
        if code != 0:
            if self.spec.gone_error and self.spec.gone_error in (err + json.dumps(doc)).lower():
                return None
            raise HostError(f"{self.spec.name}: describe {instance_id} exited with {code}",
                            details=err.strip().splitlines()[-5:])
        if self.spec.gone_if_null and isinstance(doc, dict) \
                and self.spec.gone_if_null in doc and doc[self.spec.gone_if_null] is None:
            return None
        if not isinstance(doc, dict):
            raise HostError(f"{self.spec.name}: describe {instance_id} did not answer JSON")
        return doc

    def _endpoint(self, doc: dict[str, Any]) -> tuple[str | None, int | None]:
        for rule in self.spec.endpoints:
            if rule.regex and rule.regex_field:
                text = dig(doc, rule.regex_field)
                match = re.search(rule.regex, text) if isinstance(text, str) else None
                if match:
                    return match["host"], int(match["port"])
                continue
            host = dig(doc, rule.host) if rule.host else None
            port = dig(doc, rule.port) if rule.port else None
            if isinstance(host, str) and host and _number(port, 0) > 0:
                return host, int(_number(port, 0))
        return None, None

    def destroy(self, instance_id: str) -> None:
        self._run(self.spec.destroy, {"id": instance_id})


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
