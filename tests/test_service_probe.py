"""The pieces of the service and eval kinds without tmux: the health probe against a real HTTP
server, the status of a service run from an untrusted heartbeat, and the aggregate of an
untrusted results.jsonl."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from runner import contract, service
from runner.finish import results_aggregate
from runner.heartbeat import Breach
from runner.status import run_status


class Handler(BaseHTTPRequestHandler):
    code = 200
    body = b'{"status": "ok", "requests": 7}'

    def do_GET(self) -> None:
        self.send_response(self.code)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def port_of(httpd: ThreadingHTTPServer) -> int:
    port: int = httpd.server_address[1]
    return port


def test_probe_goes_serving_then_unhealthy_when_the_server_goes(
        server: ThreadingHTTPServer) -> None:
    spec = service.ServiceSpec(port=port_of(server), probe_timeout_sec=1)
    breaches: list[Breach] = []
    probe = service.HealthProbe(spec, breaches.append)
    assert probe.snapshot()["state"] == "starting"
    probe.probe_once()
    shot = probe.snapshot()
    assert shot["state"] == "serving" and shot["last_status_code"] == 200
    assert shot["requests"] == 7 and shot["ready_at"] is not None
    server.shutdown()
    server.server_close()
    probe.probe_once()
    shot = probe.snapshot()
    assert shot["state"] == "unhealthy" and shot["last_status_code"] is None
    assert "ConnectionRefused" in shot["last_error"] and shot["consecutive_failures"] == 1
    end = probe.final(time.time())
    assert end["state_at_end"] == "unhealthy" and end["uptime_s"] >= 0 and end["requests"] == 7
    assert breaches == []  # once ready, a failing probe never fails the run by itself


def test_never_healthy_calls_not_ready_once(server: ThreadingHTTPServer,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Handler, "code", 503)
    now = [1000.0]
    breaches: list[Breach] = []
    probe = service.HealthProbe(service.ServiceSpec(port=port_of(server), ready_timeout_sec=5),
                                breaches.append, clock=lambda: now[0])
    probe.probe_once()
    assert probe.snapshot()["state"] == "starting" and breaches == []
    now[0] += 6
    probe.probe_once()
    probe.probe_once()
    assert len(breaches) == 1
    assert (breaches[0].status, breaches[0].failure_class) == ("failed", "not_ready")
    assert "HTTP 503" in breaches[0].message


@pytest.mark.parametrize("body", [b"not json", b'{"requests": true}', b'{"requests": -1}',
                                  b"[1, 2]", b'{"requests": "7"}', b"{" * 100000])
def test_a_request_count_is_only_a_non_negative_integer(body: bytes, server: ThreadingHTTPServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Handler, "body", body)
    result = service.probe(port_of(server), "/health", 2)
    assert result.ok and result.requests is None


@pytest.mark.parametrize("block", [None, [], {"port": 0}, {"port": True}, {"port": "80"},
                                   {"port": 70000}])
def test_unusable_service_blocks_name_no_service(block: Any) -> None:
    assert service.ServiceSpec.from_spec({"kind": "service", "service": block}) is None


def test_service_spec_falls_back_to_defaults_for_bad_values() -> None:
    spec = service.ServiceSpec.from_spec({"kind": "service", "service": {
        "port": 80, "health": "no-slash", "ready_timeout_sec": float("inf"),
        "probe_interval_sec": -1, "probe_timeout_sec": True}})
    assert spec == service.ServiceSpec(port=80)
    assert service.ServiceSpec.from_spec({"kind": "command", "service": {"port": 80}}) is None


def live_service_dir(tmp_path: Path, block: Any) -> Path:
    """A run dir whose wrapper is this test process (alive), of kind service."""
    run_dir = tmp_path / "svc-1"
    run_dir.mkdir()
    me = psutil.Process()
    common = {"run_id": "svc-1"}
    contract.atomic_write_json(run_dir / contract.SPEC, {
        **common, "schema": "ops.spec/1", "kind": "service", "heartbeat": {"interval_s": 60}})
    contract.atomic_write_json(run_dir / contract.METADATA, {
        **common, "schema": "ops.run_metadata/1", "started_at": contract.iso(),
        "host": {"boot_id": contract.boot_id()},
        "process": {"pid": me.pid, "pid_start_time": me.create_time()}})
    beat = {**common, "schema": "ops.heartbeat/1", "pid": me.pid,
            "pid_start_time": me.create_time(), "boot_id": contract.boot_id(), "step": None,
            "phase": "starting"}
    if block is not None:
        beat["service"] = block
    contract.atomic_write_json(run_dir / contract.HEARTBEAT, beat)
    return run_dir


HOSTILE_BLOCKS = [
    ({"state": "serving", "last_status_code": 99999, "last_latency_ms": -5,
      "requests": True, "port": "x"}, "serving"),
    ({"state": "on fire"}, "starting"),
    ({"state": ["serving"]}, "starting"),
    ("serving", "starting"),
    ({"state": "unhealthy", "last_error": "x" * 100000, "last_status_code": 500}, "unhealthy"),
]


@pytest.mark.parametrize(("block", "expected"), HOSTILE_BLOCKS)
def test_service_status_from_an_untrusted_heartbeat(tmp_path: Path, block: Any,
                                                    expected: str) -> None:
    info = run_status(live_service_dir(tmp_path, block))
    assert info["status"] == expected
    shown = info.get("service") or {}
    assert shown.get("last_status_code") in (None, 500)
    assert shown.get("last_latency_ms") is None and shown.get("requests") is None
    assert len(json.dumps(info)) < 5000


def test_a_live_service_without_a_probe_record_reads_starting(tmp_path: Path) -> None:
    assert run_status(live_service_dir(tmp_path, None))["status"] == "starting"


def test_results_aggregate_reads_an_untrusted_file(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"dsc": 0.5, "name": "a", "ok": True}),
             json.dumps({"dsc": 1.0, "big": 1e308}), json.dumps({"dsc": None, "big": 1e308}),
             '{"dsc": NaN}', "[1, 2]", '{"dsc": 0.25']  # a non-finite, a list, a torn line
    path.write_text("\n".join(lines))
    agg = results_aggregate(path)
    assert agg["mean"]["dsc"] == pytest.approx(0.75) and agg["n"]["dsc"] == 2
    assert "big" not in agg["mean"]  # 2e308 overflows: no infinity reaches summary.json
    assert "ok" not in agg["mean"] and "name" not in agg["mean"]
    json.dumps(agg, allow_nan=False)
    missing = results_aggregate(tmp_path / "none.jsonl")
    assert missing["file"] is None and missing["n_items"] == 0
    os.mkfifo(tmp_path / "fifo.jsonl")
    assert results_aggregate(tmp_path / "fifo.jsonl")["n_items"] == 0  # never blocks


def test_a_health_answer_nested_beyond_reason_reads_as_no_count() -> None:
    """The server is the workload's: a body nested 100,000 deep is no request count, never a
    RecursionError in the wrapper's probe."""
    from runner.service import _reported_count

    assert _reported_count(b"[" * 100_000 + b"]" * 100_000) is None
    assert _reported_count(b'{"requests": 7}') == 7
