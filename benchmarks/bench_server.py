"""/reply latency and throughput on loopback: the budgeted engine against a naive peer that scores everything.

Starts `python -m server serve` on 127.0.0.1 (a free port) over a real model dir, then for each level (clients x
budget) sends /reply requests back to back, from `--requests` requests or for `--seconds` seconds, and reports
client-side latency p50/p95/p99 (and min), replies/s, how many candidates the editor read per reply (mean and
median: under load the mean hides the many replies the editor never reached), how many the first stage scored,
and how many replies ran over budget + 50 ms. The naive peer is the same server code with the budget removed
(an infinite deadline): it generates and scores every candidate, however long that takes (a second process:
`bench_server.py --serve-naive PORT`).

    python benchmarks/bench_server.py --model models/default
    python benchmarks/bench_server.py --levels 16x500 --seconds 30 --no-naive    # issue 11's load row
    python benchmarks/bench_server.py --levels 16x500 --min-scored 32 --no-naive  # and with admission shedding

`--min-scored N` adds a third server with RIPOSTE_MIN_SCORED=N (admission sheds requests whose first N candidates
the editor could not read within their budget) and runs `--shed-levels` on it.
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


def serve_naive(model: Path, port: int) -> int:
    """The peer: the same app and engine, but every request is generated and scored in full with no deadline."""
    import math

    import uvicorn

    from server.app import Settings, create_app
    from server.engine import Engine
    from server.models import load_engine

    class NaiveEngine(Engine):
        def budget(self, budget_ms=None, started=None, **kwargs):
            return super().budget(math.inf, started, **kwargs)  # every request's budget is infinite

    engine = load_engine(model, engine_class=NaiveEngine)
    uvicorn.run(create_app(Settings(model_dir=model), engine=engine), host="127.0.0.1", port=port, log_level="warning")
    return 0


def start_server(model: Path, port: int, naive: bool = False, min_scored: int = 0) -> subprocess.Popen:
    """Start a server process and wait until /health says it is ready."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RIPOSTE_MIN_SCORED": str(min_scored)}
    if naive:
        cmd = [sys.executable, __file__, "--model", str(model), "--serve-naive", str(port)]
    else:
        cmd = [sys.executable, "-m", "server", "serve", "--model", str(model), "--no-build", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not become healthy in 120 s")


async def run_level(base: str, concurrency: int, total: int, body: dict, seconds: float = 0.0) -> dict:
    """Send `total` requests (or as many as fit in `seconds`) from `concurrency` clients; latency and server stats."""
    latencies: list[float] = []
    scored: list[int] = []
    first: list[int] = []
    stages: list[dict] = []
    timed_out = shed = errors = 0
    counter = iter(range(total if not seconds else 10**9))
    stop_at = time.perf_counter() + seconds if seconds else float("inf")

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal timed_out, shed, errors
        for i in counter:
            if time.perf_counter() >= stop_at:
                return
            req = {**body, "history": HISTORIES[i % len(HISTORIES)], "seed": i}
            start = time.perf_counter()
            r = await c.post("/reply", json=req)
            if r.status_code == 503:  # shed by admission control: a well-behaved client backs off
                shed += 1
                await asyncio.sleep(min(float(r.headers.get("retry-after", 1)), 1.0))
                continue
            latencies.append((time.perf_counter() - start) * 1000.0)
            if r.status_code != 200:
                errors += 1
                continue
            stats = r.json()["stats"]
            stages.append(stats.get("stage_ms") or {})
            scored.append(stats["scored"])
            first.append((stats.get("first_stage") or {}).get("scored", 0))
            timed_out += stats["timed_out"]

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies) if latencies else np.full(1, np.nan)
    return {
        "n": len(latencies),
        "shed": shed,
        "min": float(lat.min()),
        "p50": float(np.percentile(lat, 50)),
        "p95": float(np.percentile(lat, 95)),
        "p99": float(np.percentile(lat, 99)),
        "rps": len(latencies) / wall,
        "scored": statistics.mean(scored) if scored else 0.0,
        "scored_median": statistics.median(scored) if scored else 0.0,
        "first_stage": statistics.median(first) if first else 0.0,
        "timed_out": timed_out,
        "errors": errors,
        "reads_per_s": sum(scored) / wall,
        "stages": {name: statistics.median(s.get(name, 0.0) for s in stages) if stages else 0.0
                   for name in STAGES},
        "reading": statistics.median(s.get("editor", 0.0) - s.get("editor_wait", 0.0) for s in stages)
        if stages else 0.0,
        "latencies": lat,
    }


# A turn's stages as stats.stage_ms names them, in order; "editor_wait" is the part of "editor" spent before the
# scorer's first round with the turn.
STAGES = ("queued", "generate", "index", "filter", "first_stage", "editor_wait", "editor")


