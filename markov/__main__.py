"""Command line: `python -m markov build ...` and `python -m markov sample ...`."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from corpus.progress import progress
from corpus.report import Report
from markov.chain import AROUND_UNBIAS_ABOVE, CHITCHAT_ORDER, MarkovConfig, MarkovModel
from markov.personas import (
    PersonaConfig,
    build_personas,
    collect,
    reaction_weight,
    read_chat_inputs,
    save_personas,
)
from markov.replies import ReplyWords, with_pairs

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


def read_input(name: str, report: Report, weighting: str = "log",
               pairs: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, float]]:
    """Weighted texts from `chitchat`, a plain text file, or any input the corpus readers know (cleaned); `pairs`
    collects the (said, reply) turn pairs of inputs that say who spoke (`markov.replies.turn_pairs`)."""
    path = Path(name)
    if name != "chitchat" and not path.exists():
        raise SystemExit(f"error: input {name!r} is neither `chitchat` nor a readable file")
    if path.is_file() and path.suffix.lower() in ("", ".txt"):
        yield from read_lines(path)
        return
    from corpus.clean import CleanConfig, clean_documents
    from corpus.dump import read_path

    docs = clean_documents(read_path(name, report), CleanConfig(), report)
    for doc in with_pairs(docs, pairs) if pairs is not None else docs:
        for line in doc.lines:
            yield line.text, reaction_weight(line.reactions, weighting) if line.reactions else line.weight


def cmd_build(args: argparse.Namespace) -> None:
    """Build a model from the inputs and save it."""
    order = args.order or (CHITCHAT_ORDER if args.input == ["chitchat"] else MarkovConfig.order)
    config = MarkovConfig(order=order, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
                          max_overlap_ratio=args.max_overlap_ratio)
    start = time.perf_counter()

    if args.by_speaker:
        return build_by_speaker(args, config)
    report = Report()

    pairs: list[tuple[str, str]] = []

    def texts() -> Iterator[tuple[str, float]]:
        for name in args.input:
            yield from read_input(name, report, args.weighting, pairs)

    bar = progress(texts(), desc="reading", unit=" lines", unit_scale=True, file=sys.stderr)
    try:
        model = MarkovModel.build(bar, config)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc
    finally:
        bar.close()
    if pairs:  # the words people answer a word with, where the inputs say who spoke
        model.replies = ReplyWords.build(progress(pairs, desc="reply words", unit=" pairs", unit_scale=True,
                                                  file=sys.stderr))
    model.save(args.out)
    s = model.stats
    print(f"built {args.out}: {s['lines']:,} lines, {s['tokens']:,} tokens, vocab {s['vocab']:,}, "
          f"{s['states']:,} states, {s['transitions']:,} transitions, {model.nbytes() / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(f"reply words: {model.replies!r}" if model.replies is not None else
          "reply words: none (no input says who spoke; turns write around the context's own words)", file=sys.stderr)
    if report.counts or report.n_problems:
        print("reading and cleaning:\n" + report.format(), file=sys.stderr)


def build_by_speaker(args: argparse.Namespace, markov: MarkovConfig) -> None:
    """One persona per speaker plus `all`, written to OUT/markov/."""
    pconfig = PersonaConfig(min_messages=args.min_messages, weighting=args.weighting, min_reactions=args.min_reactions,
                            include_bots=args.include_bots, remove_mentions=not args.keep_mentions,
                            remove_urls=not args.keep_urls)
    report = Report()
    try:
        docs = read_chat_inputs(args.input, report, include_bots=args.include_bots)
        corpus = collect(progress(docs, desc="reading", unit=" files", file=sys.stderr), pconfig)
        models = build_personas(corpus, markov, lambda items: progress(items, desc="building personas",
                                                                        unit=" personas", file=sys.stderr))
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    target = save_personas(models, corpus, args.out, pconfig)
    r = corpus.report
    print(f"built {len(models)} personas in {target}: " + ", ".join(
        f"{p} ({len(corpus.messages[p]):,} messages)" for p in models), file=sys.stderr)
    if r["folded_into_all"]:
        print(f"folded into `all` (fewer than {pconfig.min_messages} messages): " + ", ".join(
            f"{name} ({n})" for name, n in sorted(r["folded_into_all"].items())), file=sys.stderr)
    print(f"weighting {r['weighting']}: {r['messages']:,} messages, total weight {r['total_weight']:,}, "
          f"effective size {r['effective_messages']:,} messages", file=sys.stderr)
    for top in r["top_weighted"]:
        print(f"  {top['weight']:6.2f}  ({top['reactions']} reactions)  {top['text'][:80]}", file=sys.stderr)
    if report.counts or report.n_problems:
        print("reading:\n" + report.format(), file=sys.stderr)


def cmd_sample(args: argparse.Namespace) -> None:
    """Print candidates from a saved model."""
    try:
        model = MarkovModel.load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if args.unbias_above < 0:  # named as the flag is, and checked with or without --around
        raise SystemExit(f"error: --unbias-above must be >= 0, got {args.unbias_above}")
    gen = model.generate(args.n, np.random.default_rng(args.seed), start=args.start, around=args.around,
                         unbias_above=args.unbias_above)
    if gen.reason and not gen.candidates:
        raise SystemExit(f"error: {gen.reason}")
    for text in gen.candidates:
        print(text)
    if args.verbose or gen.reason:
        print(f"# {gen.report}" + (f"; {gen.reason}" if gen.reason else ""), file=sys.stderr)


def cmd_replies(args: argparse.Namespace) -> None:
    """Print the words people answer the given words with, as the model learned them."""
    try:
        model = MarkovModel.load(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if model.replies is None:
        raise SystemExit(f"error: {args.model} has no reply-word table: it was built before Markov format 5, or from "
                         "inputs that do not say who spoke; rebuild it from chitchat or a chat export")
    if args.k < 1:
        raise SystemExit(f"error: -k must be >= 1, got {args.k}")
    unknown = [w for w in args.words if not model.replies.answers(w)]
    if unknown:
        print(f"# nothing learned for: {', '.join(unknown)}", file=sys.stderr)
    for word, strength in model.replies.scored(args.words, k=args.k):
        print(f"{strength:9.1f}  {word}")


def main(argv: list[str] | None = None, prog: str = "python -m markov") -> None:
    """Parse arguments and run a subcommand."""
    parser = argparse.ArgumentParser(prog=prog, description="riposte's Markov candidate writer")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a model from text")
    b.add_argument("--input", nargs="+", required=True,
                   help="`chitchat`, text files (one message per line), or chat exports, subtitles, folders, archives")
    b.add_argument("--out", required=True, type=Path, help="model directory to write")
    b.add_argument("--order", type=int, default=None,
                   help=f"n-gram order, 1-4 (default {CHITCHAT_ORDER} for chitchat alone, whose 258k lines make "
                        f"order {CHITCHAT_ORDER} both fluent and novel; {MarkovConfig.order} otherwise)")
    b.add_argument("--min-tokens", type=int, default=2)
    b.add_argument("--max-tokens", type=int, default=32)
    b.add_argument("--max-overlap-ratio", type=float, default=None,
                   help="also reject candidates copying a run longer than this share of their length")
    b.add_argument("--weighting", choices=["log", "linear", "none"], default="log",
                   help="reaction weight curve: log = 1 + log1p(reactions) (default), linear = 1 + reactions")
    g = b.add_argument_group("chat exports (--by-speaker)")
    g.add_argument("--by-speaker", action="store_true",
                   help="one persona per speaker plus `all`; --out is then a model directory (personas go to OUT/markov/)")
    g.add_argument("--min-messages", type=int, default=50, help="speakers with fewer messages only join `all`")
    g.add_argument("--min-reactions", type=int, default=0, help="hard filter: keep messages with at least this many reactions")
    g.add_argument("--include-bots", action="store_true", help="keep messages from bot accounts")
    g.add_argument("--keep-mentions", action="store_true", help="keep @-mentions")
    g.add_argument("--keep-urls", action="store_true", help="keep links")
    b.set_defaults(func=cmd_build)
    s = sub.add_parser("sample", help="print candidates from a model")
    s.add_argument("model", type=Path, help="model directory")
    s.add_argument("-n", type=int, default=10, help="number of candidates")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--start", default=None, help="words each candidate begins with")
    s.add_argument("--around", action="append", default=[], metavar="WORD",
                   help="write whole lines around this word (repeatable: each line names one of them)")
    s.add_argument("--unbias-above", type=int, default=AROUND_UNBIAS_ABOVE, metavar="K",
                   help="with --around: keep a line of L tokens with probability min(1, K/L), as a turn does "
                        f"(default {AROUND_UNBIAS_ABOVE}; 0: as drawn)")
    s.add_argument("-v", "--verbose", action="store_true", help="print the filter report")
    s.set_defaults(func=cmd_sample)
    r = sub.add_parser("replies", help="print the words people answer words with (the model's reply-word table)")
    r.add_argument("model", type=Path, help="model directory")
    r.add_argument("words", nargs="+", metavar="WORD", help="words said (their reply words are summed)")
    r.add_argument("-k", type=int, default=10, help="how many reply words, the strongest first")
    r.set_defaults(func=cmd_replies)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:  # config validation and the like: a message, not a traceback
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
