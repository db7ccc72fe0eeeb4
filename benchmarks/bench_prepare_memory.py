"""Prepare memory: peak RSS of `python -m reranker prepare` (parent + workers) as the dump grows, against a naive peer.

The issue's bound: prepare streams a dump "with bounded memory, under 4 GB even for a 300M-token dump".
For each target size this script writes a synthetic OPUS mono-text dump (`NNNNNN.txt.gz`, one sentence per
line) into a temporary folder, runs `python -m reranker prepare` on it as a subprocess, and samples the whole
process tree every 0.2 s: the sum of RSS over parent and workers (an upper bound: forked workers share
copy-on-write pages with the parent, which RSS counts once per process), the sum of PSS (shared pages split
between the processes that map them, so the true total), and the largest single process. Tokens are read
from the prepared index.json: `line_tokens` (the dump's lines, tokenized after cleaning) and `tokens` (the
encoded samples written).

The dump's lines are chitchat utterances drawn at random with replacement (a quarter of them two utterances
joined), so no two files are alike; the line count per file comes from the mean tokens per line measured on
the same kind of lines. Nothing is written inside the repository, and the temporary folder is deleted.

Peer: what a user would otherwise write, in a subprocess measured the same way: read every line into a list,
tokenize the list in one call with the same fast tokenizer (`tokenizer(lines)`, its Rust threads on), keep all
ids and `np.concatenate` them at the end. It does less work (no cleaning, no windows, nothing written); it
runs only up to `--peer-max-tokens` (and is killed above `--peer-kill-gb`), since its memory grows with the dump.

Sizes run in ascending order; before each, the time is extrapolated from the throughput of the last one, and
a size that would take longer than `--max-minutes` is skipped (and the extrapolation printed).

    .venv/bin/python benchmarks/bench_prepare_memory.py [--tokens 3e6 3e7 3e8] [--workers 2] [--file-mb 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from measure import tokenizer_path  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
GB = 1024**3
MB = 1024**2



# ---------------------------------------------------------------------------------------------- the dump


def chitchat_lines() -> list[str]:
    """Every chitchat utterance, in order."""
    from corpus.chitchat import read_chitchat

    return [line.text for doc in read_chitchat() for line in doc.lines]


def draw_lines(pool: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """n lines drawn with replacement from `pool`; a quarter of them two utterances joined."""
    picks = rng.integers(len(pool), size=(n, 2))
    joined = rng.random(n) < 0.25
    return [f"{pool[a]} {pool[b]}" if j else pool[a] for (a, b), j in zip(picks, joined, strict=True)]


def tokens_per_line(pool: list[str], rng: np.random.Generator, n: int = 20_000) -> tuple[float, float]:
    """Mean tokens and bytes per generated line, measured on a sample with the benchmark's tokenizer."""
    from reranker.pairs import encode_lines
    from reranker.prepare import load_tokenizer

    lines = draw_lines(pool, n, rng)
    ids = encode_lines(load_tokenizer(tokenizer_path()), lines)
    return sum(map(len, ids)) / n, sum(len(s.encode()) + 1 for s in lines) / n


def write_dump(
    folder: Path,
    target_tokens: int,
    pool: list[str],
    per_line: tuple[float, float],
    file_mb: float,
    seed: int,
) -> dict:
    """Write `NNNNNN.txt.gz` files of about `file_mb` decompressed MB until about `target_tokens` tokens."""
    rng = np.random.default_rng(seed)
    tok_per_line, bytes_per_line = per_line
    total_lines = int(target_tokens / tok_per_line)
    lines_per_file = max(1, int(file_mb * MB / bytes_per_line))
    folder.mkdir(parents=True)
    written = files = raw = 0
    while written < total_lines:
        n = min(lines_per_file, total_lines - written)
        data = ("\n".join(draw_lines(pool, n, rng)) + "\n").encode()
        with gzip.open(folder / f"{files:06d}.txt.gz", "wb", compresslevel=1) as f:
            f.write(data)
        written, files, raw = written + n, files + 1, raw + len(data)
    disk = sum(p.stat().st_size for p in folder.iterdir())
    return {"lines": written, "files": files, "raw_bytes": raw, "disk_bytes": disk}


# ----------------------------------------------------------------------------------------- measurement


@dataclass
class Peak:
    tree_rss: int = 0  # sum of RSS over the tree (upper bound)
    tree_pss: int = 0  # sum of PSS over the tree (shared pages split)
    single_rss: int = 0  # largest single process
    parent_rss: int = 0
    processes: int = 0  # most processes seen at once
    samples: int = 0


