"""Sustained load on loopback: N concurrent clients for D seconds of POST /reply at a fixed budget.

Starts its own server (`python -m server serve --no-build`, 127.0.0.1 only, a free port), warms it up under the
same load, then measures. Everything is bounded: the run stops at --duration or --max-requests, whichever comes
first, a hard wall-clock limit kills it if the server hangs, and the server is always terminated at the end.

Pass criteria (issue 6), each printed as yes/no; the exit status is 1 if any fails:
  - zero errors (any non-200 answer or transport failure);
  - p99 latency at most budget + 50 ms;
  - server RSS growth from the end of warm-up to the end of the run under 5% (no leak).
The peer is the run's own first half: the second half's p99 and throughput against the first's show any drift.

    python benchmarks/bench_reliability.py                       # 16 clients, 300 s, 500 ms budget
    python benchmarks/bench_reliability.py --duration 60 --clients 16

It needs a model dir: models/default if it has markov/ (with reranker/ it scores for real; without one, replies
are ranked by the Markov prior only, and the output says so, unless --untrained-reranker puts an untrained
MiniLM-L6 reranker next to it: the scoring load is then real though its choices are not). With no Markov model
anywhere it builds one from chitchat into a temporary folder (`python -m markov build --input chitchat`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from loopback import HISTORIES, free_port  # benchmarks/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def pick_model(model: Path, workdir: Path, untrained_reranker: bool) -> tuple[Path, str]:
    """The model dir to serve and how it ranks; builds a chitchat Markov model if there is none."""
    from server.models import has_editor, has_markov

    if has_markov(model) and (has_editor(model) or not untrained_reranker):
        return model, "the trained editor" if has_editor(model) else "NO reranker: ranked by the Markov prior only"
    built = workdir / "model"
    built.mkdir()
    if has_markov(model):
        (built / "markov").symlink_to((model / "markov").resolve())
    else:
        print(f"no Markov model in {model}: building one from chitchat into {built} ...", flush=True)
        subprocess.run([sys.executable, "-m", "markov", "build", "--input", "chitchat", "--out", str(built / "markov")],
                       cwd=ROOT, check=True, timeout=900)
    if not untrained_reranker:
        return built, "NO reranker: ranked by the Markov prior only"
    # Scoring costs what a trained one costs (same MiniLM-L6 network), so the load is real; the choices are not.
    from corpus.modeldir import EDITOR_DIR
    from reranker import Reranker

    Reranker.from_backbone().save(built / EDITOR_DIR)
    return built, "an UNTRAINED MiniLM-L6 reranker (real scoring cost, meaningless choices)"


def start_server(model: Path, port: int, budget_ms: int, timeout: float) -> subprocess.Popen:
    """`python -m server serve` on 127.0.0.1:port; returns once /health is 200."""
    cmd = [sys.executable, "-m", "server", "serve", "--model", str(model), "--no-build", "--host", "127.0.0.1",
           "--port", str(port), "--budget-ms", str(budget_ms), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with status {proc.returncode} before it was healthy")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if health.status_code == 200:
                return proc
            if health.json().get("status") == "error":
                stop_server(proc)
                raise SystemExit(f"server cannot load its models: {health.json().get('detail')}")
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise SystemExit(f"server did not become healthy in {timeout:.0f} s")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def rss_mib(pid: int) -> float:
    """Resident memory of the server process and its children, in MiB."""
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


@dataclass
class Phase:
    """What the clients saw in one phase (warm-up or measurement)."""

    started: list[float] = field(default_factory=list)  # monotonic send time of each answered request
    latency_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    timed_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, kind: str, example: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.error_examples) < 5:
                self.error_examples.append(example[:300])


def run_clients(base: str, clients: int, seconds: float, budget_ms: int, max_requests: int, phase: Phase,
                seed_offset: int = 0) -> float:
    """`clients` threads, each with its own connection, sending /reply back to back until time or count runs out."""
    stop_at = time.monotonic() + seconds
    sent = iter(range(max_requests))
    lock = threading.Lock()

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=max(10.0, 20 * budget_ms / 1000)) as http:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(sent, None)
                if i is None:
                    return
                body = {"history": HISTORIES[i % len(HISTORIES)], "budget_ms": budget_ms, "seed": seed_offset + i}
                t0 = time.monotonic()
                try:
                    r = http.post("/reply", json=body)
                except httpx.HTTPError as exc:
                    phase.error(type(exc).__name__, repr(exc))
                    continue
                ms = (time.monotonic() - t0) * 1000.0
                if r.status_code != 200:
                    phase.error(f"HTTP {r.status_code}", r.text)
                    continue
                stats = r.json()["stats"]
                with phase.lock:
                    phase.started.append(t0)
                    phase.latency_ms.append(ms)
                    phase.scored.append(stats["scored"])
                    phase.timed_out += bool(stats["timed_out"])

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)  # a request stuck past this is reported by the hard limit below
    return time.monotonic() - began


def percentiles(ms: np.ndarray) -> dict[str, float]:
    """p50/p95/p99/max of latencies in ms."""
    if len(ms) == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(ms.max())}


def main() -> int:
    """Parse arguments, start the server, warm up, measure, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default", help="riposte model dir")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--duration", type=float, default=300.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds of the same load before measuring")
    parser.add_argument("--budget-ms", type=int, default=500, help="budget of each /reply")
    parser.add_argument("--max-requests", type=int, default=200_000, help="stop after this many measured requests")
    parser.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--untrained-reranker", action="store_true",
                        help="when the model dir has no reranker, score with an untrained MiniLM-L6 one (real cost)")
    args = parser.parse_args()
    if not (1 <= args.clients <= 256 and 0 < args.duration <= 3600 and 0 <= args.warmup <= 600):
        parser.error("need 1-256 clients, a duration of at most 3600 s and a warm-up of at most 600 s")

    # A hard wall-clock limit: whatever hangs, the process (and with it the server, in `finally`) ends.
    hard_limit = args.warmup + args.duration + 300 + 900
    timer = threading.Timer(hard_limit, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()

    with tempfile.TemporaryDirectory(prefix="riposte-bench-") as tmp:
        model, ranking = pick_model(args.model, Path(tmp), args.untrained_reranker)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        t_load = time.monotonic()
        server = start_server(model, port, args.budget_ms, timeout=300)
        load_s = time.monotonic() - t_load
        try:
            warm = Phase()
            run_clients(base, args.clients, args.warmup, args.budget_ms, args.max_requests, warm, seed_offset=10**9)
            rss_warm = rss_mib(server.pid)
            rss_samples = [(0.0, rss_warm)]
            measured = Phase()
            stop_sampling = threading.Event()
            t0 = time.monotonic()

            def sample_rss() -> None:
                while not stop_sampling.wait(args.rss_every):
                    rss_samples.append((time.monotonic() - t0, rss_mib(server.pid)))

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            wall = run_clients(base, args.clients, args.duration, args.budget_ms, args.max_requests, measured)
            stop_sampling.set()
            sampler.join()
            rss_end = rss_mib(server.pid)
            server_alive = server.poll() is None
        finally:
            stop_server(server)
            timer.cancel()

    ms = np.asarray(measured.latency_ms)
    starts = np.asarray(measured.started) - t0
    n_errors = sum(measured.errors.values())
    total = len(ms) + n_errors
    lat = percentiles(ms)
    half = args.duration / 2
    first, second = percentiles(ms[starts < half]), percentiles(ms[starts >= half])
    rps_first = float((starts < half).sum() / half)
    rps_second = float((starts >= half).sum() / max(wall - half, 1e-9))
    growth = (rss_end - rss_warm) / rss_warm * 100.0
    budget = args.budget_ms
    checks = {
        "zero errors": n_errors == 0 and server_alive,
        f"p99 within budget + 50 ms ({budget + 50} ms)": lat["p99"] <= budget + 50,
        "RSS growth under 5% after warm-up": growth < 5.0,
    }

    print()
    print(f"# Sustained load: {args.clients} clients x {args.duration:.0f} s of POST /reply at a {budget} ms budget"
          f" (after {args.warmup:.0f} s of warm-up)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()};"
          f" model {model}, ranked by {ranking};"
          f" server healthy after {load_s:.1f} s")
    print(f"requests        {total:>10,}   ({len(warm.latency_ms):,} more in warm-up, "
          f"{sum(warm.errors.values())} warm-up errors)")
    print(f"errors          {n_errors:>10,}   {measured.errors or ''}")
    for example in measured.error_examples:
        print(f"    e.g. {example}")
    print(f"throughput      {len(ms) / wall:>10.1f} replies/s")
    print(f"latency ms      p50 {lat['p50']:.0f}   p95 {lat['p95']:.0f}   p99 {lat['p99']:.0f}   max {lat['max']:.0f}")
    print(f"over budget     {int((ms > budget).sum()):>10,}   (over budget + 50 ms: {int((ms > budget + 50).sum()):,};"
          f" max over budget {max(lat['max'] - budget, 0):.0f} ms)")
    print(f"server          {measured.timed_out:,} replies hit the deadline while scoring;"
          f" {np.mean(measured.scored) if measured.scored else 0:.0f} candidates scored per reply")
    print(f"RSS MiB         after warm-up {rss_warm:.1f}   end {rss_end:.1f}   max {max(r for _, r in rss_samples):.1f}"
          f"   growth {growth:+.2f}%")
    print(f"drift           second half / first half: p99 {second['p99'] / first['p99']:.2f}x,"
          f" throughput {rps_second / rps_first:.2f}x" if first["p99"] > 0 and rps_first > 0 else "drift  n/a")
    for name, ok in checks.items():
        print(f"{'yes' if ok else 'NO ':>3}  {name}")

    if args.json:
        args.json.write_text(json.dumps({
            "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup, "budget_ms": budget,
            "ranking": ranking, "requests": total, "errors": measured.errors, "replies_per_s": len(ms) / wall,
            "latency_ms": lat, "over_budget_plus_50": int((ms > budget + 50).sum()),
            "rss_mib": {"warm": rss_warm, "end": rss_end, "growth_pct": growth, "samples": rss_samples},
            "checks": checks,
        }, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
