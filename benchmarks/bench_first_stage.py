"""The first stage as a retriever: is the true next line in its top 64 / 256 of 4,096 writer candidates?

For each case, the true next line of a held-out conversation is hidden among 4,095 lines of a Markov writer
that never saw it. Each scorer orders the 4,096, and we count how often the true line lands in its top k (the
editor reads the top of that order within its budget). Scorers, on the same cases:
- first stage: the saved static word vectors (`reranker/first_stage.py`);
- Markov prior: what ordered the editor's reading before, the writer's mean log-prob per token plus the
  word overlap with the context (the engine's formula). The true line's log-prob is the writer's smoothed
  likelihood; the writer's own lines get their exact chain log-prob plus log(0.9), the most the smoothing can
  take from them, so any doubt favours the prior;
- first stage + prior: the two added, prior weighted (does the prior still help as a feature?);
- model2vec: `model2vec.distill` of the same MiniLM (PCA 128, untrained), if model2vec is importable;
- chance.
Held-out data: chitchat test conversations (writer from the train split) and the subtitle samples in
`../shared/samples` (each film's writer built from the other films).

    .venv/bin/python benchmarks/bench_first_stage.py [--model models/default] [--cases 150]
"""

from __future__ import annotations

import argparse
import glob
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import timed  # noqa: E402

POOL = 4095
KS = (64, 256)