def run_measured(cmd: list[str], kill_bytes: int | None = None, interval: float = 0.2) -> tuple[dict, Peak]:
    """Run `cmd`, sampling the process tree's memory every `interval` s; returns (result, peaks)."""
    peak = Peak()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = threading.Event()

    def sample() -> None:
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = pss = single = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss, single = rss + info.rss, pss + info.pss, max(single, info.rss)
                if p is root:
                    peak.parent_rss = max(peak.parent_rss, info.rss)
            peak.tree_rss, peak.tree_pss = max(peak.tree_rss, rss), max(peak.tree_pss, pss)
            peak.single_rss, peak.processes = max(peak.single_rss, single), max(peak.processes, len(procs))
            peak.samples += 1
            if kill_bytes is not None and rss > kill_bytes:
                killed.set()
                for p in reversed(procs):
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass
                break
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    result = {"wall_s": wall, "returncode": proc.returncode, "killed": killed.is_set()}
    if proc.returncode != 0 and not killed.is_set():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result["stdout"], result["stderr"] = stdout, stderr
    return result, peak


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_ours(dump: Path, out: Path, workers: int, shard_mb: float | None) -> tuple[dict, Peak]:
    """`python -m reranker prepare` on the dump; adds the token counts from index.json and the output size."""
    cmd = [sys.executable, "-m", "reranker", "prepare", str(dump), "--tokenizer", tokenizer_path()]
    cmd += ["--out", str(out), "--workers", str(workers), "--quiet"]
    if shard_mb is not None:
        cmd += ["--shard-mb", str(shard_mb)]
    result, peak = run_measured(cmd)
    index = json.loads((out / "index.json").read_text())
    splits = index["splits"].values()
    result["line_tokens"] = sum(s.get("line_tokens", 0) for s in splits)
    result["sample_tokens"] = sum(s.get("tokens", 0) for s in splits)
    result["samples"] = sum(s.get("samples", 0) for s in splits)
    result["shards"] = len(index["shards"])
    result["problems"] = index["report"].get("n_problems", 0)
    result["out_bytes"] = folder_bytes(out)
    return result, peak


