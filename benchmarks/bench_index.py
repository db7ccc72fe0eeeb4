"""Approximate nearest-neighbour libraries for the reply index: build time, memory, query latency, recall@64.

The entries are what the index will hold: the default writer's lines, embedded by the default editor's first
stage (static word vectors distilled from MiniLM, unit length; cheap enough to embed a million
lines in seconds). The queries are held-out chitchat contexts embedded the same way. Recall@64 is against exact
inner-product search (numpy, the same vectors). Every library runs on the same vectors and queries, one query at
a time (as a turn asks), on this machine's 2 cores.

    .venv/bin/pip install faiss-cpu hnswlib     # the peers compared; usearch (the winner) is a project dependency
    .venv/bin/python benchmarks/bench_index.py --entries 100000 1000000 [--libs faiss-hnsw faiss-ivfpq hnswlib usearch-f16]
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
K = 64


def rss_mb() -> float:
    """Resident memory now, in MB (from /proc: ru_maxrss is a peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def entries_and_queries(n: int, n_queries: int, model_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """n writer lines and n_queries held-out contexts, embedded by the first stage: unit float32 (n, d)."""
    from corpus.chitchat import read_chitchat
    from markov import MarkovModel
    from reranker.first_stage import FirstStage
    from reranker.runtime import unit
    from reranker.windows import split_of

    stage = FirstStage.load(model_dir / "editor" / "first_stage")
    writer = MarkovModel.load(model_dir / "markov")
    rng = np.random.default_rng(0)
    lines: list[str] = []
    while len(lines) < n:
        lines += writer.generate(min(65536, n - len(lines)), rng).candidates
    vecs = np.concatenate([unit(stage.embed(lines[i : i + 65536])) for i in range(0, n, 65536)])
    test = [doc for doc in read_chitchat() if split_of(doc.source_id) == "test"]
    contexts = [[line.text for line in doc.lines[max(0, i - 3) : i]] for doc in test for i in range(1, len(doc.lines))]
    pick = rng.choice(len(contexts), n_queries, replace=False)
    queries = np.stack([unit(stage.context_vectors(contexts[i])[:1])[0] for i in pick])
    return vecs.astype(np.float32), queries.astype(np.float32)


def exact(vecs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """The true top K ids per query by inner product."""
    out = []
    for lo in range(0, len(queries), 64):
        sims = queries[lo : lo + 64] @ vecs.T
        top = np.argpartition(-sims, K, axis=1)[:, :K]
        out.append(top)
    return np.concatenate(out)


def build(lib: str, vecs: np.ndarray, ef: int = 128):
    """(search(query) -> ids, size note) for a library's index over vecs."""
    n, d = vecs.shape
    if lib == "faiss-hnsw":
        import faiss

        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(vecs)
        index.hnsw.efSearch = ef
        return lambda q: index.search(q[None], K)[1][0], "fp32 vectors + graph M 32"
    if lib == "faiss-ivfpq":
        import faiss

        nlist = int(4 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(d)
        m = d // 8  # 8 dimensions a sub-quantizer, one byte each
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.train(vecs[np.random.default_rng(0).choice(n, min(n, 100 * nlist), replace=False)])
        index.add(vecs)
        index.nprobe = 32
        # PQ codes rank roughly: rerank the best 4 K exactly, as a real turn would, for a fair recall
        def search(q, keep=quantizer):  # the quantizer must outlive the index
            ids = index.search(q[None], 4 * K)[1][0]
            ids = ids[ids >= 0]
            return ids[np.argsort(-(vecs[ids] @ q))[:K]]
        return search, f"PQ {m} x 8 bit, nlist {nlist}, nprobe 32, exact rerank of 4K"
    if lib == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, ef_construction=80, M=32)
        index.add_items(vecs, num_threads=2)
        index.set_ef(ef)
        return lambda q: index.knn_query(q[None], k=K)[0][0], "fp32 vectors + graph M 32"
    if lib.startswith("usearch"):
        from usearch.index import Index

        dtype = lib.split("-")[1] if "-" in lib else "f16"
        index = Index(ndim=d, metric="ip", dtype=dtype, connectivity=32, expansion_add=80, expansion_search=ef)
        index.add(np.arange(n), vecs, threads=2)
        return lambda q: index.search(q, K).keys, f"{dtype} vectors + graph connectivity 32"
    raise ValueError(f"unknown library {lib!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--libs", nargs="+", default=["faiss-hnsw", "faiss-ivfpq", "hnswlib", "usearch-f16", "usearch-i8"])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--ef", type=int, default=128, help="graph search width (ef, expansion_search)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}, {len(open('/proc/cpuinfo').read().split('processor')) - 1} cpus")
    print("| entries | library | build s | memory added MB | query p50 ms | query p99 ms | recall@64 | index |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.entries:
        vecs, queries = entries_and_queries(n, args.queries, args.model)
        truth = exact(vecs, queries)
        started = time.perf_counter()
        for q in queries[:100]:
            np.argpartition(-(vecs @ q), K)[:K]
        exact_ms = (time.perf_counter() - started) / 100 * 1000
        print(f"| {n:,} | exact (numpy matmul) | 0 | 0 | {exact_ms:.1f} (mean) | | 1.000 | fp32 vectors |", flush=True)
        for lib in args.libs:
            gc.collect()
            before = rss_mb()
            started = time.perf_counter()
            try:
                search, note = build(lib, vecs, args.ef)
            except ImportError as exc:
                print(f"| {n:,} | {lib} | not installed ({exc}) | | | | | |")
                continue
            built = time.perf_counter() - started
            added = rss_mb() - before
            times, recall = [], []
            for q, true in zip(queries, truth, strict=True):
                t = time.perf_counter()
                ids = search(q)
                times.append(time.perf_counter() - t)
                recall.append(len(set(np.asarray(ids).tolist()) & set(true.tolist())) / K)
            times_ms = np.asarray(times) * 1000
            print(f"| {n:,} | {lib} | {built:.1f} | {added:.0f} | {np.percentile(times_ms, 50):.2f} | "
                  f"{np.percentile(times_ms, 99):.2f} | {np.mean(recall):.3f} | {note}, ef {args.ef} |", flush=True)
            del search
    return 0


if __name__ == "__main__":
    sys.exit(main())
