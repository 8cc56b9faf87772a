"""A tiny HTTP service with the standard library: the `service` example preset runs it.

``GET /health`` answers ``{"status": "ok", "requests": N, "uptime_s": S}`` (N counts every
request but the health probes); ``GET /`` answers a short JSON greeting,
``GET /echo?x=1`` returns the query and any other path is a 404; ``--start-delay S`` waits before listening, as a server
that loads a model does. It prints one line per request to stdout (stdout.log) and
stops cleanly on SIGTERM or SIGINT.

    python examples/health_server.py --port 8000
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from urllib.parse import urlsplit

STARTED = time.time()
COUNT = {"requests": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "ops-example/1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            with LOCK:
                served = COUNT["requests"]
            self._json(200, {"status": "ok", "requests": served,
                             "uptime_s": round(time.time() - STARTED, 3)})
            return
        with LOCK:
            COUNT["requests"] += 1
        if url.path == "/echo":
            self._json(200, {"query": url.query})
        elif url.path == "/":
            self._json(200, {"hello": "from a pod-ops service"})
        else:
            self._json(404, {"error": f"no such path: {url.path}"})

    def _json(self, code: int, doc: dict[str, object]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if not self.path.startswith("/health"):
            print(f"{self.address_string()} {format % args}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--start-delay", type=float, default=0.0,
                        help="Seconds to wait before listening (a model that loads slowly).")
    args = parser.parse_args(argv)
    if args.start_delay > 0:
        print(f"loading for {args.start_delay:g} s", flush=True)
        time.sleep(args.start_delay)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum: int, _frame: FrameType | None) -> None:
        print(f"stopping on {signal.Signals(signum).name}", flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving on http://{args.host}:{args.port}/", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    print(f"served {COUNT['requests']} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