def run_peer(dump: Path, kill_gb: float) -> tuple[dict, Peak]:
    """The naive peer (this script with --peer-dump) in a subprocess, killed above `kill_gb` tree RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peer-dump", str(dump)]
    result, peak = run_measured(cmd, kill_bytes=int(kill_gb * GB))
    if not result["killed"]:
        result["line_tokens"] = json.loads(result["stdout"].strip().splitlines()[-1])["tokens"]
    return result, peak


def peer_main(dump: str) -> None:
    """The naive way: every line in a list, one tokenizer call, every id kept, concatenated at the end."""
    from transformers import AutoTokenizer

    lines: list[str] = []
    for path in sorted(Path(dump).rglob("*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines.extend(s for s in (raw.strip() for raw in f) if s)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path())
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    flat = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids])  # (N,)
    print(json.dumps({"tokens": int(flat.size), "lines": len(lines)}))


# ------------------------------------------------------------------------------------------------ main


def fmt_gb(n: int) -> str:
    return f"{n / GB:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, nargs="+", default=[3e6, 3e7], help="dump sizes in tokens")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare --workers")
    parser.add_argument("--file-mb", type=float, default=4.0, help="decompressed MB per dump file")
    parser.add_argument("--shard-mb", type=float, help="prepare --shard-mb (default: prepare's own)")
    parser.add_argument("--peer-max-tokens", type=float, default=3e7, help="largest size the peer runs at")
    parser.add_argument("--peer-kill-gb", type=float, default=12.0, help="kill the peer above this tree RSS")
    parser.add_argument(
        "--max-minutes", type=float, default=35.0, help="skip a size extrapolated to take longer"
    )
    parser.add_argument(
        "--tmp", help="parent folder for the temporary dump and output (default: system temp)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-dump", help=argparse.SUPPRESS)  # internal: run the peer on this dump
    args = parser.parse_args()
    if args.peer_dump:
        peer_main(args.peer_dump)
        return

    load_start = os.getloadavg()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?"
    )
    print(f"machine: {os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / GB:.1f} GB RAM")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in load_start)}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")

    pool = chitchat_lines()
    rng = np.random.default_rng(args.seed)
    per_line = tokens_per_line(pool, rng)
    print(f"generated lines: {per_line[0]:.2f} tokens, {per_line[1]:.1f} bytes per line (on 20,000 lines)")

    rows: list[dict] = []
    skipped: list[str] = []
    tmp_root = Path(tempfile.mkdtemp(prefix="bench_prepare_", dir=args.tmp))
    try:
        for target in sorted(int(t) for t in args.tokens):
            if rows:
                last = rows[-1]
                rate_prep = last["line_tokens"] / last["wall_s"]
                rate_gen = last["line_tokens"] / last["gen_s"]
                estimate = target / rate_prep + target / rate_gen
                if estimate > args.max_minutes * 60:
                    msg = (
                        f"{target / 1e6:,.1f}M tokens skipped: extrapolated {estimate / 60:.0f} min "
                        f"(dump + prepare) from {last['line_tokens'] / 1e6:,.1f}M tokens at "
                        f"{rate_prep:,.0f} tokens/s prepare, {rate_gen:,.0f} tokens/s writing the dump"
                    )
                    print(msg, flush=True)
                    skipped.append(msg)
                    continue
            dump, out = tmp_root / f"dump_{target}", tmp_root / f"out_{target}"
            t0 = time.perf_counter()
            info = write_dump(dump / "en", target, pool, per_line, args.file_mb, args.seed + target)
            gen_s = time.perf_counter() - t0
            print(
                f"\n{target / 1e6:,.1f}M-token target: {info['files']} files, {info['lines']:,} lines, "
                f"{info['raw_bytes'] / MB:,.0f} MB text, {info['disk_bytes'] / MB:,.0f} MB gzipped, "
                f"written in {gen_s:.0f} s",
                flush=True,
            )
            ours, peak = run_ours(dump, out, args.workers, args.shard_mb)
            row = {"target": target, "gen_s": gen_s, **info, **ours, "peak": peak}
            print(
                f"  ours: {ours['line_tokens']:,} line tokens ({ours['sample_tokens']:,} sample tokens, "
                f"{ours['samples']:,} samples, {ours['shards']} shards, {ours['problems']} problems) in "
                f"{ours['wall_s']:.1f} s = {ours['line_tokens'] / ours['wall_s']:,.0f} tokens/s; peak tree RSS "
                f"{fmt_gb(peak.tree_rss)} GB (PSS {fmt_gb(peak.tree_pss)} GB), largest process "
                f"{fmt_gb(peak.single_rss)} GB, parent {fmt_gb(peak.parent_rss)} GB, {peak.processes} processes; "
                f"output {ours['out_bytes'] / MB:,.0f} MB",
                flush=True,
            )
            shutil.rmtree(out)
            if target <= args.peer_max_tokens:
                peer, ppeak = run_peer(dump, args.peer_kill_gb)
                row["peer"], row["peer_peak"] = peer, ppeak
                if peer["killed"]:
                    print(
                        f"  peer: killed above {args.peer_kill_gb} GB tree RSS after {peer['wall_s']:.0f} s"
                    )
                else:
                    print(
                        f"  peer: {peer['line_tokens']:,} tokens in {peer['wall_s']:.1f} s = "
                        f"{peer['line_tokens'] / peer['wall_s']:,.0f} tokens/s; peak tree RSS "
                        f"{fmt_gb(ppeak.tree_rss)} GB (PSS {fmt_gb(ppeak.tree_pss)} GB)",
                        flush=True,
                    )
            else:
                print(
                    f"  peer: not run above {args.peer_max_tokens / 1e6:,.0f}M tokens (its memory grows with the dump)"
                )
            shutil.rmtree(dump)
            rows.append(row)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    load_end = os.getloadavg()
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in load_end)}")
    print(
        "\n| dump tokens (cleaned lines) | files | gz MB | wall s | tokens/s | peak tree RSS GB | tree PSS GB "
        "| largest process GB | output MB | peer peak RSS GB | peer s | peak ratio peer/ours | time ratio peer/ours |"
    )
    print("|" + "---|" * 13)
    for r in rows:
        p = r["peak"]
        peer_cells = ["not run", "", "", ""]
        if "peer" in r:
            pp, pr = r["peer_peak"], r["peer"]
            if pr["killed"]:
                peer_cells = [f"> {args.peer_kill_gb:.0f} (killed)", "", "", ""]
            else:
                peer_cells = [
                    fmt_gb(pp.tree_rss),
                    f"{pr['wall_s']:.1f}",
                    f"{pp.tree_rss / p.tree_rss:.2f}x",
                    f"{pr['wall_s'] / r['wall_s']:.2f}x",
                ]
        print(
            f"| {r['line_tokens']:,} | {r['files']} | {r['disk_bytes'] / MB:,.0f} | {r['wall_s']:.1f} "
            f"| {r['line_tokens'] / r['wall_s']:,.0f} | {fmt_gb(p.tree_rss)} | {fmt_gb(p.tree_pss)} "
            f"| {fmt_gb(p.single_rss)} | {r['out_bytes'] / MB:,.0f} | " + " | ".join(peer_cells) + " |"
        )
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(
            f"\ngrowth of our peak tree RSS from {a['line_tokens'] / 1e6:,.1f}M to {b['line_tokens'] / 1e6:,.1f}M "
            f"tokens ({b['line_tokens'] / a['line_tokens']:.0f}x the dump): "
            f"{b['peak'].tree_rss / a['peak'].tree_rss:.2f}x "
            f"({fmt_gb(a['peak'].tree_rss)} -> {fmt_gb(b['peak'].tree_rss)} GB); largest process "
            f"{b['peak'].single_rss / a['peak'].single_rss:.2f}x"
        )
    worst = max((r["peak"].tree_rss for r in rows), default=0)
    print(
        f"bound: under 4 GB -> worst peak tree RSS {fmt_gb(worst)} GB: {'met' if worst < 4 * GB else 'MISSED'}"
    )
    for msg in skipped:
        print(msg)


if __name__ == "__main__":
    main()
