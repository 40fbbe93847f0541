"""How long an OpenAI-style request takes to cross localhost HTTP, and how a Python ASGI front
end spaces out requests sent together: the order of magnitude behind ``workload.client``.

A uvicorn + Starlette server (what vLLM's API server runs on, minus vLLM's own validation,
chat template and tokenizer) answers ``POST /v1/completions`` with a JSON body of a prompt of
``--prompt-chars`` characters. One client thread sends requests one at a time over a kept-alive
connection: the median round trip is the HTTP cost of one request both ways. Then ``--burst``
threads send one request each at the same instant: the server's arrival instants show the
spacing of requests handled one at a time by one event loop.

    python benchmarks/client_latency.py [--requests 2000] [--burst 32] [--prompt-chars 4096]

Prints one JSON line. What it does not measure: tokenization (no tokenizer library is
installed here) and vLLM's own request processing, both of which add to the front-end time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app(arrivals: list[float]):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def completions(request):
        body = await request.json()
        arrivals.append(time.perf_counter())
        return JSONResponse({"id": "x", "choices": [{"text": "ok"}],
                             "usage": {"prompt_tokens": len(body["prompt"]) // 4}})

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])


def serve(port: int, arrivals: list[float]):
    import uvicorn

    config = uvicorn.Config(make_app(arrivals), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    conn.getresponse().read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--prompt-chars", type=int, default=4096)
    args = ap.parse_args()
    arrivals: list[float] = []
    port = free_port()
    server, thread = serve(port, arrivals)
    body = json.dumps({"model": "m", "prompt": "x" * args.prompt_chars, "max_tokens": 128,
                       "stream": False}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    rtt = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        post(conn, body)
        rtt.append(time.perf_counter() - t0)
    rtt_ms = np.array(rtt[100:]) * 1e3  # the first hundred warm the connection and the server
    conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(args.burst)]
    for c in conns:
        post(c, body)  # open every connection before the burst
    arrivals.clear()
    gate = threading.Barrier(args.burst + 1)

    def one(c):
        gate.wait()
        post(c, body)

    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    spacing_ms = np.diff(np.sort(arrivals)) * 1e3
    server.should_exit = True
    thread.join(timeout=5)
    log_rtt = np.log(rtt_ms)
    print(json.dumps({
        "requests": len(rtt_ms), "prompt_chars": args.prompt_chars,
        "rtt_median_ms": round(float(np.median(rtt_ms)), 4),
        "rtt_p90_ms": round(float(np.percentile(rtt_ms, 90)), 4),
        "rtt_log_sigma": round(float(log_rtt.std()), 3),
        "burst": args.burst,
        "burst_spacing_median_ms": round(float(np.median(spacing_ms)), 4),
        "burst_span_ms": round(float(spacing_ms.sum()), 3),
    }))


if __name__ == "__main__":
    main()
