"""Reply words: the words people use in a reply to a line that names a word, learned from who-spoke-when.

A turn's seeded candidates were written around the context's own words, and the editor picked lines that said them
back: a quarter of a reply's content words came from the last line, against people's 6%. People answer "how was
your weekend?" with "fun", "saturday" or "hanging"; "pizza" with "toppings" and "pepperoni". This table holds, for
each word said, the words the next speaker's turn names far more often than turns do in general, so a turn can be
written around those instead (`EngineConfig.seed_replies`). It cut that echo to people's rate but made replies parse
a little less often, so turns use it only when asked (benchmarks/RESULTS.md, "Nineteenth pass").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from corpus.text import content_words, words


@dataclass(frozen=True)
class RepliesConfig:
    """Which (said word, reply word) associations are kept."""

    min_count: int = 3  # turn pairs the two must share: fewer is one conversation's chance
    # P(reply word | said word) / P(reply word) at least this: "like", "good" and "going" follow everything
    min_lift: float = 3.0
    per_word: int = 32  # reply words kept per said word, the strongest first

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.min_lift < 1.0 or self.per_word < 1:
            raise ValueError(f"need min_count >= 1, min_lift >= 1 and per_word >= 1, got {self}")


def turn_pairs(lines: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str, str]]:
    """(the line a turn answers, the turn, who spoke it) at every change of speaker in one conversation's
    (speaker, text) lines: the said side is the other speaker's last line (a turn seeds from the newest line), the
    reply side the next speaker's lines joined. A line with no speaker breaks the chain: who answered whom is unknown."""
    said, turn, speaker = None, [], None
    for who, text in [*lines, ("", "")]:  # the closing break ends the last turn
        if who != speaker or not who:  # a turn ends: it answered `said`, if anything
            if said is not None and turn:
                yield said, " ".join(turn), speaker
            said, turn, speaker = (turn[-1] if turn and who else None), [], who
        if who:
            turn.append(text)


def with_pairs(documents: Iterable, pairs: list[tuple[str, str]]) -> Iterator:
    """The documents, unchanged, while their (the line a turn answers, the turn) pairs (`turn_pairs`) are added to
    `pairs`: a Markov build reads its lines and its reply words in one pass."""
    for doc in documents:
        pairs.extend((said, reply) for said, reply, _ in turn_pairs((line.speaker, line.text) for line in doc.lines))
        yield doc


