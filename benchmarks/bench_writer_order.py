"""The writer's own quality by n-gram order: how often its lines parse as sentences, how novel and how fast.

Builds a chitchat writer at each order (as `markov build --input chitchat --order N` does), samples lines from a
fixed seed, and judges the first `--judge` of them with the grammar parser of `bench_replies.py` (CMU Link
Grammar, Debian's python3-link-grammar): the share that parses as whole sentences, the share that is a chitchat
line verbatim, the share distinct, words per line, and the time to write them.

    .venv/bin/python benchmarks/bench_writer_order.py [--orders 2 3] [--lines 4096] [--judge 500]
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
    args = parser.parse_args()

    from bench_replies import grammar_parser

    from corpus.chitchat import read_chitchat
    from markov import MarkovConfig, MarkovModel

    parses = grammar_parser()
    if parses is None:
        return 1
    lines = [(line.text, 1.0) for doc in read_chitchat() for line in doc.lines]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
