#!/usr/bin/env python3
"""A fake vastai / runpodctl / lium for tests: answers with the JSON shapes the real CLIs print.

Installed on PATH under each CLI's name (the name it is called by picks the dialect); its
state lives in the JSON file $FAKE_PROVIDER_STATE: the scenario (how many describes a boot
takes, when the SSH port mapping appears, whether create fails, whether the instance dies
while booting, how long create stalls after the instance exists), every instance and every
argv it was called with. The "instance" is this machine's loopback sshd: its address is
127.0.0.1 and the port in the scenario.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STATE = Path(os.environ["FAKE_PROVIDER_STATE"])


def load() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(STATE.read_text()) if STATE.exists() else {}
    doc.setdefault("scenario", {})
    doc.setdefault("instances", {})
    doc.setdefault("calls", [])
    doc.setdefault("next_id", 7835610)
    return doc


def save(doc: dict[str, Any]) -> None:
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, STATE)


def out(doc: Any) -> None:
    print(json.dumps(doc))


def arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def create(doc: dict[str, Any], label: str, extra: dict[str, Any]) -> dict[str, Any]:
    sc = doc["scenario"]
    if sc.get("fail_create"):
        print(sc.get("fail_message", "error: no such offer / insufficient credit"),
              file=sys.stderr)
        save(doc)
        sys.exit(1)
    iid = str(doc["next_id"])
    doc["next_id"] += 1
    inst = {"id": iid, "label": label, "describes": 0, "destroyed": False, **extra}
    doc["instances"][iid] = inst
    save(doc)
    if sc.get("create_delay"):
        time.sleep(float(sc["create_delay"]))  # the instance exists; the answer is not out yet
    return inst


def phase(doc: dict[str, Any], inst: dict[str, Any]) -> tuple[str, bool]:
    """(booting|running|dead, port mapped?) after one more describe."""
    sc = doc["scenario"]
    inst["describes"] += 1
    n = inst["describes"]
    if sc.get("die_after") is not None and n > int(sc["die_after"]):
        return "dead", False
    boot = int(sc.get("boot_polls", 2))
    if n <= boot:
        return "booting", False
    return "running", n > boot + int(sc.get("port_after", 0))


def find(doc: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
    """A live instance; one the scenario makes vanish (gone_after describes) is gone."""
    gone_after = doc["scenario"].get("gone_after")
    for inst in doc["instances"].values():
        if str(inst.get(key)) == value and not inst["destroyed"]:
            if gone_after is not None and inst["describes"] >= int(gone_after):
                inst["destroyed"] = True
                return None
            return inst
    return None


# -- vastai ---------------------------------------------------------------------------------

def vast_row(doc: dict[str, Any], inst: dict[str, Any], advance: bool = True) -> dict[str, Any]:
    state, mapped = phase(doc, inst) if advance else ("running", True)
    port = str(doc["scenario"]["port"])
    return {"id": int(inst["id"]), "label": inst["label"],
            "actual_status": {"booting": "loading", "running": "running",
                              "dead": "exited"}[state],
            "intended_status": "running", "cur_state": "running",
            "status_msg": "container exited (oom)" if state == "dead" else "pulling image",
            "public_ipaddr": "127.0.0.1", "ssh_host": "ssh5.vast.ai", "ssh_port": 0,
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": port}]}  # noqa: S104
            if mapped else {},
            "gpu_name": "RTX 4090", "num_gpus": 1, "dph_total": 0.412,
            "start_date": time.time(), "extra_env": []}


def vast(argv: list[str], doc: dict[str, Any]) -> None:
    if argv[:2] == ["search", "offers"]:
        out([{"id": 991, "ask_contract_id": 991, "gpu_name": "RTX 4090", "num_gpus": 1,
              "dph_total": 0.412}, {"id": 992, "gpu_name": "RTX 4090", "num_gpus": 1,
                                    "dph_total": 0.9}])
    elif argv[:2] == ["create", "instance"]:
        inst = create(doc, arg(argv, "--label") or "", {})
        out({"success": True, "new_contract": int(inst["id"])})
    elif argv[:2] == ["show", "instance"]:
        inst = find(doc, "id", argv[2])
        out({"instances": None} if inst is None else vast_row(doc, inst))
    elif argv[:2] == ["show", "instances"]:
        out([vast_row(doc, i, advance=False) for i in doc["instances"].values()
             if not i["destroyed"]])
    elif argv[:2] == ["destroy", "instance"]:
        inst = find(doc, "id", argv[2])
        if inst is not None:
            inst["destroyed"] = True
        print(f"destroying instance {argv[2]}.")
    else:
        sys.exit(f"fake vastai: unknown command {argv}")


# -- runpodctl ------------------------------------------------------------------------------

def runpod_pod(doc: dict[str, Any], inst: dict[str, Any], advance: bool = True) -> dict[str, Any]:
    state, mapped = phase(doc, inst) if advance else ("running", True)
    ssh: dict[str, Any] = {"error": "pod not ready", "id": inst["id"], "status": "RUNNING"}
    if mapped:
        ssh = {"id": inst["id"], "ip": "127.0.0.1", "port": int(doc["scenario"]["port"]),
               "ssh_command": f"ssh root@127.0.0.1 -p {doc['scenario']['port']}"}
    return {"id": inst["id"], "name": inst["label"],
            "desiredStatus": {"booting": "RUNNING" if advance and inst["describes"] > 1
                              else "CREATED", "running": "RUNNING", "dead": "EXITED"}[state],
            "imageName": "runpod/pytorch", "gpuCount": 1, "costPerHr": 0.69,
            "containerDiskInGb": 50, "ssh": ssh}


def runpod(argv: list[str], doc: dict[str, Any]) -> None:
    if argv[:2] == ["pod", "create"]:
        inst = create(doc, arg(argv, "--name") or "", {"env": arg(argv, "--env")})
        out({"id": inst["id"], "name": inst["label"], "desiredStatus": "CREATED",
             "costPerHr": 0.69})
    elif argv[:2] == ["pod", "get"]:
        inst = find(doc, "id", argv[2])
        if inst is None:
            print(json.dumps({"error": f"failed to get pod: pod not found: {argv[2]}"}),
                  file=sys.stderr)
            save(doc)
            sys.exit(1)
        out(runpod_pod(doc, inst))
    elif argv[:2] == ["pod", "list"]:
        out([runpod_pod(doc, i, advance=False) for i in doc["instances"].values()
             if not i["destroyed"]])
    elif argv[:2] == ["pod", "delete"]:
        inst = find(doc, "id", argv[2])
        if inst is not None:
            inst["destroyed"] = True
        out({"deleted": True, "id": argv[2]})
    else:
        sys.exit(f"fake runpodctl: unknown command {argv}")


# -- lium -----------------------------------------------------------------------------------

def lium_pod(doc: dict[str, Any], inst: dict[str, Any]) -> dict[str, Any]:
    state, mapped = phase(doc, inst)
    port = doc["scenario"]["port"]
    return {"id": f"0b1c-{inst['id']}", "pod_name": inst["label"],
            "status": {"booting": "PENDING", "running": "RUNNING", "dead": "FAILED"}[state],
            "ssh_connect_cmd": f"ssh root@127.0.0.1 -p {port}" if mapped else None,
            "ports_mapping": {"22": port} if mapped else {}, "price_per_hour": 1.25,
            "executor": {"machine_name": "H100", "gpu_count": 1, "price_per_gpu": 1.25}}


def lium(argv: list[str], doc: dict[str, Any]) -> None:
    if argv[:1] == ["ls"]:
        out([{"huid": "brave-cat-12", "id": "e1", "machine_name": "H100", "gpu_count": 1,
              "price_per_hour": 1.25}])
    elif argv[:1] == ["up"]:
        inst = create(doc, arg(argv, "--name") or "", {"ttl": arg(argv, "--ttl")})
        print(f"pod {inst['label']} created on {argv[1]}")
    elif argv[:1] == ["ps"]:
        live = [find(doc, "id", i["id"]) for i in list(doc["instances"].values())]
        out([lium_pod(doc, i) for i in live if i is not None])
    elif argv[:1] == ["rm"]:
        inst = find(doc, "label", argv[1])
        if inst is not None:
            inst["destroyed"] = True
        print(f"removed {argv[1]}")
    else:
        sys.exit(f"fake lium: unknown command {argv}")


def main() -> None:
    argv = sys.argv[1:]
    name = Path(sys.argv[0]).name
    if argv[:1] == ["--as"]:  # called through a wrapper script named like the real CLI
        name, argv = argv[1], argv[2:]
    doc = load()
    doc["calls"].append([name, *argv])
    {"vastai": vast, "runpodctl": runpod, "lium": lium}[name](argv, doc)
    save(doc)


if __name__ == "__main__":
    main()
