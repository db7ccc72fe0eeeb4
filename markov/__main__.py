"""Command line: `python -m markov build ...` and `python -m markov sample ...`."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from markov.chain import MarkovConfig, MarkovModel

_WEIGHTED = re.compile(r"^(\d+(?:\.\d+)?)\t(.*)$")


def read_lines(path: Path) -> Iterator[tuple[str, float]]:
    """Plain text, one message per line; `WEIGHT<TAB>text` gives a line its weight. Undecodable bytes are replaced."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\r\n")
            m = _WEIGHTED.match(line)
            if m:
                yield m.group(2), float(m.group(1))
            elif line.strip():
                yield line, 1.0


def read_input(name: str) -> Iterator[tuple[str, float]]:
    """Weighted texts from `chitchat` (the embedded corpus) or a text file."""
    if name == "chitchat":
        from corpus.chitchat import read_chitchat

        for doc in read_chitchat():
            for line in doc.lines:
                yield line.text, line.weight
        return
    path = Path(name)
    if not path.is_file():
        raise SystemExit(f"error: input {name!r} is neither `chitchat` nor a readable file")
    yield from read_lines(path)


def cmd_build(args: argparse.Namespace) -> None:
    """Build a model from the inputs and save it."""
    config = MarkovConfig(order=args.order, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
                          max_overlap_ratio=args.max_overlap_ratio)
    start = time.perf_counter()

    def texts() -> Iterator[tuple[str, float]]:
        for name in args.input:
            yield from read_input(name)

    bar = tqdm(texts(), desc="reading", unit=" lines", unit_scale=True, file=sys.stderr)
    try:
        model = MarkovModel.build(bar, config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    finally:
        bar.close()
    model.save(args.out)
    s = model.stats
    print(f"built {args.out}: {s['lines']:,} lines, {s['tokens']:,} tokens, vocab {s['vocab']:,}, "
          f"{s['states']:,} states, {s['transitions']:,} transitions, {model.nbytes() / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)


def cmd_sample(args: argparse.Namespace) -> None:
    """Print candidates from a saved model."""
    try:
        model = MarkovModel.load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    gen = model.generate(args.n, np.random.default_rng(args.seed), start=args.start)
    if gen.reason and not gen.candidates:
        raise SystemExit(f"error: {gen.reason}")
    for text in gen.candidates:
        print(text)
    if args.verbose or gen.reason:
        print(f"# {gen.report}" + (f"; {gen.reason}" if gen.reason else ""), file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run a subcommand."""
    parser = argparse.ArgumentParser(prog="python -m markov", description="riposte's Markov candidate writer")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a model from text")
    b.add_argument("--input", nargs="+", required=True, help="`chitchat` or text files (one message per line)")
    b.add_argument("--out", required=True, type=Path, help="model directory to write")
    b.add_argument("--order", type=int, default=2, help="n-gram order, 1-4 (default 2)")
    b.add_argument("--min-tokens", type=int, default=2)
    b.add_argument("--max-tokens", type=int, default=32)
    b.add_argument("--max-overlap-ratio", type=float, default=None,
                   help="also reject candidates copying a run longer than this share of their length")
    b.set_defaults(func=cmd_build)
    s = sub.add_parser("sample", help="print candidates from a model")
    s.add_argument("model", type=Path, help="model directory")
    s.add_argument("-n", type=int, default=10, help="number of candidates")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--start", default=None, help="words each candidate begins with")
    s.add_argument("-v", "--verbose", action="store_true", help="print the filter report")
    s.set_defaults(func=cmd_sample)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:  # config validation and the like: a message, not a traceback
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