def writer_candidates(writer, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """n distinct writer lines and their mean chain log-prob per token."""
    texts, logps, seen = [], [], set()
    for _ in range(50):  # a small writer may run out of novel lines: take what it has
        if len(texts) >= n:
            break
        gen = writer.generate(n, rng)
        for text, lp in zip(gen.candidates, gen.logprob.tolist(), strict=True):
            if text not in seen and len(texts) < n:
                seen.add(text)
                texts.append(text)
                logps.append(lp)
    return texts, np.asarray(logps, dtype=np.float64)


def make_cases(docs: list, writer_of, n: int, seed: int, context_lines: int = 3) -> list[dict]:
    """n cases: context, true line, 4,095 writer lines (with log-probs), the true line's smoothed log-prob."""
    rng = np.random.default_rng(seed)
    docs = [d for d in docs if len(d.lines) >= 2]
    cases = []
    pools: dict[int, tuple[list[str], np.ndarray]] = {}
    for _ in range(n):
        d = int(rng.integers(len(docs)))
        j = int(rng.integers(1, len(docs[d].lines)))
        writer = writer_of(d)
        if id(writer) not in pools:  # one big pool per writer, sampled per case
            pools[id(writer)] = writer_candidates(writer, 4 * POOL, np.random.default_rng(seed + len(pools)))
        texts, logps = pools[id(writer)]
        true = docs[d].lines[j].text
        pick = [i for i in rng.choice(len(texts), POOL + 1, replace=False) if texts[i] != true][:POOL]
        cases.append({
            "context": [line.text for line in docs[d].lines[max(0, j - context_lines) : j]],
            "candidates": [true] + [texts[i] for i in pick],
            "logprob": np.concatenate([[writer.log_likelihood(true)], logps[pick] + math.log(0.9)]),
        })
    return cases


def prior(case: dict) -> np.ndarray:
    """The engine's prior: mean log-prob per token + overlap of content words with the context."""
    from server.engine import overlap, words

    context_words = frozenset(w for t in case["context"] for w in words(t))
    return case["logprob"] + np.array([overlap(words(c), context_words) for c in case["candidates"]])


def rank_of_true(scores: np.ndarray) -> int:
    """How many candidates score above the true one (index 0); ties count half."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return int((s[1:] > s[0]).sum() + 0.5 * (s[1:] == s[0]).sum())


def report(name: str, ranks: list[int]) -> str:
    """One table row."""
    r = np.asarray(ranks)
    cells = [f"{np.mean(r < k):.3f} ± {np.std(r < k) / math.sqrt(len(r)):.3f}" for k in KS]
    return f"| {name} | " + " | ".join(cells) + f" | {np.median(r):.0f} | {len(r)} |"


def main() -> int:
    """Run both data sets and print one table each, plus the first stage's time per 4,096 candidates."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default", help="model dir with editor/first_stage")
    parser.add_argument("--first-stage", default=None, help="a first-stage dir (default MODEL/editor/first_stage)")
    parser.add_argument("--cases", type=int, default=150)
    parser.add_argument("--samples", default=str(ROOT.parent / "shared" / "samples"))
    parser.add_argument("--model2vec", default=None, help="a saved model2vec StaticModel dir (else distilled here "
                                                         "if model2vec is importable)")
    parser.add_argument("--prior-weight", type=float, nargs="*", default=[0.5, 2.0])
    args = parser.parse_args()

    from corpus.chitchat import cleaned_chitchat
    from corpus.modeldir import editor_dir
    from markov import MarkovModel
    from reranker.__main__ import read_split
    from reranker.first_stage import FIRST_STAGE_DIR, FirstStage, split_words
    from reranker.windows import split_of

    stage = FirstStage.load(args.first_stage or editor_dir(args.model) / FIRST_STAGE_DIR)
    static = None
    try:
        from model2vec import StaticModel

        if args.model2vec:
            static = StaticModel.from_pretrained(args.model2vec)
        else:
            from model2vec.distill import distill as m2v_distill

            from reranker.cross_encoder import default_backbone, resolve_backbone

            t0 = time.perf_counter()
            static = m2v_distill(model_name=str(resolve_backbone(default_backbone())), pca_dims=128)
            print(f"model2vec distilled in {time.perf_counter() - t0:.0f} s")
    except Exception as exc:  # optional peer: say why it is missing
        print(f"model2vec: not measured ({type(exc).__name__}: {exc})")

    chitchat = {"train": [], "test": []}
    for doc in cleaned_chitchat():
        split = split_of(doc.source_id)
        if split in chitchat:
            chitchat[split].append(doc)
    t0 = time.perf_counter()
    chat_writer = MarkovModel.build((line.text, line.weight) for doc in chitchat["train"] for line in doc.lines)
    data = {"held-out chitchat (writer: train split)": make_cases(chitchat["test"], lambda d: chat_writer,
                                                                   args.cases, seed=1)}
    paths = sorted(glob.glob(f"{args.samples}/srt/*")) + sorted(glob.glob(f"{args.samples}/opus_xml/*"))
    films, _ = read_split(paths, "all") if paths else ([], {})
    films = [f for f in films if len(f.lines) >= 2]
    if len(films) >= 2:
        writers = [MarkovModel.build((line.text, line.weight) for o, other in enumerate(films) if o != f
                                     for line in other.lines) for f in range(len(films))]
        data[f"subtitles, {len(films)} films (writer: the other films)"] = make_cases(
            films, lambda d: writers[d], args.cases, seed=2)
    print(f"cases built in {time.perf_counter() - t0:.0f} s")

    for name, cases in data.items():
        ranks: dict[str, list[int]] = {}
        for case in cases:
            fs = stage.score(case["context"], case["candidates"])
            pr = prior(case)
            rows = {"first stage": fs, "Markov prior (before)": pr}
            for w in args.prior_weight:
                rows[f"first stage + {w:g} x prior"] = fs + w * pr
            if static is not None:
                vecs = static.encode(case["candidates"])
                ctx = static.encode([" ".join(case["context"])])[0]
                norms = np.linalg.norm(vecs, axis=1) * max(np.linalg.norm(ctx), 1e-12)
                rows["model2vec distill (untrained)"] = vecs @ ctx / np.maximum(norms, 1e-12)
            rows["chance"] = np.random.default_rng(len(ranks.get("chance", []))).random(len(case["candidates"]))
            for key, scores in rows.items():
                ranks.setdefault(key, []).append(rank_of_true(scores))
        print(f"\n{name}: true line among {POOL + 1:,} candidates")
        print("| scorer | recall@64 | recall@256 | median rank | n |\n|---|---|---|---|---|")
        for key, r in ranks.items():
            print(report(key, r))

    case = next(iter(data.values()))[0]
    context, candidates = case["context"], case["candidates"]
    split = [split_words(c) for c in candidates]
    with_words = statistics.median(timed(lambda: stage.score(context, candidates, split), 20))
    from_text = statistics.median(timed(lambda: stage.score(context, candidates), 20))
    print(f"\nfirst stage, {len(candidates):,} candidates, context included: {with_words * 1000:.1f} ms given the "
          f"engine's word split, {from_text * 1000:.1f} ms from text (median of 20)")
    if static is not None:
        m2v = statistics.median(timed(lambda: static.encode(candidates), 5))
        print(f"model2vec encode of the same candidates: {m2v * 1000:.1f} ms ({m2v / with_words:.1f}x the first "
              "stage's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
