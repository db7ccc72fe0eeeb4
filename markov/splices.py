"""Where a writer's line is spliced: the words at which it stops following any line of the corpus.

An order-k chain writes each word from the k before it, so every (k+1)-gram of its line is in the corpus. Where the
(k+2)-gram that ends at a word is not, the chain went on from a different line than the one it was following: the
line is spliced there, and a splice is where a writer's line loses its sense ("was your weekend is for right??").
Its end can be one too (the line stops where no corpus line stopped after those words). A line begun mid-sentence
(a writer started at a word that opens no line) has its first words marked, up to order+1 of them: no line opens
with them, each a place where it reads unlike any line's beginning.

The sense model learns from these places (reranker.sense, `SenseTraining.splice_weight`): told which token of a
writer's line is spliced, it learns what makes a line incoherent at the word where it does, not only "this whole
line is the writer's". The corpus's (k+2)-grams are kept as a sorted array of 64-bit hashes (8 bytes each: 16 MB for
the 2.0M 5-grams of chitchat's train split, built in ~4 s), so a query costs one binary search per word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from markov.chain import _BATCH, _SPECIAL, _in_sorted, _padded_stream, _powers, _window_hashes
from markov.tokenize import tokenize_many, word_starts


@dataclass(frozen=True)
class Splice:
    """Where one line is spliced: the character offsets (in the line's text) of the words that begin a splice,
    and whether its end is one."""

    starts: tuple[int, ...]
    at_end: bool

    @property
    def count(self) -> int:
        """How many places the line is spliced at, its end included."""
        return len(self.starts) + self.at_end


class Splices:
    """The (order+2)-grams of a corpus, to find where lines not in it are spliced (`find`)."""

    def __init__(self, lines: Iterable[str], order: int) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.n = order + 2
        self._index: dict[str, int] = {}
        self._powers = _powers(self.n)
        hashes, batch = [], []
        for line in lines:
            if line.strip():
                batch.append(line)
            if len(batch) >= _BATCH:
                hashes.append(self._hashes_of(batch, self._index))
                batch = []
        if batch:
            hashes.append(self._hashes_of(batch, self._index))
        self._hashes = np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)

    def __len__(self) -> int:
        """The number of distinct n-grams held."""
        return len(self._hashes)

    def _hashes_of(self, lines: list[str], index: dict[str, int]) -> np.ndarray:
        """The hash of every n-gram of each line (with n-1 BEGINs before it and END after), line by line: its
        tokens' n-grams, then its end's."""
        ids, lengths = tokenize_many(lines, index, first_id=len(_SPECIAL))
        seq, ends = _padded_stream(ids, lengths, self.n - 1)
        return _window_hashes(seq, self.n, self._powers)[ends[self.n - 1 :]]

    def find(self, texts: list[str]) -> list[Splice]:
        """Where each text is spliced: the words whose n-gram (with the n-1 tokens before it) no corpus line has.

        A corpus line has none. A line the corpus never saw nearly always has one (chitchat's order-3 writer: 96% of
        its lines, 2.87 splices a line); the rest are new only in longer n-grams."""
        out = [Splice((), False)] * len(texts)  # a blank text has no words to splice
        rows = [k for k, text in enumerate(texts) if text.strip()]
        if not rows:
            return out
        # Words the corpus never had join the index with ids of their own, after every corpus hash was taken: no
        # n-gram holding one is attested, now or in a later call.
        attested = _in_sorted(self._hashes, self._hashes_of([texts[k] for k in rows], self._index))
        at = 0
        for k in rows:
            starts = word_starts(texts[k])
            m = len(starts)
            hit = attested[at : at + m + 1]  # its tokens, then its end
            at += m + 1
            out[k] = Splice(tuple(starts[j] for j in np.flatnonzero(~hit[:m])), bool(not hit[m]))
        return out
