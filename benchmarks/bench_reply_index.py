"""The reply index as a turn uses it: memory it adds, query latency and recall@64 against exact search.

Loads a model dir's persona index (`riposte index` built it) the way the server does (memory-mapped, checksums
verified), then for held-out chitchat contexts (test-split conversations, never in the writer's table):

- **memory added**: the process's resident memory before loading, after loading, and after all the queries (the
  mapped pages a query touches count once read);
- **query**: `ReplyIndex.search(context, k, last_line)` as the turn calls it (k: `EngineConfig.index_k_kept` where the index
  keeps the editor's readings, else `index_k`; the context's first-stage vector, the graph
  search, the lines decoded), p50 and p99 over one query at a time; and, where the index keeps the editor's
  readings, the look-up of the hits' readings the turn scores them from (`ReplyIndex.kept`);
- **graph top-64**: the graph search alone, one query at a time over every context, in its own loop, at the
  index's own search width and at each `--ef` asked for (timed right after each query's exact search, as this
  script once did, every graph query found its caches flushed by a 512 MB product, which no turn does);
- **recall@64**: the graph's top 64 against exact inner-product search over the same stored vectors, and the exact
  search's own time (numpy over every vector: the peer a user without a graph index would run).

    .venv/bin/python benchmarks/bench_reply_index.py --model models/default [--persona default] [--queries 500]
        [--ef 256 384]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

K = 64


def rss_mb() -> float:
    """This process's resident memory now, MB (Linux /proc)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def held_out_contexts(n: int, seed: int = 0) -> list[list[str]]:
    """n contexts of 3 lines from chitchat's test-split conversations."""
    from corpus.chitchat import read_chitchat
    from reranker.windows import split_of

    docs = [d for d in read_chitchat() if split_of(d.source_id) == "test" and len(d.lines) > 3]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        doc = docs[int(rng.integers(len(docs)))]
        i = int(rng.integers(3, len(doc.lines)))
        out.append([line.text for line in doc.lines[i - 3 : i]])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--persona", default="default")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", type=int, nargs="*", default=[],
                        help="search widths (expansion_search) to time beside the index's own")
    args = parser.parse_args()

    from corpus.modeldir import INDEX_DIR
    from corpus.text import words
    from markov.personas import load_personas
    from reranker.index import ReplyIndex
    from server.models import first_stage_dir, index_fingerprints, load_first_stage

    contexts = held_out_contexts(args.queries)
    stage = load_first_stage(first_stage_dir(args.model))
    writer = load_personas(args.model / "markov")[args.persona]
    stage.add_words(words(" ".join(writer.vocab[2:])))
    del writer
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}, "
          f"{open('/proc/cpuinfo').read().count('processor')} cpus; {len(contexts)} held-out chitchat contexts")

    before = rss_mb()
    started = time.perf_counter()
    index = ReplyIndex.load(args.model / INDEX_DIR / args.persona,
                            expect=index_fingerprints(args.model, args.persona)).attach(stage)
    load_s = time.perf_counter() - started
    loaded = rss_mb()
    print(f"index: {len(index):,} entries, loaded (sha256 verified, mapped) in {load_s:.1f} s; "
          f"builds: {index.info.get('builds')}")

    from server.engine import EngineConfig

    k = EngineConfig().index_hits(index.reads is not None)  # as the turn asks
    times, kept_times = [], []
    for context in contexts:
        t = time.perf_counter()
        hits = index.search(context, k, last_line=EngineConfig.index_last_line)
        times.append(time.perf_counter() - t)
        if index.reads is not None:
            t = time.perf_counter()
            index.kept(hits.rows)
            kept_times.append(time.perf_counter() - t)
    queried = rss_mb()
    if kept_times:
        kept_ms = [1000 * t for t in kept_times]
        print(f"readings of the {k} hits (`kept`, {index.reads.shape[1]} f16 values a line, "
              f"{index.reads.nbytes / 2**20:.0f} MB on disk): p50 {np.percentile(kept_ms, 50):.2f} ms, "
              f"p99 {np.percentile(kept_ms, 99):.2f} ms")

    queries = np.stack([index.query_vector(c, EngineConfig.index_last_line) for c in contexts])
    vectors = np.asarray(index.graph.get(np.arange(len(index), dtype=np.uint64)), dtype=np.float32)
    exact_s, truths = [], []
    for q in queries[:200]:
        t = time.perf_counter()
        truths.append(set(np.argpartition(-(vectors @ q), K)[:K].tolist()))
        exact_s.append(time.perf_counter() - t)
    del vectors
    own = index.graph.expansion_search
    rows_out = []
    for ef in dict.fromkeys([own, *args.ef]):
        index.graph.expansion_search = ef
        for q in queries[:20]:  # warm: the pages a search touches are mapped in once
            index.search_vector(q, K)
        graph_s, found = [], []
        for q in queries:
            t = time.perf_counter()
            rows, _ = index.search_vector(q, K)
            graph_s.append(time.perf_counter() - t)
            found.append(set(rows.tolist()))
        recall = np.mean([len(f & t) / K for f, t in zip(found, truths, strict=False)])
        top64 = [1000 * t for t in graph_s]
        rows_out.append((ef, np.percentile(top64, 50), np.percentile(top64, 99), np.mean(graph_s), recall))
    index.graph.expansion_search = own
    graph_ms = [1000 * t for t in times]
    print(f"\n| entries | memory added: loaded / after queries (MB) | the turn's search(context, {k}) p50 / p99 ms "
          f"| exact top-64 mean ms |\n|---|---|---|---|\n| {len(index):,} | {loaded - before:.0f} / "
          f"{queried - before:.0f} | {np.percentile(graph_ms, 50):.2f} / {np.percentile(graph_ms, 99):.2f} | "
          f"{1000 * np.mean(exact_s):.1f} |")
    print(f"\n| search width (ef) | graph top-64 p50 / p99 ms (n {len(queries)}) | recall@64 (n {len(truths)}) "
          "| exact / graph (mean) |\n|---|---|---|---|")
    for ef, p50, p99, mean_s, recall in rows_out:
        mark = " (the index's own)" if ef == own else ""
        print(f"| {ef}{mark} | {p50:.2f} / {p99:.2f} | {recall:.3f} | "
              f"{np.mean(exact_s) / mean_s:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
