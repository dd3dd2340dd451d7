"""`falconer bench serve`: latency and throughput of `falconer serve` under a bounded load.

It starts the server on 127.0.0.1 on a free port, sends exactly `requests` POSTs of
`texts_per_request` documents from `concurrency` concurrent clients, and stops what
it started. The clients run in this process, on the same machine as the server, so
on a small machine they take some of its CPU: compare figures from one machine only.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

from falconer_ray import serve as server
from falconer_ray.bench.corpus import bench_texts
from falconer_ray.rundir import RunDir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _load(url: str, bodies: list[dict], concurrency: int, timeout_s: float) -> tuple[list[float], list[str]]:
    """Send every body once from `concurrency` clients; latencies of successes, reasons of failures."""
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    queue = iter(bodies)

    async def client(session):
        for body in queue:  # a shared iterator: each body goes out once
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as r:
                    payload = await r.json(content_type=None)
                    if r.status != 200 or len(payload.get("results", [])) != len(body["texts"]):
                        errors.append(f"{r.status}: {str(payload)[:200]}")
                        continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - started)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return latencies, errors


def run_serve_bench(run_dir: Path, requests: int, concurrency: int, texts_per_request: int, source: str,
                    replicas: int = 1, timeout_s: float = 300.0) -> dict:
    """Start the server, warm it with one request, run the load, stop the server (and Ray, if started here)."""
    run = RunDir(run_dir)
    texts = bench_texts(requests * texts_per_request, source)
    bodies = [{"texts": texts[i * texts_per_request:(i + 1) * texts_per_request]} for i in range(requests)]
    # Not `import ray` before server.start: a private Ray must be set up (loopback) before its first import.
    owned_ray = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    port = free_port()
    url = server.start(run, "127.0.0.1", port, replicas, max_batch=texts_per_request,
                       max_request_bytes=64 << 20, access_log=False)
    try:
        _, warm_errors = asyncio.run(_load(f"{url}/v1/mine", bodies[:1], 1, timeout_s))
        if warm_errors:
            raise RuntimeError(f"the server failed its warm-up request: {warm_errors[0]}")
        started = time.perf_counter()
        latencies, errors = asyncio.run(_load(f"{url}/v1/mine", bodies, concurrency, timeout_s))
        wall = time.perf_counter() - started
    finally:
        server.stop()
        if owned_ray:
            import ray

            ray.shutdown()
    ms = np.asarray(latencies) * 1000.0
    ok = len(latencies)
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "run_dir": str(run.path), "source": source, "requests": requests, "concurrency": concurrency,
        "texts_per_request": texts_per_request, "replicas": replicas,
        "ok": ok, "errors": len(errors), "error_examples": errors[:3],
        "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 1) if ok else None,
                       "p99": round(float(np.percentile(ms, 99)), 1) if ok else None,
                       "mean": round(float(ms.mean()), 1) if ok else None,
                       "max": round(float(ms.max()), 1) if ok else None},
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 3),
        "docs_per_s": round(ok * texts_per_request / wall, 3),
    }
