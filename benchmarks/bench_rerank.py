"""Scoring speed: riposte's cross-encoder and default editor vs sentence-transformers' peers vs the FLOP limit.

4,096 candidates of 3-25 words (cut from chitchat lines) against one 3-line context, the same MiniLM-L6
weights for every scorer. The limit is this machine's bf16 matmul peak, measured in the same run, divided
by the model's FLOPs per candidate at the candidates' real (unpadded) token lengths.
- cross-encoder: `Reranker.score` vs `CrossEncoder.predict` (each pair is one forward of context + candidate);
- the default editor (bi-encoder + fluency head): `Editor.score` vs `SentenceTransformer.encode` + cosine, the
  bi-encoder a user would otherwise pick (each candidate is one forward of itself; the context once).

    .venv/bin/python benchmarks/bench_rerank.py [--repeats 3] [--n 4096]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import timed  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from corpus.chitchat import read_chitchat  # noqa: E402
from reranker.model import Reranker, cpu_has_bf16, default_backbone  # noqa: E402


def make_inputs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A 3-line context and n candidates of 3-25 words, cut from chitchat utterances."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    lines: list[str] = []
    for i, doc in enumerate(read_chitchat()):
        for text in doc.texts():
            lines.append(text)
            words.extend(text.split())
        if i >= 300:
            break
    candidates = []
    for _ in range(n):
        k = int(rng.integers(3, 26))
        start = int(rng.integers(0, len(words) - k))
        candidates.append(" ".join(words[start : start + k]))
    return lines[:3], candidates



def bf16_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best measured bf16 matmul rate on this machine, in FLOP/s."""
    a = torch.randn(size, size, dtype=torch.bfloat16)
    b = torch.randn(size, size, dtype=torch.bfloat16)
    best = min(timed(lambda: a @ b, repeats))
    return 2 * size**3 / best


def flops_per_candidate(config, n_tokens: float) -> float:
    """Forward FLOPs of one encoded pair of n_tokens: the dense layers plus the attention products."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * h * h + 2 * h * inter)  # Q, K, V, O and the two feed-forward matmuls, per token
    attention = 2 * 2 * n_tokens * h  # QK^T and attention x V, per token
    return layers * n_tokens * (dense + attention)


def report(name: str, n: int, seconds: list[float]) -> float:
    """Print min/median candidates per second; return the best rate."""
    best, median = n / min(seconds), n / statistics.median(seconds)
    print(f"{name:<42} best {best:8.0f} cand/s   median {median:8.0f} cand/s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-st", action="store_true", help="skip sentence-transformers (it is slow)")
    args = parser.parse_args()

    context, candidates = make_inputs(args.n)
    print(f"machine: {torch.get_num_threads()} threads, torch {torch.__version__}; {args.n} candidates vs a 3-line context")

    with tempfile.TemporaryDirectory() as tmp:
        Reranker.from_backbone(default_backbone()).save(Path(tmp) / "rr")
        rr = Reranker.load(Path(tmp) / "rr")
    encoded = rr.encode(context, candidates)
    mean_tokens = float(np.mean([len(e) for e in encoded]))
    print(f"riposte dtype {rr.dtype}, mean encoded length {mean_tokens:.1f} tokens, batch_tokens {rr.batch_tokens}")

    riposte_best = report("riposte Reranker.score", args.n, timed(lambda: rr.score(context, candidates), args.repeats))

    limit = None
    if cpu_has_bf16():  # without native bf16 the matmul is emulated: minutes to measure, and no limit worth quoting
        peak = bf16_peak()
        flops = flops_per_candidate(rr.model.config, mean_tokens)
        limit = peak / flops
        print(f"bf16 matmul peak {peak / 1e9:.0f} GFLOP/s; {flops / 1e6:.0f} MFLOP per candidate -> limit {limit:.0f} cand/s")
    else:
        print("no native bf16 on this CPU (fp32 everywhere): the bf16 FLOP limit is not measured")

    st_best = None
    if not args.skip_st:
        from sentence_transformers import CrossEncoder

        ce = CrossEncoder(default_backbone(), num_labels=1, device="cpu")
        pairs = [(" | ".join(context), c) for c in candidates]
        st_best = report(
            "sentence-transformers CrossEncoder.predict",
            args.n,
            timed(lambda: ce.predict(pairs, batch_size=32, show_progress_bar=False), max(1, args.repeats - 1)),
        )

    from reranker.editor import Editor

    editor = Editor.from_backbone()

    def editor_score():
        editor._contexts.clear()  # the context is embedded in every repeat, as in a turn's first slice
        return editor.score(context, candidates)

    editor_best = report("riposte Editor.score (the default editor)", args.n, timed(editor_score, args.repeats))
    st_bi_best = None
    if not args.skip_st:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(default_backbone(), device="cpu")

        def st_score():
            vecs = st.encode([" ".join(context), *candidates], batch_size=32, normalize_embeddings=True)
            return vecs[1:] @ vecs[0]

        st_bi_best = report("sentence-transformers encode + cosine", args.n, timed(st_score, max(1, args.repeats - 1)))

    if limit:
        print(f"riposte / limit: {riposte_best / limit:.0%} (target >= 50%)")
    if st_best:
        print(f"riposte / sentence-transformers: {riposte_best / st_best:.2f}x (target >= 3x)")
    print(f"editor / cross-encoder: {editor_best / riposte_best:.2f}x")
    if st_bi_best:
        print(f"editor / sentence-transformers bi-encoder: {editor_best / st_bi_best:.2f}x")


if __name__ == "__main__":
    main()
