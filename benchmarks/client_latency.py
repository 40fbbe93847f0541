"""How long an OpenAI-style request takes to cross localhost HTTP, and how a Python ASGI front
end spaces out requests sent together: the order of magnitude behind ``workload.client``.

A uvicorn + Starlette server (what vLLM's API server runs on, minus vLLM's own validation,
chat template and tokenizer), in a process of its own, answers ``POST /v1/completions`` with a
JSON body of a prompt of ``--prompt-chars`` characters. One client sends requests one at a time
over a kept-alive connection: the server's CPU seconds per request (its process CPU time over
the requests, which other load on the machine barely changes) is the front end's own service
time for one request; the median round trip is the wall time of one request both ways (which
other load does change: note the machine's load with the figures). Then ``--burst`` threads
send one request each at the same instant: the server's arrival instants show the spacing of
requests handled one at a time by one event loop.

    python benchmarks/client_latency.py [--requests 2000] [--burst 32] [--prompt-chars 4096]

Prints one JSON line. What it does not measure: tokenization (no tokenizer library is
installed here) and vLLM's own request processing, both of which add to the front-end time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import threading
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    arrivals: list[float] = []

    async def completions(request):
        body = await request.json()
        arrivals.append(time.time())
        return JSONResponse({"id": "x", "choices": [{"text": "ok"}],
                             "usage": {"prompt_tokens": len(body["prompt"]) // 4}})

    async def stats(request):
        out = {"cpu_s": time.process_time(), "arrivals": list(arrivals)}
        arrivals.clear()
        return JSONResponse(out)

    return Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                             Route("/stats", stats)])


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(make_app(), host="127.0.0.1", port=port, log_level="error")


def stats(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/stats")
    return json.loads(conn.getresponse().read())


def wait_up(port: int) -> None:
    for _ in range(500):
        try:
            stats(port)
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the server did not start")


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    conn.getresponse().read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--prompt-chars", type=int, default=4096)
    args = ap.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    wait_up(port)
    body = json.dumps({"model": "m", "prompt": "x" * args.prompt_chars, "max_tokens": 128,
                       "stream": False}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(100):  # warm the connection and the server
        post(conn, body)
    cpu0 = stats(port)["cpu_s"]
    rtt = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        post(conn, body)
        rtt.append(time.perf_counter() - t0)
    cpu_ms = (stats(port)["cpu_s"] - cpu0) / args.requests * 1e3  # (one /stats call included)
    rtt_ms = np.array(rtt) * 1e3
    conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(args.burst)]
    for c in conns:
        post(c, body)  # open every connection before the burst
    stats(port)  # clears the arrivals
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
    spacing_ms = np.diff(np.sort(stats(port)["arrivals"])) * 1e3
    server.terminate()
    server.join(timeout=5)
    log_rtt = np.log(rtt_ms)
    print(json.dumps({
        "requests": len(rtt_ms), "prompt_chars": args.prompt_chars,
        "server_cpu_ms_per_request": round(cpu_ms, 4),
        "load_average_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
        "rtt_median_ms": round(float(np.median(rtt_ms)), 4),
        "rtt_p90_ms": round(float(np.percentile(rtt_ms, 90)), 4),
        "rtt_log_sigma": round(float(log_rtt.std()), 3),
        "burst": args.burst,
        "burst_spacing_median_ms": round(float(np.median(spacing_ms)), 4),
        "burst_span_ms": round(float(spacing_ms.sum()), 3),
    }))


if __name__ == "__main__":
    main()
