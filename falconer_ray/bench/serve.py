"""`falconer bench serve`: latency and throughput of `falconer serve` under a bounded load.

It starts the server on 127.0.0.1 on a free port, sends exactly `requests` POSTs of
`texts_per_request` documents from `concurrency` concurrent clients, and stops what
it started. With `heavy`, the same load runs a second time while one more client sends
requests as large as the server takes, in a loop: the light clients' p99 beside their
p99 alone says whether one large client starves the rest. The clients run in this
process, on the same machine as the server, so on a small machine they take some of
its CPU: compare figures from one machine only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
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


async def _heavy_loop(url: str, body: dict, stop: asyncio.Event, timeout_s: float) -> list[str]:
    """One client sending the largest request the server takes, again and again, until `stop`."""
    import aiohttp

    outcomes: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        while not stop.is_set():
            try:
                async with session.post(url, json=body) as r:
                    await r.read()
                    outcomes.append(str(r.status))
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                outcomes.append(type(e).__name__)
    return outcomes


async def _load_beside_heavy(url: str, bodies: list[dict], concurrency: int, heavy: dict, timeout_s: float):
    stop = asyncio.Event()
    hog = asyncio.ensure_future(_heavy_loop(url, heavy, stop, timeout_s))
    await asyncio.sleep(0.5)  # the first large request is in before the light load starts
    try:
        latencies, errors = await _load(url, bodies, concurrency, timeout_s)
    finally:
        stop.set()
        heavy_outcomes = await hog
    return latencies, errors, heavy_outcomes


async def _timed(url: str, body: dict, timeout_s: float) -> float:
    """Seconds one request takes to be answered."""
    import aiohttp

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.post(url, json=body) as r:
            await r.read()
            if r.status != 200:
                raise RuntimeError(f"the server answered {r.status}: {await r.text()}")
    return time.perf_counter() - started


async def _after_abandon(url: str, heavy: dict, then: dict, timeout_s: float) -> float:
    """Seconds `then` takes right after a client gave up on a heavy request: its own
    time when the server stops abandoned work, plus what is left of the heavy one when not."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as quitter:
        try:
            async with quitter.post(url, json=heavy) as r:
                await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass  # gave up, as intended
    return await _timed(url, then, timeout_s)


def _latency(latencies: list[float]) -> dict:
    ms = np.asarray(latencies) * 1000.0
    ok = len(latencies)
    return {"p50": round(float(np.percentile(ms, 50)), 1) if ok else None,
            "p99": round(float(np.percentile(ms, 99)), 1) if ok else None,
            "mean": round(float(ms.mean()), 1) if ok else None,
            "max": round(float(ms.max()), 1) if ok else None}


def run_serve_bench(run_dir: Path, requests: int, concurrency: int, texts_per_request: int, source: str,
                    replicas: int = 1, timeout_s: float = 300.0, heavy: bool = False,
                    limits: server.Limits | None = None) -> dict:
    """Start the server, warm it with one request, run the load (and again beside a heavy
    client), stop the server (and Ray, if started here). `limits`: the server's (default:
    `falconer serve`'s, with room for the requests asked for)."""
    run = RunDir(run_dir)
    texts = bench_texts(requests * texts_per_request, source)
    bodies = [{"texts": texts[i * texts_per_request:(i + 1) * texts_per_request]} for i in range(requests)]
    # Not `import ray` before server.start: a private Ray must be set up (loopback) before its first import.
    owned_ray = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    port = free_port()
    limits = limits or server.Limits(max_batch=max(texts_per_request, 64), max_request_bytes=64 << 20)
    url = server.start(run, "127.0.0.1", port, replicas, limits, access_log=False)
    beside: dict = {}
    try:
        _, warm_errors = asyncio.run(_load(f"{url}/v1/mine", bodies[:1], 1, timeout_s))
        if warm_errors:
            raise RuntimeError(f"the server failed its warm-up request: {warm_errors[0]}")
        started = time.perf_counter()
        latencies, errors = asyncio.run(_load(f"{url}/v1/mine", bodies, concurrency, timeout_s))
        wall = time.perf_counter() - started
        if heavy:
            per_text = limits.max_doc_chars
            big = {"texts": [(" ".join(texts) * (1 + per_text // max(1, len(" ".join(texts)))))[:per_text]]
                   * (limits.max_request_chars // per_text)}
            lat2, err2, hogged = asyncio.run(_load_beside_heavy(f"{url}/v1/mine", bodies, concurrency, big, timeout_s))
            after_abandon = asyncio.run(_after_abandon(f"{url}/v1/mine", big, bodies[0], timeout_s))
            # A long text alone, then right after an abandoned heavy request: the difference
            # is how long the replica kept working for a client that had gone.
            one_long = {"texts": big["texts"][:1]}
            long_alone = min(asyncio.run(_timed(f"{url}/v1/mine", one_long, timeout_s)) for _ in range(2))
            long_after = asyncio.run(_after_abandon(f"{url}/v1/mine", big, one_long, timeout_s))
            alone, beside_heavy = _latency(latencies), _latency(lat2)
            beside = {"beside_heavy": {
                "heavy_request_chars": sum(map(len, big["texts"])), "heavy_outcomes": dict(Counter(hogged)),
                "ok": len(lat2), "errors": len(err2), "error_examples": err2[:3], "latency_ms": beside_heavy,
                "p99_ratio": round(beside_heavy["p99"] / alone["p99"], 3) if lat2 and latencies else None,
                "light_after_abandoned_heavy_ms": round(after_abandon * 1000.0, 1),
                "long_text_alone_ms": round(long_alone * 1000.0, 1),
                "long_text_after_abandoned_heavy_ms": round(long_after * 1000.0, 1),
                "abandoned_work_kept_s": round(max(0.0, long_after - long_alone), 3)}}
    finally:
        server.stop()
        if owned_ray:
            import ray

            ray.shutdown()
    ok = len(latencies)
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "run_dir": str(run.path), "source": source, "requests": requests, "concurrency": concurrency,
        "texts_per_request": texts_per_request, "replicas": replicas,
        "ok": ok, "errors": len(errors), "error_examples": errors[:3],
        "latency_ms": _latency(latencies),
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 3),
        "docs_per_s": round(ok * texts_per_request / wall, 3),
        **beside,
    }
