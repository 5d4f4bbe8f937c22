"""A Python service instance behind `switchyard agent`, for tests/openfeature_python.rs and the
compose example (docker/agent-example.yml).

It knows nothing of Switchyard: it uses OpenFeature's flagd provider from PyPI, unchanged,
pointed at the agent beside it (in-process mode: flagd's sync protocol on the agent's
loopback port), answers its own health check, and prints one JSON line each time the value
of the watched flag changes, with the local time it saw the change.

    python agent_app.py FLAGD_HOST:PORT [HEALTH_HOST:]HEALTH_PORT FLAG [MODE]

HEALTH_HOST is 127.0.0.1 unless given. MODE is `in-process` (default) or `rpc`. SIGTERM ends it cleanly.
"""

import http.server
import json
import logging
import signal
import sys
import threading
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext

POLL_S = 0.002


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> None:
    logging.getLogger("openfeature").setLevel(logging.CRITICAL)
    flagd, health, flag = sys.argv[1], sys.argv[2], sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "in-process"
    host, port = flagd.rsplit(":", 1)
    resolver = ResolverType.IN_PROCESS if mode == "in-process" else ResolverType.RPC
    api.set_provider(FlagdProvider(resolver_type=resolver, host=host, port=int(port),
                                   deadline_ms=3000, retry_backoff_ms=100,
                                   retry_backoff_max_ms=500, retry_grace_period=2))
    client = api.get_client()

    health_host, _, health_port = health.rpartition(":")
    server = http.server.ThreadingHTTPServer((health_host or "127.0.0.1", int(health_port)), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ctx = EvaluationContext(targeting_key="customer-1")
    last = None
    print(json.dumps({"ready": True}), flush=True)
    while not stop.is_set():
        value = client.get_boolean_value(flag, False, ctx)
        if value != last:
            print(json.dumps({"flag": flag, "value": value, "at_ms": time.time() * 1000}), flush=True)
            last = value
        time.sleep(POLL_S)
    server.shutdown()
    api.shutdown()


if __name__ == "__main__":
    main()
