"""Training samples by the Cross Talk method: token windows over documents, positives and hard negatives.

Data flow: documents -> token ids per line (`tokenize_documents`) -> chunks of consecutive lines
(`make_samples`) -> `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]` (`reranker.pairs.encode_pair`).

Each document is cut into consecutive, non-overlapping chunks. A chunk's target length, in tokens of
its encoded sample, is drawn evenly in [min_tokens, max_length] (see _FlatTargets), so short samples
are as common as long ones and the model cannot learn "the candidate is at the end of a long window". A chunk becomes a
positive (context + true next line) or a negative (the same lines with the first and last exchanged,
or, by ratio, the true next line replaced by a line from another document or a Markov line).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from reranker.pairs import SPECIALS, encode_lines

KINDS = ("positive", "swap", "random", "markov")


@dataclass(frozen=True)
class WindowConfig:
    """How documents are cut into training samples."""

    max_length: int = 128  # longest encoded sample, special tokens included
    min_tokens: int = 16  # shortest target length of a chunk
    random_line_ratio: float = 0.0  # share of negatives whose candidate is a line from another document
    markov_ratio: float = 0.0  # share of negatives whose candidate is a Markov line (needs `markov=`)
    keep_short_tail: bool = False  # keep a document's last chunk when it falls short of its target
    reservoir_size: int = 10_000  # lines kept from earlier documents for random-line negatives

    def __post_init__(self) -> None:
        if self.max_length < SPECIALS + 2:
            raise ValueError(f"max_length must be at least {SPECIALS + 2}, got {self.max_length}")
        if not SPECIALS + 2 <= self.min_tokens <= self.max_length:
            raise ValueError(
                f"min_tokens must be in [{SPECIALS + 2}, max_length={self.max_length}], got {self.min_tokens}"
            )
        for name in ("random_line_ratio", "markov_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.random_line_ratio + self.markov_ratio > 1.0:
            raise ValueError(
                "random_line_ratio + markov_ratio must not exceed 1 (they are shares of the negatives)"
            )
        if self.reservoir_size < 1:
            raise ValueError(f"reservoir_size must be positive, got {self.reservoir_size}")

    @property
    def max_line_tokens(self) -> int:
        """Longest line that can be a candidate with at least one context token beside it."""
        return self.max_length - SPECIALS - 1


@dataclass(frozen=True)
class Sample:
    """One training pair: context lines, a candidate, label 1/0, the kind of sample and its document."""

    context: list[list[int]]
    candidate: list[int]
    label: int
    kind: str
    source_id: str
    start: int = -1  # index (within its segment of usable lines) of the chunk's first line; -1 if unknown


def encoded_length(context_lengths: Iterable[int], candidate_length: int) -> int:
    """Length of `encode_pair` output before any truncation."""
    lengths = list(context_lengths)
    return SPECIALS + sum(lengths) + max(len(lengths) - 1, 0) + candidate_length


_IMDB_TT = re.compile(r"tt(\d{7,8})")
# OPUS OpenSubtitles layout: .../en/YEAR/IMDBID/ID.xml(.gz)
_OPUS_PATH = re.compile(r"(?:^|/)(?:18|19|20)\d\d/(\d+)/[^/]+$")


def split_key(source_id: str) -> str:
    """The part of a source id that decides its split: the IMDb id when one is visible, else the id up to any "#".

    Readers name parts of one source `SOURCE#PART` (parts of a Discord channel), so all parts of a source
    land in the same split. Runs of mono text (`SOURCE@RUN`) are sources of their own.
    """
    source_id = source_id.split("#", 1)[0]
    match = _IMDB_TT.search(source_id)
    if match:
        return f"imdb:{int(match.group(1))}"
    match = _OPUS_PATH.search(source_id.replace("\\", "/"))
    if match:
        return f"imdb:{int(match.group(1))}"
    return source_id


def split_of(source_id: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """ "train", "val" or "test" by a stable hash of the source id; the same IMDb id always lands in one split."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction > 1:
        raise ValueError(f"bad split fractions: val={val_fraction}, test={test_fraction}")
    digest = hashlib.blake2b(split_key(source_id).encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2.0**64  # uniform in [0, 1), the same in every process
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def switched(context: list[str], docs: Sequence, d: int, rng: np.random.Generator) -> list[str]:
    """The context with its older lines (all but the last) replaced by as many consecutive lines of a document other
    than `docs[d]`: the subject changes at the last line, as users change it. Unchanged when nothing can stand in
    (a context of one line, or no other document long enough in 32 draws)."""
    n = len(context) - 1
    for _ in range(32 if n > 0 and len(docs) > 1 else 0):  # drawn, not listed: one pass over many documents each
        e = int(rng.integers(len(docs)))
        if e != d and len(docs[e].lines) >= n:
            i = int(rng.integers(n, len(docs[e].lines) + 1))
            return [line.text for line in docs[e].lines[i - n : i]] + [context[-1]]
    return list(context)


def tokenize_documents(
    documents: Iterable, tokenizer, batch_size: int = 1024
) -> Iterator[tuple[str, list[list[int]]]]:
    """Yield (source_id, token ids per line) for each Document, without special tokens."""
    for doc in documents:
        yield doc.source_id, encode_lines(tokenizer, [line.text for line in doc.lines], batch_size)


def _segments(lines: list[list[int]], limit: int) -> Iterator[list[list[int]]]:
    """Runs of consecutive lines that are non-empty and no longer than `limit` (longer lines break a run)."""
    run: list[list[int]] = []
    for line in lines:
        if 0 < len(line) <= limit:
            run.append(line)
        else:
            if run:
                yield run
            run = []
    if run:
        yield run


def _chunk_end(lengths: list[int], start: int, target: int, max_length: int) -> tuple[int, bool]:
    """End (exclusive) of the chunk from `start` whose encoded length is closest to `target`; True if it reached it."""
    n = len(lengths)
    if n - start < 2:
        return start, False
    best = start + 2
    total = encoded_length(lengths[start : start + 1], lengths[start + 1])
    if total >= target:
        return best, True
    for end in range(start + 3, n + 1):
        new_total = total + lengths[end - 1] + 1  # one more line and one more delimiter
        if new_total > max_length:
            return best, True  # cannot grow: the chunk is as long as it may be
        if new_total >= target:
            # Take whichever side of the target is nearer, so lengths are not biased low.
            return (end, True) if new_total - target <= target - total else (best, True)
        best, total = end, new_total
    return best, False


class _FlatTargets:
    """Chunk target lengths whose *emitted* lengths stay flat over [low, high].

    Plain uniform targets come out biased short: a long target is more likely to run past the end of
    a document, and that tail is dropped. So half the draws are uniform over the range and half are
    uniform within the bin that has the fewest emitted chunks so far, which cancels such losses.
    """

    N_BINS = 8

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.edges = np.linspace(low, high + 1, self.N_BINS + 1)
        self.counts = np.zeros(self.N_BINS, dtype=np.int64)

    def draw(self, rng: np.random.Generator) -> int:
        if rng.random() < 0.5:
            return int(rng.integers(self.low, self.high + 1))
        emptiest = np.flatnonzero(self.counts == self.counts.min())
        b = int(emptiest[rng.integers(len(emptiest))])
        lo, hi = int(np.ceil(self.edges[b])), int(np.ceil(self.edges[b + 1])) - 1
        return int(rng.integers(lo, max(lo, hi) + 1))

    def record(self, length: int) -> None:
        b = int(np.searchsorted(self.edges, length, side="right")) - 1
        self.counts[min(max(b, 0), self.N_BINS - 1)] += 1


class _Reservoir:
    """A bounded uniform sample of lines from finished documents, for random-line negatives."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[tuple[str, list[int]]] = []
        self.seen = 0

    def add(self, source_id: str, line: list[int], rng: np.random.Generator) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append((source_id, line))
            return
        j = int(rng.integers(self.seen))
        if j < self.size:
            self.items[j] = (source_id, line)

    def draw(self, source_id: str, rng: np.random.Generator) -> list[int] | None:
        for _ in range(8):  # lines come from finished documents; a repeated source id is the rare case
            if not self.items:
                return None
            other, line = self.items[int(rng.integers(len(self.items)))]
            if other != source_id:
                return line
        return None


def make_samples(
    docs: Iterable[tuple[str, list[list[int]]]],
    config: WindowConfig,
    rng: np.random.Generator,
    *,
    markov: Callable[[np.random.Generator], list[int]] | None = None,
) -> Iterator[Sample]:
    """Cut each document's token lines into non-overlapping chunks and yield one balanced Sample per chunk.

    `docs` yields (source_id, token ids per line). Lines that are empty or longer than
    `config.max_line_tokens` split a document into separate runs (they can never be a whole candidate).
    Labels alternate so positives and negatives stay balanced to within one over the whole stream.
    `markov(rng)` returns the token ids of one Markov line; it is required when `config.markov_ratio > 0`.
    A chunk whose first and last lines are equal cannot make a swap negative and is skipped.
    """
    if config.markov_ratio > 0 and markov is None:
        raise ValueError("config.markov_ratio > 0 needs a `markov` callable that returns a line's token ids")
    reservoir = _Reservoir(config.reservoir_size)
    lengths_drawn = _FlatTargets(config.min_tokens, config.max_length)
    balance = 0  # positives minus negatives so far
    limit = config.max_line_tokens
    for source_id, lines in docs:
        for segment in _segments(lines, limit):
            lengths = [len(line) for line in segment]
            start = 0
            while start < len(segment) - 1:
                target = lengths_drawn.draw(rng)
                end, reached = _chunk_end(lengths, start, target, config.max_length)
                if end - start < 2 or (not reached and not config.keep_short_tail):
                    break
                chunk = segment[start:end]
                lengths_drawn.record(encoded_length(lengths[start : end - 1], lengths[end - 1]))
                chunk_start, start = start, end
                if balance > 0:
                    positive = False
                elif balance < 0:
                    positive = True
                else:
                    positive = bool(rng.integers(2))
                if positive:
                    sample = Sample(chunk[:-1], chunk[-1], 1, "positive", source_id, chunk_start)
                else:
                    sample = _negative(chunk, source_id, chunk_start, config, rng, reservoir, markov, limit)
                    if sample is None:
                        continue
                balance += 1 if positive else -1
                yield sample
        for segment in _segments(lines, limit):
            for line in segment:
                reservoir.add(source_id, line, rng)


def _negative(
    chunk: list[list[int]],
    source_id: str,
    start: int,
    config: WindowConfig,
    rng: np.random.Generator,
    reservoir: _Reservoir,
    markov: Callable[[np.random.Generator], list[int]] | None,
    limit: int,
) -> Sample | None:
    """The negative for one chunk: a swap, or by ratio a random line or a Markov line as the candidate."""
    u = float(rng.random())
    if u < config.random_line_ratio:
        line = reservoir.draw(source_id, rng)
        if line is not None and line != chunk[-1]:
            return Sample(chunk[:-1], line, 0, "random", source_id, start)
    elif u < config.random_line_ratio + config.markov_ratio and markov is not None:
        line = list(markov(rng))[:limit]
        if line and line != chunk[-1]:
            return Sample(chunk[:-1], line, 0, "markov", source_id, start)
    # The swap is the default negative and the fallback when another kind has nothing to offer.
    if chunk[0] == chunk[-1]:
        return None
    swapped = [chunk[-1], *chunk[1:-1], chunk[0]]
    return Sample(swapped[:-1], swapped[-1], 0, "swap", source_id, start)
