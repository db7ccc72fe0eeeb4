"""Budget regret: how often is a budgeted turn's reply the one the editor would pick after reading everything?

Real turns: contexts from held-out chitchat conversations and from the subtitle samples in ../shared/samples,
4,096 candidates from the default writer. For each turn (fixed seed, argmax pick):
- the reference: the same turn's candidates (generated and filtered without a time limit) all read by the editor,
  and its argmax;
- budgeted turns at 250, 500 and 1,000 ms through the engine (`Engine.reply`), reading in the order of the Markov
  prior (the order before the first stage, the baseline row) and of the first stage.
A turn agrees when its reply is the reference's. We also report how many candidates the editor read and where
the budgeted reply ranks among all of them (its editor rank: 0 is the reference itself).

    .venv/bin/python benchmarks/bench_regret.py [--model models/default] [--turns 12]
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = (250, 500, 1000)
N_CANDIDATES = 4096


def contexts(docs: list, n: int, seed: int, lines: int = 4) -> list[list[str]]:
    """n histories of up to `lines` consecutive lines from random places in the documents."""
    rng = np.random.default_rng(seed)
    docs = [d for d in docs if len(d.lines) >= 2]
    out = []
    for _ in range(n):
        doc = docs[int(rng.integers(len(docs)))]
        j = int(rng.integers(1, len(doc.lines)))
        out.append([line.text for line in doc.lines[max(0, j - lines) : j]])
    return out


def main() -> int:
    """Run every turn at every budget with both orders; print one table per data set."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--turns", type=int, default=12, help="turns per data set")
    parser.add_argument("--samples", default=str(ROOT.parent / "shared" / "samples"))
    args = parser.parse_args()

    from corpus.chitchat import read_chitchat
    from reranker.__main__ import read_split
    from reranker.windows import split_of
    from server.models import load_engine

    engine = load_engine(args.model)
    first_stage = engine.first_stage
    if first_stage is None:
        print(f"{args.model} has no first stage: only the prior order is measured")
    editor = engine.scorer
    data = {"held-out chitchat": contexts([d for d in read_chitchat() if split_of(d.source_id) == "test"],
                                          args.turns, seed=1)}
    paths = sorted(glob.glob(f"{args.samples}/srt/*")) + sorted(glob.glob(f"{args.samples}/opus_xml/*"))
    if paths:
        films, _ = read_split(paths, "all")
        data["subtitles"] = contexts(films, args.turns, seed=2)
    orders = {"Markov prior (before)": None, "first stage": first_stage} if first_stage else {"Markov prior": None}

    for name, histories in data.items():
        rows: dict[tuple[str, int], dict[str, list]] = {}
        started = time.perf_counter()
        for t, history in enumerate(histories):
            seed = 1000 + t
            engine.first_stage = None  # the reference's candidate set does not depend on the order
            plan = engine.plan(history, budget_ms=600_000, n_candidates=N_CANDIDATES, seed=seed)
            candidates = engine.prepare(plan)
            if not len(candidates):
                continue
            full = np.asarray(editor.score(plan.context, candidates.texts), dtype=np.float64)
            rank_of = {text: int((full > full[i]).sum()) for i, text in enumerate(candidates.texts)}
            best = candidates.texts[int(np.argmax(full))]
            for label, stage in orders.items():
                engine.first_stage = stage
                for budget_ms in BUDGETS:
                    if hasattr(editor, "_contexts"):
                        editor._contexts.clear()  # a real turn embeds its context afresh
                    reply = engine.reply(history, budget_ms=budget_ms, n_candidates=N_CANDIDATES, seed=seed)
                    row = rows.setdefault((label, budget_ms), {"agree": [], "rank": [], "read": [], "ms": []})
                    row["agree"].append(reply.reply == best)
                    # a reply outside the reference set (a budget cut the generation) ranks after all of it
                    row["rank"].append(rank_of.get(reply.reply, len(candidates)))
                    row["read"].append(reply.stats["scored"])
                    row["ms"].append(reply.stats["elapsed_ms"])
            print(f"  {name}: turn {t + 1}/{len(histories)} ({len(candidates)} candidates read in full), "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        engine.first_stage = first_stage
        n = len(next(iter(rows.values()))["agree"]) if rows else 0
        print(f"\n{name}: {n} turns of {N_CANDIDATES:,} candidates; the reference reads all that pass the filters")
        print("| order | budget | agrees with reading all | editor rank of the reply (median) | in the editor's "
              "top 10 | read (median) | elapsed ms (median) |")
        print("|---|---|---|---|---|---|---|")
        for (label, budget_ms), row in rows.items():
            agree = np.asarray(row["agree"], dtype=float)
            ranks = np.asarray(row["rank"])
            se = agree.std() / math.sqrt(len(agree))
            print(f"| {label} | {budget_ms} ms | {agree.mean():.2f} ± {se:.2f} | {np.median(ranks):.0f} | "
                  f"{np.mean(ranks < 10):.2f} | {np.median(row['read']):.0f} | {np.median(row['ms']):.0f} |")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
