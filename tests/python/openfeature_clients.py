"""OpenFeature's Python providers against a Switchyard node, driven by tests/openfeature_python.rs.

Three clients, unchanged from PyPI: the flagd provider in rpc mode (flagd.evaluation.v2) and in
in-process mode (flagd.sync.v1, evaluating locally), and the OFREP provider (HTTP). Each line
on stdin is a JSON list of cases ({"flag", "type", "default", "context"}); the answer, one JSON
line on stdout, holds each client's details for every case. A line "quit" ends the run.

    python openfeature_clients.py GRPC_HOST:PORT HTTP_BASE_URL
"""

import json
import logging
import sys

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> None:
    # The OFREP provider (0.3.0) reads `variant` from every answer and so raises on a code
    # default (which OFREP, like flagd, answers without a variant); the SDK then logs a
    # traceback per evaluation and returns the code's default, as it should. Keep the test's
    # output readable: only the values are compared.
    logging.getLogger("openfeature").setLevel(logging.CRITICAL)
    grpc_addr, http_base = sys.argv[1], sys.argv[2]
    host, port = grpc_addr.rsplit(":", 1)
    common = dict(host=host, port=int(port), deadline_ms=3000, retry_backoff_ms=100,
                  retry_backoff_max_ms=500, retry_grace_period=2)
    api.set_provider(FlagdProvider(resolver_type=ResolverType.RPC, **common), "rpc")
    api.set_provider(FlagdProvider(resolver_type=ResolverType.IN_PROCESS, **common), "in-process")
    api.set_provider(OFREPProvider(base_url=http_base, timeout=3.0), "ofrep")
    clients = {name: api.get_client(name) for name in ("rpc", "in-process", "ofrep")}
    print(json.dumps({"ready": True}), flush=True)

    for line in sys.stdin:
        line = line.strip()
        if line == "quit":
            break
        cases = json.loads(line)
        answer = {}
        for name, client in clients.items():
            results = []
            for case in cases:
                ctx = dict(case["context"])
                key = ctx.pop("targetingKey", None)
                ec = EvaluationContext(targeting_key=key, attributes=ctx)
                get = {
                    "boolean": client.get_boolean_details,
                    "string": client.get_string_details,
                    "integer": client.get_integer_details,
                    "float": client.get_float_details,
                }[case["type"]]
                d = get(case["flag"], case["default"], ec)
                results.append({
                    "value": d.value,
                    "variant": d.variant,
                    "reason": str(d.reason.value if hasattr(d.reason, "value") else d.reason),
                    "error": str(d.error_code.value) if d.error_code else None,
                })
            answer[name] = results
        print(json.dumps(answer), flush=True)
    api.shutdown()


if __name__ == "__main__":
    main()
