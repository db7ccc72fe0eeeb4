"""riposte's Markov writer vs markovify 0.9, same corpus (chitchat: 258k lines), same run, state size 2.

Measures build time, model memory (tracemalloc), load time, and the time to produce 4,096 novel
candidates as text. markovify's default output test (no overlap with the corpus) is far slower, so its
rate is measured on a smaller count and scaled; its raw speed without the test is measured on 4,096.

    python benchmarks/bench_markov.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
import tracemalloc

import markovify
import numpy as np

from corpus.chitchat import read_chitchat
from markov import MarkovConfig, MarkovModel

N = 4096


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Min and median wall seconds of fn over `repeat` runs, after one warm-up."""
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def traced(fn) -> tuple[object, float, float]:
    """Run fn under tracemalloc: (result, seconds, MB still held by the result)."""
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] / 1e6
    tracemalloc.stop()
    return out, seconds, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--markovify-tested", type=int, default=200, help="sentences for markovify's tested rate")
    args = parser.parse_args()

    lines = [line.text for doc in read_chitchat() for line in doc.lines]
    words = sum(len(t.split()) for t in lines)
    print(f"corpus: chitchat, {len(lines):,} lines, {words:,} words; {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}, markovify {markovify.__version__ if hasattr(markovify, '__version__') else '0.9'}")

    # Build (timed without tracemalloc, which slows allocation-heavy code), then memory of the result.
    t = time.perf_counter()
    ours = MarkovModel.build(((text, 1.0) for text in lines), MarkovConfig(order=2))
    ours_build = time.perf_counter() - t
    del ours
    ours, _, ours_mb = traced(lambda: MarkovModel.build(((text, 1.0) for text in lines), MarkovConfig(order=2)))

    with tempfile.TemporaryDirectory() as tmp:
        ours.save(tmp)
        load_min, load_med, _ = timed(lambda: MarkovModel.load(tmp), 5)

    rng = np.random.default_rng(0)
    ours_min, ours_med, gen = timed(lambda: ours.generate(N, rng), args.repeat)
    assert len(gen.candidates) == N, gen.reason
    unique = len(set(gen.candidates))

    # markovify last: its millions of Python objects would slow our timings through the garbage collector
    text = "\n".join(lines)
    t = time.perf_counter()
    theirs = markovify.NewlineText(text, state_size=2, well_formed=False).compile(inplace=True)
    theirs_build = time.perf_counter() - t
    del theirs
    theirs, _, theirs_mb = traced(lambda: markovify.NewlineText(text, state_size=2, well_formed=False).compile(inplace=True))

    raw_min, raw_med, raw = timed(lambda: [theirs.make_sentence(test_output=False) for _ in range(N)], 3)
    raw_ok = sum(s is not None for s in raw)
    t = time.perf_counter()
    tested = [theirs.make_sentence() for _ in range(args.markovify_tested)]
    tested_rate = sum(s is not None for s in tested) / (time.perf_counter() - t)
    tested_4096 = N / tested_rate

    rows = [
        ("build (s)", ours_build, theirs_build),
        ("model memory (MB, tracemalloc)", ours_mb, theirs_mb),
        ("4,096 novel candidates, median (ms)", ours_med * 1e3, tested_4096 * 1e3),
        ("4,096 candidates, no novelty test, median (ms)", ours_med * 1e3, raw_med * 1e3),
    ]
    print(f"\n{'measure':48s} {'riposte':>12s} {'markovify':>12s} {'ratio':>9s}")
    for name, a, b in rows:
        print(f"{name:48s} {a:12.1f} {b:12.1f} {b / a:8.1f}x")
    print(f"\nriposte: generate min {ours_min * 1e3:.1f} ms, median {ours_med * 1e3:.1f} ms over {args.repeat} runs; "
          f"{unique:,} unique of {N:,}; filter report {gen.report}")
    print(f"riposte: load min {load_min * 1e3:.0f} ms, median {load_med * 1e3:.0f} ms; "
          f"{ours.stats['states']:,} states, {ours.stats['transitions']:,} transitions")
    print(f"markovify: {raw_ok:,}/{N:,} sentences without the test (min {raw_min * 1e3:.0f} ms); "
          f"{tested_rate:.0f} sentences/s with its default overlap test")


if __name__ == "__main__":
    main()