def parse_level(text: str) -> tuple[int, int]:
    """'16x500' -> (16 clients, 500 ms)."""
    clients, _, budget = text.partition("x")
    try:
        return int(clients), int(budget)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a level is CLIENTSxBUDGET_MS, like 16x500; got {text!r}") from None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--levels", type=parse_level, nargs="+",
                        default=[(1, 250), (1, 1000), (4, 500), (16, 500), (16, 1000)],
                        help="CLIENTSxBUDGET_MS pairs for the budgeted server")
    parser.add_argument("--naive-clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--n-candidates", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=48, help="requests per budgeted level")
    parser.add_argument("--seconds", type=float, default=0.0, help="run each budgeted level this long instead")
    parser.add_argument("--naive-requests", type=int, default=16, help="requests per naive level (they are slow)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive peer")
    parser.add_argument("--min-scored", type=int, default=0, help="also run a server that sheds below N reads")
    parser.add_argument("--shed-levels", type=parse_level, nargs="+", default=[(16, 500)])
    parser.add_argument("--serve-naive", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (args.model / "markov").is_dir():
        print(f"no models in {args.model}: build them first (make chat builds models/default)", file=sys.stderr)
        return 1
    if args.serve_naive is not None:
        return serve_naive(args.model, args.serve_naive)

    import psutil

    servers = {}
    try:
        designs = ("budgeted",) + (() if args.no_naive else ("naive",))
        designs += (f"min_scored={args.min_scored}",) if args.min_scored else ()
        for design in designs:
            port = free_port()
            proc = start_server(args.model, port, naive=design == "naive",
                                min_scored=args.min_scored if design.startswith("min_scored") else 0)
            servers[design] = (proc, f"http://127.0.0.1:{port}")
        for _, base in servers.values():
            # Warm up with generous budgets: first-call allocations, and the reranker's cost model settles.
            with httpx.Client(base_url=base, timeout=600) as c:
                for h in HISTORIES[:4]:
                    c.post("/reply", json={"history": h, "budget_ms": 2000, "n_candidates": args.n_candidates})
        rss = psutil.Process(servers["budgeted"][0].pid).memory_info().rss / 2**20
        print(f"# /reply on loopback, {args.n_candidates} candidates requested; {platform.machine()},"
              f" {os.cpu_count()} cores, python {platform.python_version()}; server RSS after warm-up {rss:.0f} MiB")
        print("| design | budget ms | clients | replies | shed (503) | min ms | p50 ms | p95 ms | p99 ms | replies/s |"
              " editor read/reply (mean) | (median) | first stage scored (median) | over budget+50 ms | timed out |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        results = {}
        runs = [("budgeted", budget, conc, args.requests, args.seconds) for conc, budget in args.levels]
        if args.min_scored:
            runs += [(f"min_scored={args.min_scored}", budget, conc, args.requests, args.seconds)
                     for conc, budget in args.shed_levels]
        if not args.no_naive:
            runs += [("naive", None, conc, args.naive_requests, 0.0) for conc in args.naive_clients]
        for design, budget, conc, total, seconds in runs:
            body = {"n_candidates": args.n_candidates} | ({"budget_ms": budget} if budget else {})
            r = asyncio.run(run_level(servers[design][1], conc, max(total, conc), body, seconds))
            over = int((r["latencies"] > budget + 50).sum()) if budget else "-"
            results[(design, budget, conc)] = r
            print(f"| {design} | {budget or 'none'} | {conc} | {r['n']} | {r['shed']} | {r['min']:.0f} | {r['p50']:.0f} |"
                  f" {r['p95']:.0f} | {r['p99']:.0f} | {r['rps']:.2f} | {r['scored']:.0f} | {r['scored_median']:.0f} |"
                  f" {r['first_stage']:.0f} | {over} | {r['timed_out']} |", flush=True)
        print("\nWhere a turn's time went (medians, ms), and the editor's reads per second over all turns:\n")
        print("| design | budget ms | clients | " + " | ".join(STAGES[:-1]) + " | reading | editor reads/s | errors |")
        print("|---|---|---|" + "---|" * (len(STAGES) + 2))
        for (design, budget, conc), r in results.items():
            print(f"| {design} | {budget or 'none'} | {conc} | " +
                  " | ".join(f"{r['stages'][name]:.0f}" for name in STAGES[:-1]) +
                  f" | {r['reading']:.0f} | {r['reads_per_s']:.0f} | {r['errors']} |")
        print()
        for (design, budget, conc), ours in results.items():
            naive = results.get(("naive", None, conc))
            if design != "budgeted" or naive is None:
                continue
            print(f"clients={conc:>2} budget={budget:>5} ms: p99 naive/budgeted = {naive['p99'] / ours['p99']:.1f}x,"
                  f" replies/s budgeted/naive = {ours['rps'] / naive['rps']:.1f}x,"
                  f" editor read per reply {ours['scored']:.0f} vs {naive['scored']:.0f}")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
