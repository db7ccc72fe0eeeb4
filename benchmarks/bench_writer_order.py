"""The writer's own quality by n-gram order: how often its lines parse as sentences, how novel and how fast.

Builds a chitchat writer at each order (as `markov build --input chitchat --order N` does), samples lines from a
fixed seed, and judges the first `--judge` of them with the grammar parser of `bench_replies.py` (CMU Link
Grammar, Debian's python3-link-grammar): the share that parses as whole sentences, the share that is a chitchat
line verbatim, the share distinct, words per line, and the time to write them.

Then, for `--contexts` random two-line chitchat contexts, the ways a turn can write its candidates, 512 a context
as a turn's seeded half: plain lines, lines begun at the context's rarest known word (`start=`, how turns were
seeded before), whole lines written around its rarest known words (`around=`, as drawn), and the same thinned by
length with `unbias_above=k` for each `--around-unbias-above` k (a line of L tokens kept with probability
min(1, k/L); turns use k = 2). Each is judged the same way, with the share that names one of the context's words
and the time per 512; then the words per line of people's own lines in as many random conversations.

    .venv/bin/python benchmarks/bench_writer_order.py [--orders 2 3] [--lines 4096] [--judge 500] [--contexts 200]
        [--around-unbias-above 2 4]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--lines", type=int, default=4096)
    parser.add_argument("--judge", type=int, default=500, help="lines judged by the grammar parser")
    parser.add_argument("--contexts", type=int, default=200, help="chitchat contexts for the seeded kinds")
    parser.add_argument("--around-unbias-above", type=int, nargs="*", default=[2],
                        help="also write around the words with these unbias_above values")
    args = parser.parse_args()

    from bench_replies import grammar_parser

    from corpus.chitchat import cleaned_chitchat, read_chitchat
    from markov import MarkovConfig, MarkovModel

    parses = grammar_parser()
    if parses is None:
        return 1
    lines = [(line.text, 1.0) for doc in cleaned_chitchat() for line in doc.lines]  # as the served writer reads it
    human = {text.lower() for text, _ in lines}
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}; chitchat, {len(lines):,} lines")
    print("| order | build s | lines | write ms | parses | verbatim | distinct | words |\n|---|---|---|---|---|---|---|---|")
    for order in args.orders:
        started = time.perf_counter()
        model = MarkovModel.build(lines, MarkovConfig(order=order))
        built = time.perf_counter() - started
        started = time.perf_counter()
        out = model.generate(args.lines, np.random.default_rng(0)).candidates
        wrote = time.perf_counter() - started
        judged = [parses(text) for text in out[: args.judge]]
        p = float(np.mean(judged))
        print(f"| {order} | {built:.1f} | {len(out):,} | {wrote * 1000:.0f} | {p:.3f} ± {math.sqrt(p * (1 - p) / len(judged)):.3f} "
              f"| {np.mean([t.lower() in human for t in out]):.3f} | {len(set(out)) / len(out):.3f} "
              f"| {np.mean([len(t.split()) for t in out]):.1f} |", flush=True)

    from corpus.text import words

    docs = [doc for doc in read_chitchat() if len(doc.lines) >= 2]
    rng = np.random.default_rng(1)
    contexts = []
    for d in rng.choice(len(docs), args.contexts, replace=False):
        i = int(rng.integers(2, len(docs[d].lines) + 1))
        contexts.append([line.text for line in docs[d].lines[i - 2 : i]])
    per_context = max(1, math.ceil(args.judge / args.contexts))
    print(f"\n{args.contexts} chitchat contexts, 512 lines each, {per_context} a context judged\n"
          "| order | kind | ms per 512 | parses | names a context word | verbatim | words |\n|---|---|---|---|---|---|---|")
    for order in args.orders:
        model = MarkovModel.build(lines, MarkovConfig(order=order))
        model.warm_around()
        kinds = {"plain": None, "begun at a word": None, "around the words": 0,
                 **{f"around, unbias_above {k}": k for k in args.around_unbias_above}}
        for kind, unbias in kinds.items():
            judged, named, verbatim, lengths, seconds, calls = [], [], [], [], 0.0, 0
            for ctx in contexts:
                seeds = model.context_words(ctx, 4)
                if not seeds:
                    continue
                started = time.perf_counter()
                gen = (model.generate(512, rng) if kind == "plain" else
                       model.generate(512, rng, start=seeds[0]) if kind == "begun at a word" else
                       model.generate(512, rng, around=seeds, unbias_above=unbias))
                seconds, calls = seconds + time.perf_counter() - started, calls + 1
                for text in gen.candidates[:per_context]:
                    judged.append(parses(text))
                    named.append(bool(set(words(text)) & set(seeds)))
                    verbatim.append(text.lower() in human)
                    lengths.append(len(text.split()))
            p = float(np.mean(judged))
            print(f"| {order} | {kind} | {seconds / max(calls, 1) * 1000:.1f} | {p:.3f} ± "
                  f"{math.sqrt(p * (1 - p) / len(judged)):.3f} | {np.mean(named):.2f} | {np.mean(verbatim):.3f} "
                  f"| {np.mean(lengths):.1f} |", flush=True)
    own = np.random.default_rng(2)  # the same conversations whatever was written before
    people = [len(line.text.split()) for d in own.choice(len(docs), args.contexts, replace=False) for line in docs[d].lines]
    print(f"\npeople's lines ({args.contexts} conversations): {np.mean(people):.1f} words a line, median "
          f"{np.median(people):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
