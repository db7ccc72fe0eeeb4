"""Overload on loopback: 64 clients against one server, with admission control (shedding) and without it.

Starts the server in a child process on 127.0.0.1 (a free port): the Markov model of `--model` (or a small one
built from chitchat) and a MiniLM cross-encoder on the installed backbone (untrained head: scores are
meaningless here, the cost per candidate is the real one), or the trained reranker when `--model` has one.
Each of the 64 clients sends /reply requests back to back for `--seconds`; the same run is repeated with
shedding off (the peer: min_scored=0, no in-flight cap). Reported per setting: replies and 503s, client-side
latency of the replies (min, p50, p99), replies over budget + 50 ms, replies with nothing scored (ranked by
prior only), the median of candidates scored per reply, and goodput (scored replies per second).

    python benchmarks/bench_overload.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from loopback import HISTORIES, free_port  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def serve(model: Path, port: int, shed: bool, budget_ms: int) -> int:
    """The child: load the models, then run uvicorn on loopback."""
    sys.path.insert(0, str(ROOT))
    import uvicorn

    from corpus.modeldir import editor_dir
    from markov.personas import load_personas
    from server.app import Settings, create_app
    from server.engine import Engine, EngineConfig

    markov = model / "markov"
    if markov.is_dir():
        personas = load_personas(markov)
    else:
        from itertools import islice

        from corpus.chitchat import read_chitchat
        from markov import MarkovConfig, MarkovModel

        lines = ((line.text, 1.0) for doc in islice(read_chitchat(), 20_000) for line in doc.lines)
        personas = {"default": MarkovModel.build(lines, MarkovConfig())}
    from reranker import Reranker

    if (editor_dir(model) / "config.json").is_file():
        scorer, kind = Reranker.load(editor_dir(model)), "trained editor"
    else:
        scorer, kind = Reranker.from_backbone(), "MiniLM backbone, untrained head"
    if hasattr(scorer, "warmup"):
        scorer.warmup()
    print(f"bench_overload: scorer = {kind}", file=sys.stderr, flush=True)
    engine = Engine(personas, scorer, EngineConfig(budget_ms=budget_ms, n_candidates=512))
    settings = Settings(budget_ms=budget_ms, cpu_workers=2, **({} if shed else {"min_scored": 0, "max_in_flight": 100_000}))
    uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")
    return 0


async def drive(base: str, clients: int, seconds: float, budget_ms: int) -> dict:
    """`clients` concurrent loops of /reply for `seconds`; client-side timings."""
    latencies, scored, codes, retry_after = [], [], [], []
    stop = time.monotonic() + seconds

    async def client(i: int, c: httpx.AsyncClient) -> None:
        n = 0
        while time.monotonic() < stop:
            body = {"history": HISTORIES[(i + n) % len(HISTORIES)], "budget_ms": budget_ms, "seed": i * 1000 + n}
            n += 1
            start = time.monotonic()
            r = await c.post("/reply", json=body)
            ms = (time.monotonic() - start) * 1000
            codes.append(r.status_code)
            if r.status_code == 200:
                latencies.append(ms)
                scored.append(r.json()["stats"]["scored"])
            elif r.status_code == 503:
                retry_after.append(int(r.headers.get("retry-after", "0")))
                await asyncio.sleep(min(float(r.headers.get("retry-after", 1)), 1.0))  # a well-behaved client backs off

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as c:
        began = time.monotonic()
        await asyncio.gather(*(client(i, c) for i in range(clients)))
        wall = time.monotonic() - began
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "requests": len(codes), "ok": codes.count(200), "shed": codes.count(503),
        "other": len(codes) - codes.count(200) - codes.count(503),
        "min": float(lat.min()), "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
        "over": int((lat > budget_ms + 50).sum()) if latencies else 0,
        "unscored": sum(s == 0 for s in scored), "scored_median": statistics.median(scored) if scored else 0,
        "goodput": sum(s > 0 for s in scored) / wall, "retry_after": sorted(set(retry_after)),
    }


def run_setting(model: Path, shed: bool, args: argparse.Namespace) -> dict:
    port = free_port()
    cmd = [sys.executable, __file__, "--model", str(model), "--serve", str(port), "--budget-ms", str(args.budget_ms)]
    if not shed:
        cmd.append("--no-shed")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit("the server exited while starting")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become healthy in 300 s")
            time.sleep(0.2)
        asyncio.run(drive(base, 4, 2.0, args.budget_ms))  # warm-up: measures the scorer's cost per candidate
        results = [asyncio.run(drive(base, args.clients, args.seconds, args.budget_ms)) for _ in range(args.repeat)]
    finally:
        proc.terminate()
        proc.wait(30)
    return {"results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="per repeat, per setting (bounded run)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--budget-ms", type=int, default=500)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-shed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.model, args.serve, not args.no_shed, args.budget_ms)
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 120:
        parser.error("--clients must be 1-256 and --seconds at most 120 (a bounded loopback run)")

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.clients} clients on loopback, /reply at a {args.budget_ms} ms budget, {args.seconds:g} s x {args.repeat}")
    summary = {}
    for shed in (True, False):
        name = "shedding on" if shed else "shedding off (peer)"
        runs = run_setting(args.model, shed, args)["results"]
        print(f"\n{name}")
        for i, r in enumerate(runs, 1):
            print(f"  run {i}: {r['requests']} requests: {r['ok']} replies, {r['shed']} shed (503), {r['other']} other;"
                  f" latency min {r['min']:.0f} / p50 {r['p50']:.0f} / p99 {r['p99']:.0f} ms;"
                  f" over budget+50: {r['over']}; unscored: {r['unscored']}; scored/reply median {r['scored_median']};"
                  f" goodput {r['goodput']:.1f} scored replies/s; Retry-After {r['retry_after']}")
        summary[shed] = runs
    on = min(r["p99"] for r in summary[True])
    off = min(r["p99"] for r in summary[False])
    good_on = statistics.median(r["goodput"] for r in summary[True])
    good_off = statistics.median(r["goodput"] for r in summary[False])
    unscored_on = statistics.median(r["unscored"] / max(r["ok"], 1) for r in summary[True])
    unscored_off = statistics.median(r["unscored"] / max(r["ok"], 1) for r in summary[False])
    print(f"\nbest p99 of replies: {on:.0f} ms with shedding vs {off:.0f} ms without (ratio {off / max(on, 1e-9):.2f})")
    print(f"median goodput: {good_on:.1f} vs {good_off:.1f} scored replies/s (ratio {good_on / max(good_off, 1e-9):.2f})")
    print(f"median share of replies with nothing scored: {unscored_on:.1%} with shedding vs {unscored_off:.1%} without")
    return 0


if __name__ == "__main__":
    sys.exit(main())
