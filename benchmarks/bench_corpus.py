"""Corpus throughput: read + clean + tokenize subtitle lines per second on 2 cores, against a plain pysrt loop.

Peer: what a user would otherwise write, a single-process loop of `pysrt.open` plus a tag-stripping regex
(no encoding detection beyond a cp1252 retry, no cleaning, no tokenization). Both sides read the same
files, the sample .srt files repeated to get a stable measure, and both are credited with the same
number of input lines (the subtitle text lines pysrt finds), so the ratio compares throughput on the
same work. Ours does far more per line; the ratio says what that costs.

    .venv/bin/python benchmarks/bench_corpus.py [--samples DIR] [--copies 6] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pysrt  # noqa: E402
from measure import timed, tokenizer_path  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from corpus.clean import CleanConfig, clean_document  # noqa: E402
from corpus.report import Report  # noqa: E402
from corpus.srt import read_srt  # noqa: E402
from reranker.pairs import encode_lines  # noqa: E402
from reranker.prepare import load_tokenizer  # noqa: E402

_TAG = re.compile(r"<[^>]+>")



def ours_one_file(path: str) -> int:
    """Read, clean and tokenize one file; returns the number of tokens (so the work cannot be skipped)."""
    report = Report()
    doc = read_srt(path, report)
    cleaned = clean_document(doc, CleanConfig(), report) if doc else None
    if cleaned is None:
        return 0
    ids = encode_lines(load_tokenizer(tokenizer_path()), cleaned.texts())
    return sum(map(len, ids))


def peer_one_file(path: str) -> int:
    """The plain loop: pysrt, strip tags and whitespace; returns the number of lines kept."""
    try:
        subs = pysrt.open(path, encoding="utf-8")
    except UnicodeDecodeError:
        subs = pysrt.open(path, encoding="cp1252")
    kept = 0
    for item in subs:
        for line in _TAG.sub("", item.text).split("\n"):
            kept += bool(line.strip())
    return kept


def input_lines(paths: list[str]) -> int:
    """Subtitle text lines in the files (the common numerator of lines/s)."""
    total = 0
    for path in paths:
        try:
            subs = pysrt.open(path, encoding="utf-8")
        except UnicodeDecodeError:
            subs = pysrt.open(path, encoding="cp1252")
        total += sum(len(item.text.split("\n")) for item in subs)
    return total



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="/work/shared/samples/srt")
    parser.add_argument(
        "--copies", type=int, default=6, help="times the file set is processed per measurement"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    files = sorted(str(p) for p in Path(args.samples).glob("*.srt"))
    if not files:
        raise SystemExit(f"no .srt files in {args.samples}")
    work = files * args.copies
    n_lines = input_lines(work)
    load_tokenizer(tokenizer_path())  # loaded before the fork, shared by the workers

    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(ours_one_file, files))  # workers up and their tokenizer loaded

        def ours_parallel():
            return sum(pool.map(ours_one_file, work, chunksize=1))

        ours_n = timed(ours_parallel, args.repeats)

    ours_1 = timed(lambda: sum(map(ours_one_file, work)), args.repeats)
    peer = timed(lambda: sum(map(peer_one_file, work)), args.repeats)

    print(
        f"{len(files)} files x {args.copies} = {len(work)} files, {n_lines:,} subtitle lines per measurement"
    )
    print(
        f"cpu count {os.cpu_count()}, {args.repeats} repeats after a warm-up; lines/s from min and median time"
    )
    rows = [
        (f"ours: read+clean+tokenize, {args.workers} processes", ours_n),
        ("ours: read+clean+tokenize, 1 process", ours_1),
        ("peer: pysrt read-and-strip loop, 1 process", peer),
    ]
    for name, times in rows:
        print(
            f"  {name:<48} {n_lines / min(times):>10,.0f} (min)  {n_lines / statistics.median(times):>10,.0f} (median)"
        )
    print(
        f"ratio ours({args.workers} processes)/peer: {min(peer) / min(ours_n):.2f}x by min, "
        f"{statistics.median(peer) / statistics.median(ours_n):.2f}x by median"
    )
    print(
        f"ratio ours(1 process)/peer:  {min(peer) / min(ours_1):.2f}x by min, "
        f"{statistics.median(peer) / statistics.median(ours_1):.2f}x by median"
    )


if __name__ == "__main__":
    main()