class ReplyWords:
    """word -> the reply words most associated with it, by local mutual information (count x log lift)."""

    def __init__(self, vocab: list[str], ptr: np.ndarray, to: np.ndarray, score: np.ndarray, stats: dict):
        self.vocab = vocab  # the words of either side, sorted
        self.ptr, self.to, self.score = ptr, to, score  # CSR: row i's reply words are to[ptr[i]:ptr[i+1]]
        self.stats = stats
        self._id = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]], config: RepliesConfig | None = None) -> ReplyWords:
        """Count each (said content word, reply content word) once per turn pair and keep the strong ones."""
        from scipy import sparse

        config = config or RepliesConfig()
        said, replied = [], []
        for a, b in pairs:
            said.append(list(dict.fromkeys(content_words(words(a)))))
            replied.append(list(dict.fromkeys(content_words(words(b)))))
        # A word in fewer than min_count pairs on either side can pass with nothing: left out before the product,
        # which would otherwise hold every (said word, reply word) of a long chat export.
        said_n, reply_n = Counter(w for ws in said for w in ws), Counter(w for ws in replied for w in ws)
        said = [[w for w in ws if said_n[w] >= config.min_count] for ws in said]
        replied = [[w for w in ws if reply_n[w] >= config.min_count] for ws in replied]
        vocab = sorted({w for ws in (*said, *replied) for w in ws})  # sorted: the same table whatever the pair order
        ids = {w: i for i, w in enumerate(vocab)}
        n, v = len(said), len(vocab)

        def matrix(lists: list[list[str]]):  # turn pair x word, 1 where the pair's side names the word
            rows = np.repeat(np.arange(n), [len(ws) for ws in lists])
            cols = np.fromiter((ids[w] for ws in lists for w in ws), np.int64, count=len(rows))
            return sparse.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)), shape=(n, v))

        said_m, reply_m = matrix(said), matrix(replied)
        co = (said_m.T @ reply_m).tocoo()  # turn pairs in which said word i and reply word j both occur
        said_n = np.asarray(said_m.sum(axis=0)).ravel().astype(np.float64)
        reply_n = np.asarray(reply_m.sum(axis=0)).ravel().astype(np.float64)
        count = co.data.astype(np.float64)
        lift = count * n / (said_n[co.row] * reply_n[co.col])
        # a word is not its own reply here: reply words stand in for the said words, and the said word again is echo
        keep = (count >= config.min_count) & (lift >= config.min_lift) & (co.row != co.col)
        rows, cols = co.row[keep].astype(np.int64), co.col[keep]
        strength = count[keep] * np.log(lift[keep])
        order = np.lexsort((cols, -strength, rows))  # by said word, the strongest first, ties by word
        rows, cols, strength = rows[order], cols[order], strength[order]
        first = np.searchsorted(rows, rows)  # where each said word's run begins
        top = np.arange(len(rows)) - first < config.per_word
        rows, cols, strength = rows[top], cols[top], strength[top]
        ptr = np.searchsorted(rows, np.arange(v + 1)).astype(np.int64)
        stats = {"pairs": n, "words": v, "associations": int(len(cols)), **asdict(config)}
        return cls(vocab, ptr, cols.astype(np.int32), strength.astype(np.float32), stats)

    def answers(self, word: str) -> bool:
        """Whether the table holds reply words for this said word."""
        i = self._id.get(word.strip().casefold())
        return i is not None and self.ptr[i + 1] > self.ptr[i]

    def of(self, said: Sequence[str], exclude: Iterable[str] = (), k: int | None = None) -> list[str]:
        """The reply words of the said words, the strongest summed over them first, none of `exclude` or `said`."""
        return [w for w, _ in self.scored(said, exclude, k)]

    def scored(self, said: Sequence[str], exclude: Iterable[str] = (), k: int | None = None) -> list[tuple[str, float]]:
        """`of`, each word with its strength summed over the said words (count x log lift)."""
        total: dict[int, float] = {}
        for w in said:
            i = self._id.get(w.strip().casefold())
            if i is None:
                continue
            lo, hi = self.ptr[i], self.ptr[i + 1]
            for j, s in zip(self.to[lo:hi].tolist(), self.score[lo:hi].tolist(), strict=True):
                total[j] = total.get(j, 0.0) + s
        banned = {w.strip().casefold() for w in (*exclude, *said)}
        ranked = sorted(total, key=lambda j: (-total[j], self.vocab[j]))
        out = [(self.vocab[j], total[j]) for j in ranked if self.vocab[j] not in banned]
        return out if k is None else out[:k]

    def arrays(self) -> dict[str, np.ndarray]:
        """The table as arrays, for a model's tables.npz (the words go in a text file beside it)."""
        return {"ptr": self.ptr, "to": self.to, "score": self.score}

    @classmethod
    def from_arrays(cls, vocab: list[str], arrays: dict[str, np.ndarray], stats: dict) -> ReplyWords:
        """The table `arrays` wrote; a ValueError if its parts do not fit together."""
        ptr, to, score = arrays["ptr"], arrays["to"], arrays["score"]
        if not (np.issubdtype(ptr.dtype, np.integer) and np.issubdtype(to.dtype, np.integer)
                and np.issubdtype(score.dtype, np.floating)) or not isinstance(stats, dict):
            raise ValueError("its reply-word table has the wrong types")
        if (len(ptr) != len(vocab) + 1 or len(to) != len(score) or (len(ptr) and (ptr[0] != 0 or ptr[-1] != len(to)))
                or np.any(np.diff(ptr) < 0) or (len(to) and (to.min() < 0 or to.max() >= len(vocab)))):
            raise ValueError("its reply-word table does not fit together")
        return cls(vocab, ptr, to, score, stats)

    def nbytes(self) -> int:
        """Bytes held by the table and its words."""
        return self.ptr.nbytes + self.to.nbytes + self.score.nbytes + sum(len(w.encode()) + 50 for w in self.vocab)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplyWords):
            return NotImplemented
        return (self.vocab == other.vocab and np.array_equal(self.ptr, other.ptr) and np.array_equal(self.to, other.to)
                and np.array_equal(self.score, other.score))

    def __repr__(self) -> str:
        return f"ReplyWords({len(self.vocab):,} words, {len(self.to):,} associations from {self.stats.get('pairs', 0):,} turn pairs)"

