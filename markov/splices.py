"""Where a writer's line is spliced: the words at which it stops following any line of the corpus.

An order-k chain writes each word from the k before it, so every (k+1)-gram of its line is in the corpus. Where the
(k+2)-gram that ends at a word is not, the chain went on from a different line than the one it was following: the
line is spliced there, and a splice is where a writer's line loses its sense ("was your weekend is for right??").
Its end can be one too (the line stops where no corpus line stopped after those words).

The sense model learns from these places (reranker.sense, `SenseTraining.splice_weight`): told which token of a
writer's line is spliced, it learns what makes a line incoherent at the word where it does, not only "this whole
line is the writer's". The corpus's (k+2)-grams are kept as a sorted array of 64-bit hashes (~8 bytes each, 26 MB
for chitchat's 258k lines), so a query costs one binary search per word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from markov.chain import _in_sorted, _powers, _window_hashes
from markov.tokenize import _TOKEN, tokenize_many

_BATCH = 50_000  # lines tokenized per regex pass


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
        self._start, self._end = 0, 1  # ids of the padding before a line and of its end
        self._powers = _powers(self.n)
        hashes, batch = [], []
        for line in lines:
            if line.strip():
                batch.append(line)
            if len(batch) >= _BATCH:
                hashes.append(self._corpus_hashes(batch))
                batch = []
        if batch:
            hashes.append(self._corpus_hashes(batch))
        self._hashes = np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)

    def __len__(self) -> int:
        """The number of distinct n-grams held."""
        return len(self._hashes)

    def _padded(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One flat array of every line as n-1 start ids, its tokens and the end id; and a mask of the positions
        where an n-gram of one line ends (its tokens and its end)."""
        pad = self.n - 1
        total = int(lengths.sum()) + len(lengths) * (pad + 1)
        flat = np.full(total, self._start, dtype=np.int64)
        ends = np.zeros(total, dtype=bool)
        offsets = np.concatenate([[0], np.cumsum(lengths + pad + 1)[:-1]])
        token_at = np.repeat(offsets + pad, lengths) + (np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        flat[token_at] = ids + 2
        flat[offsets + pad + lengths] = self._end
        ends[token_at] = True
        ends[offsets + pad + lengths] = True
        return flat, ends

    def _corpus_hashes(self, lines: list[str]) -> np.ndarray:
        ids, lengths = tokenize_many(lines, self._index)
        flat, ends = self._padded(ids, lengths)
        return _window_hashes(flat, self.n, self._powers)[ends[self.n - 1 :]]

    def find(self, texts: list[str]) -> list[Splice]:
        """Where each text is spliced: the words whose n-gram (with the n-1 tokens before it) no corpus line has.

        A corpus line has none; a line the corpus never saw has at least one (its words may each be known)."""
        out = [Splice((), False)] * len(texts)  # a blank text has no words to splice
        rows = [k for k, text in enumerate(texts) if text.strip()]
        if not rows:
            return out
        index = dict(self._index)  # words the corpus never had get ids of their own, matching nothing
        ids, lengths = tokenize_many([texts[k] for k in rows], index)
        flat, ends = self._padded(ids, lengths)
        attested = _in_sorted(self._hashes, _window_hashes(flat, self.n, self._powers)[ends[self.n - 1 :]])
        at = 0
        for k, m in zip(rows, lengths.tolist(), strict=True):
            hit = attested[at : at + m + 1]  # its tokens, then its end
            at += m + 1
            starts = word_starts(texts[k])
            out[k] = Splice(tuple(starts[j] for j in np.flatnonzero(~hit[:m])), bool(not hit[m]))
        return out


def word_starts(text: str) -> list[int]:
    """Character offsets in `text` where each of its tokens' words begins (`markov.tokenize`'s tokens)."""
    return [m.start(2) for m in _TOKEN.finditer(text)]
