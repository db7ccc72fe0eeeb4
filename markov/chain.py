"""The Markov writer: a word n-gram chain compiled to flat numpy tables, sampled in batches.

Data flow: texts → token ids → (state, next token) counts → CSR tables → batched walks → novelty
test → text. A state is the last `order` token ids (BEGIN-padded at a line start). Each transition
row stores its next token, the state it leads to, and its weight; one global float64 cumulative
sum over all weights lets a single `searchsorted` pick the next token for every walk at once.

A second table holds the same lines read backwards, so a candidate can be written *around* a word (MegaHAL's
keyword replies): from one occurrence of the word, walk forward to the line's end and backward to its start. The
result is a whole line that names the word, where a walk begun at the word makes a fragment ("weekend is for").
"""

from __future__ import annotations

import functools
import math
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from corpus import modeldir
from corpus.modeldir import atomic_directory
from corpus.text import content_words, words
from markov.replies import ReplyWords
from markov.tokenize import tokenize, tokenize_many

# 3: the settings moved under config.json's "riposte" section, as every riposte model keeps them (corpus.modeldir);
# version 2 directories (the same settings at the top level) still load.
# 4: tables.npz also holds the backward table (`backward_*`); older directories load without it (and save back
# without it), and cannot write around a word until rebuilt.
# 5: a model may hold a reply-word table (`markov.replies`: replies.txt and `replies_*` in tables.npz); older
# directories, and models built from lines with no speakers, load without one.
FORMAT_VERSION = 5
READS_VERSIONS = (2, 3, 4, 5)
KIND = "markov"
BEGIN, END = 0, 1
_SPECIAL = ["<s>", "\n"]  # END's piece is "\n": joined walks split into lines for free
_BATCH = 50_000  # lines tokenized per regex pass: fast, with bounded memory
_HASH_BASE = np.uint64(0x100000001B3)  # FNV prime; hashing is polynomial mod 2**64


class UnknownStartError(ValueError):
    """The start words cannot begin a candidate: a word is unknown, or the words never occur in sequence."""


# The order of the embedded default writer (chitchat, 258k lines). Order 3 gives the editor better material than 2:
# 0.60 of its lines parse as whole sentences (Link Grammar) against 0.53, as novel (none verbatim) and as fast
# (4,096 lines in 14 ms against 11). Small corpora keep order 2 (MarkovConfig's default): at order 3 a few hundred
# messages mostly replay their own lines. benchmarks/RESULTS.md, "Sense".
CHITCHAT_ORDER = 3

# Lines written around a word are drawn in proportion to their length: the walk starts from an occurrence of the
# word, and a long line holds more occurrences (the inspection paradox). They ran 14.9 words against the writer's
# plain 11.8 (people's: 10.0). Keeping each with probability min(1, 2 / tokens) (`generate(unbias_above=2)`; 2 is
# MarkovConfig's default min_tokens, the shortest line kept, so the bias is undone whole) makes them 11.3.
# `generate` itself defaults to 0 (as drawn); turns (`EngineConfig.around_unbias_above`) and the recipes' "as a
# turn writes" lines pass this. Over 600 held-out subtitle turns (clock-free) the pick parsed 0.045 +- 0.025 more
# often (0.612 -> 0.657), judged human and topic level, 1.3 words shorter, for 18 ms more per 512 lines
# (benchmarks/RESULTS.md, "Fourteenth pass").
AROUND_UNBIAS_ABOVE = 2

# A turn writes around up to CONTEXT_SEED_WORDS words of the newest of its last CONTEXT_SEED_LINES lines that names
# any the writer knows (`MarkovModel.context_words`). The engine's defaults (`EngineConfig.context_seed_words`,
# `context_seed_lines`) repeat these, and the recipes' lines "as a turn writes them" read them from here.
CONTEXT_SEED_WORDS = 4
CONTEXT_SEED_LINES = 2


@dataclass(frozen=True)
class MarkovConfig:
    """How the chain is built and what a candidate must satisfy."""

    order: int = 2
    min_tokens: int = 2
    max_tokens: int = 32
    reject_verbatim: bool = True  # a candidate equal to a corpus line is not new
    max_overlap_ratio: float | None = None  # e.g. 0.7: reject if one corpus run covers more than this share
    overlap_ngram: int = 4  # n-gram size whose hashes detect copied runs (only stored when the ratio is set)

    def __post_init__(self) -> None:
        if not 1 <= self.order <= 4:
            raise ValueError(f"order must be between 1 and 4, got {self.order}")
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {self.min_tokens} and {self.max_tokens}")
        if self.max_overlap_ratio is not None and not 0 < self.max_overlap_ratio <= 1:
            raise ValueError(f"max_overlap_ratio must be in (0, 1], got {self.max_overlap_ratio}")
        if self.overlap_ngram < 2:
            raise ValueError(f"overlap_ngram must be at least 2, got {self.overlap_ngram}")


@dataclass
class Generation:
    """Candidates from one `generate` call, with their Markov prior and what the filters removed."""

    candidates: list[str]
    logprob: np.ndarray  # (n,) float32, mean log-probability per generated token (END included)
    n_tokens: np.ndarray  # (n,) int32, tokens per candidate
    report: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # why the list is short or empty, if it is


def _hash_rows(tokens: np.ndarray, lengths: np.ndarray, powers: np.ndarray) -> np.ndarray:
    """Polynomial hash of each row's first `lengths` ids: sum(id_i * B**(len-1-i)) mod 2**64."""
    n, width = tokens.shape
    exponent = lengths[:, None] - 1 - np.arange(width)[None, :]  # (n, width)
    valid = exponent >= 0
    terms = np.where(valid, tokens.astype(np.uint64) * powers[np.clip(exponent, 0, None)], np.uint64(0))
    return terms.sum(axis=1, dtype=np.uint64)


def _powers(n: int) -> np.ndarray:
    """B**0 .. B**(n-1) mod 2**64."""
    out, p = [], 1
    for _ in range(max(n, 1)):
        out.append(p)
        p = p * int(_HASH_BASE) % 2**64
    return np.array(out, dtype=np.uint64)


def _window_hashes(tokens: np.ndarray, m: int, powers: np.ndarray) -> np.ndarray:
    """Hash of every length-m window of a 1-D or (n, L) id array, along the last axis."""
    width = tokens.shape[-1] - m + 1
    if width <= 0:
        return np.zeros((*tokens.shape[:-1], 0), dtype=np.uint64)
    t = tokens.astype(np.uint64)
    h = np.zeros((*tokens.shape[:-1], width), dtype=np.uint64)
    for i in range(m):
        h += t[..., i : i + width] * powers[m - 1 - i]
    return h


def _in_sorted(sorted_hashes: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Membership of each query in a sorted hash array (binary search, no corpus scan)."""
    if len(sorted_hashes) == 0:
        return np.zeros(queries.shape, dtype=bool)
    flat = queries.ravel()
    order = np.argsort(flat)  # sorted queries walk the table in order: ~3x faster than random ones
    pos = np.empty(len(flat), dtype=np.int64)
    pos[order] = np.searchsorted(sorted_hashes, flat[order])
    return (sorted_hashes[np.minimum(pos, len(sorted_hashes) - 1)] == flat).reshape(queries.shape)


class MarkovModel:
    """A compiled word n-gram chain: build from weighted texts, sample candidates, save and load."""

    # cum_in_row: inclusive cumulative weight within each row (float32: exact for whole counts up to 2**24 per row)
    _ARRAYS = ("row_ptr", "next_tok", "next_state", "cum_in_row", "line_hashes", "ngram_hashes")
    _TABLE = ("row_ptr", "next_tok", "next_state", "cum_in_row")  # what the backward table has of _ARRAYS

    def __init__(self, config: MarkovConfig, vocab: list[str], arrays: dict[str, np.ndarray], stats: dict,
                 replies: ReplyWords | None = None):
        self.config = config
        # The words people say in reply to a word (None where the corpus did not say who spoke): see `reply_words`.
        self.replies = replies
        self.vocab = vocab  # id -> token piece; ids 0 and 1 are BEGIN and END
        self.stats = stats
        for name in self._ARRAYS:
            setattr(self, name, arrays[name])
        # The same lines read backwards (None in directories written before format 4): a model of its own that
        # shares the vocabulary, so its walks reuse every sampling routine here.
        self.backward: MarkovModel | None = None
        if "backward_row_ptr" in arrays:
            empty = np.zeros(0, dtype=np.uint64)
            back = {name: arrays[f"backward_{name}"] for name in self._TABLE}
            self.backward = MarkovModel(config, vocab, {**back, "line_hashes": empty, "ngram_hashes": empty}, {})
        # (next token, next state) of a transition share one int64, so a walk step gathers both at once;
        # next_tok and next_state are views of its halves, costing no extra memory.
        self._packed = np.empty(len(self.next_tok), dtype=np.int64)
        halves = self._packed.view(np.int32).reshape(-1, 2)
        halves[:, 0], halves[:, 1] = self.next_tok, self.next_state
        self.next_tok, self.next_state = halves[:, 0], halves[:, 1]
        # Derived once at load (plain 1-D arrays: structured or 2-D gathers are 10-30x slower in the walk):
        # the guide table, per-transition log-probabilities, and the pieces as an object array for output.
        weight = self.weight.astype(np.float64)
        row_total = np.repeat(self.cum_in_row[self.row_ptr[1:] - 1].astype(np.float64), np.diff(self.row_ptr))
        self._logp = (np.log(weight) - np.log(row_total)).astype(np.float32)
        self._guide_ptr, self._guide = self._guide_table(np.concatenate([[0.0], np.cumsum(weight)]))
        self._pieces = np.array(vocab, dtype=object)
        self._spaced = np.array([p[:1] == " " for p in vocab])
        self._powers = _powers(max(config.max_tokens, config.overlap_ngram) + 8)

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, texts_with_weights: Iterable[tuple[str, float]], config: MarkovConfig | None = None) -> MarkovModel:
        """Build a model from (text, weight) pairs; a line's weight multiplies all its transition counts."""
        config = config or MarkovConfig()
        k = config.order
        index: dict[str, int] = {}
        ids, lengths, line_weights = [], [], []
        batch: list[str] = []
        for n, (text, weight) in enumerate(texts_with_weights):
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"line {n + 1}: weight must be a finite number >= 0, got {weight!r}")
            if weight == 0 or not text.strip():
                continue
            batch.append(text)
            line_weights.append(weight)
            if len(batch) == _BATCH:
                ids_, lens_ = tokenize_many(batch, index, first_id=len(_SPECIAL))
                ids.append(ids_)
                lengths.append(lens_)
                batch = []
        if batch:
            ids_, lens_ = tokenize_many(batch, index, first_id=len(_SPECIAL))
            ids.append(ids_)
            lengths.append(lens_)
        if not line_weights:
            raise ValueError("the corpus is empty: no line with text and a positive weight")
        vocab = _SPECIAL + list(index)
        V = len(vocab)
        tokens = np.concatenate(ids)
        lens = np.concatenate(lengths)
        n_lines = len(lens)

        tables, n_states = _compile(tokens, lens, line_weights, V, k)
        # The backward table: every line's tokens reversed, compiled the same way (END then marks a line's start).
        within_line = np.arange(len(tokens)) - np.repeat(np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
        reverse = np.arange(len(tokens)) + np.repeat(lens - 1, lens) - 2 * within_line
        backward, _ = _compile(tokens[reverse], lens, line_weights, V, k)

        powers = _powers(int(lens.max()) + 1)
        tok_line = np.repeat(np.arange(n_lines), lens)
        exponent = np.repeat(lens, lens) - 1 - within_line
        line_hashes = np.zeros(n_lines, dtype=np.uint64)
        np.add.at(line_hashes, tok_line, tokens.astype(np.uint64) * powers[exponent])
        ngram_hashes = np.zeros(0, dtype=np.uint64)
        if config.max_overlap_ratio is not None:
            m = config.overlap_ngram
            h = _window_hashes(tokens, m, _powers(m))
            same_line = tok_line[: len(h)] == tok_line[m - 1 :]
            ngram_hashes = np.unique(h[same_line])

        arrays = {**tables, "line_hashes": np.unique(line_hashes), "ngram_hashes": ngram_hashes}
        arrays.update({f"backward_{name}": a for name, a in backward.items()})
        stats = {"lines": n_lines, "tokens": int(lens.sum()), "vocab": V, "states": n_states,
                 "transitions": len(tables["next_tok"])}
        return cls(config, vocab, arrays, stats)

    # ---------------------------------------------------------------- sample

    def sample(self, n: int, rng: np.random.Generator, start: str | None = None) -> list[str]:
        """Return n novel candidates (fewer only if the model cannot make them); raise UnknownStartError for bad start words."""
        gen = self.generate(n, rng, start=start)
        if gen.reason and not gen.candidates:
            raise UnknownStartError(gen.reason) if gen.report.get("unknown_start") else ValueError(gen.reason)
        return gen.candidates

    def generate(
        self,
        n: int,
        rng: np.random.Generator,
        start: str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        max_rounds: int = 8,
        around: Sequence[str] = (),
        unbias_above: int = 0,
    ) -> Generation:
        """Walk the chain for up to n novel candidates, with their mean log-prob per token and a filter report.

        `start`: every candidate begins with these words. `around`: every candidate is a whole line that names
        one of these words (drawn uniformly per candidate), written outward from it; unknown words are skipped,
        and none known gives an empty Generation with the reason.
        `unbias_above` k (with `around`; 0: off): a finished line of L >= min_tokens tokens is kept with
        probability min(1, k / L), undoing the length bias of drawing an occurrence above k tokens (report
        "thinned"; see AROUND_UNBIAS_ABOVE).
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if start and around:
            raise ValueError("give start or around, not both")
        if unbias_above < 0:
            raise ValueError(f"unbias_above must be >= 0, got {unbias_above}")
        lo = self.config.min_tokens if min_tokens is None else min_tokens
        hi = self.config.max_tokens if max_tokens is None else max_tokens
        report = {"generated": 0, "unfinished": 0, "too_short": 0, "verbatim": 0, "overlap": 0}
        if around:
            return self._generate_around(n, rng, around, lo, hi, max_rounds, report, unbias_above)
        try:
            prefix, init_states, init_p = self._start_states(start)
        except UnknownStartError as exc:
            report["unknown_start"] = 1
            return Generation([], np.zeros(0, np.float32), np.zeros(0, np.int32), report, str(exc))
        steps = hi - len(prefix) + 1  # room for the END token
        if steps < 1:
            reason = f"the start words already have {len(prefix)} tokens, more than max_tokens={hi}"
            return Generation([], np.zeros(0, np.float32), np.zeros(0, np.int32), report, reason)

        prefix_hash = _hash_rows(prefix[None, :], np.array([len(prefix)]), self._powers)[0]

        def walk(m: int) -> tuple[np.ndarray, ...]:
            states = init_states[rng.choice(len(init_states), size=m, p=init_p)] if len(init_states) > 1 else np.repeat(init_states, m)
            toks, length, logp, hashes = self._walk(states, steps, rng)
            if len(prefix):
                finished = length >= 0
                hashes += prefix_hash * self._powers[np.maximum(length, 0)]
                toks = np.concatenate([np.broadcast_to(prefix, (m, len(prefix))), toks], axis=1)
                length = np.where(finished, length + len(prefix), length)
            return toks, length, logp, hashes

        return self._rounds(n, walk, lo, max_rounds, report)

    def _rounds(self, n: int, walk, lo: int, max_rounds: int, report: dict) -> Generation:
        """Up to n novel candidates from rounds of `walk(m)` -> (tokens, lengths (-1: unfinished, counted here;
        other negatives: dropped by `walk`, which reports them), mean log-prob, hashes or None): each round walks
        enough for what is missing at the acceptance rate seen so far."""
        rows, logps = [], []
        accepted, rate = 0, 0.75  # acceptance rate, re-estimated each round so one round usually suffices
        for _ in range(max_rounds):
            need = n - accepted
            if need <= 0:
                break
            m = int(need / rate * 1.05) + 16
            toks, length, logp, hashes = walk(m)
            report["generated"] += m
            finished = length >= 0
            report["unfinished"] += int((length == -1).sum())  # -2: thinned by the walk itself, reported there
            ok = finished & (length >= lo)
            report["too_short"] += int((finished & (length < lo)).sum())
            ok &= self._novel(toks, length, ok, report, hashes)
            rate = max(float(ok.mean()), 0.05)
            keep = np.flatnonzero(ok)[:need]
            rows.append((toks[keep], length[keep]))
            logps.append(logp[keep])
            accepted += len(keep)
        # every round's rows have the same width, so they stack as they are
        toks = np.concatenate([t for t, _ in rows]) if len(rows) > 1 else rows[0][0] if rows else np.zeros((0, 0), np.int32)
        length = np.concatenate([length for _, length in rows]) if rows else np.zeros(0, np.int64)
        reason = None if accepted >= n else f"only {accepted} of {n} candidates passed the filters after {max_rounds} rounds"
        return Generation(self._to_text(toks, length), np.concatenate(logps) if logps else np.zeros(0, np.float32),
                          length.astype(np.int32), report, reason)

    def _generate_around(self, n: int, rng: np.random.Generator, around: Sequence[str], lo: int, hi: int,
                         max_rounds: int, report: dict, unbias_above: int = 0) -> Generation:
        """`generate` for candidates written outward from a word: the rounds, filters and report of a plain call."""
        empty = Generation([], np.zeros(0, np.float32), np.zeros(0, np.int32), report)
        if self.backward is None:
            empty.reason = "this Markov model has no backward table (written before format 4); rebuild it to write around words"
            return empty
        ids = []
        for word in dict.fromkeys(around):
            try:
                ids.append(self._lookup(word if word[:1] == " " else " " + word))
            except UnknownStartError:
                continue
        ids = list(dict.fromkeys(ids))  # "Hiking" and "hiking" may be one piece: drawn once, not twice as often
        if not ids:
            report["unknown_start"] = 1
            empty.reason = f"none of the words {list(around)!r} is in the model's vocabulary"
            return empty
        ids = np.asarray(ids)
        if unbias_above:
            report["thinned"] = 0

        def walk(m: int) -> tuple[np.ndarray, ...]:
            toks, length, logp = self._walk_around(ids[rng.integers(len(ids), size=m)], hi, rng)
            if unbias_above:  # keep a finished line of L tokens with probability min(1, k / L)
                thin = (length >= lo) & (length > unbias_above) & (rng.random(m) * length >= unbias_above)
                report["thinned"] += int(thin.sum())
                length = np.where(thin, -2, length)  # -2: thinned, neither unfinished nor too short
            return toks, length, logp, None

        return self._rounds(n, walk, lo, max_rounds, report)

    def _walk_around(self, words: np.ndarray, hi: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One line through each word id: tokens (m, width), lengths (-1: longer than hi or unfinished), mean log-prob.

        An occurrence of the word is drawn by weight among the forward table's transitions that emit it; the
        state it leads to holds the word and the (order - 1) tokens before it. The forward walk goes on from that
        state; the backward walk starts from the same tokens read backwards, unless they already reach the line's
        start (BEGIN padding). Every (order + 1)-gram of the line then occurs in the corpus, as in a plain walk.
        """
        k, m = self.config.order, len(words)
        order = np.argsort(words, kind="stable")
        into = self._into(tuple(np.unique(words).tolist()))
        state = np.empty(m, dtype=np.int64)
        occ_logp = np.empty(m, dtype=np.float32)
        for tok, (trans, cum) in into.items():  # draw each walk's occurrence of its word, by weight
            rows = order[np.searchsorted(words[order], tok, "left"):np.searchsorted(words[order], tok, "right")]
            drawn = trans[np.searchsorted(cum, rng.random(len(rows)) * cum[-1], "right")]
            state[rows], occ_logp[rows] = self.next_state[drawn], self._logp[drawn]
        mid = self._state_tokens[state]  # (m, k): the tokens before the word and the word, BEGIN-padded
        n_mid = (mid != BEGIN).sum(1)
        fwd, f_len, f_logp, _ = self._walk(state, hi + 1, rng)
        back_len = np.zeros(m, dtype=np.int64)
        back = np.zeros((m, 0), dtype=np.int32)
        b_logp = np.zeros(m, dtype=np.float32)
        inside = np.flatnonzero(mid[:, 0] != BEGIN)  # the occurrence is not among the line's first k tokens
        if len(inside):
            b_state = self.backward._state_of(mid[inside, ::-1])
            found = b_state >= 0
            b_toks, b_len, b_lp, _ = self.backward._walk(np.maximum(b_state, 0), hi + 1, rng)
            back = np.full((m, b_toks.shape[1]), -1, dtype=np.int32)
            back[inside] = b_toks
            back_len[inside] = np.where(found, b_len, -1)
            b_logp[inside] = b_lp
        length = back_len + n_mid + f_len
        bad = (back_len < 0) | (f_len < 0) | (length > hi)
        length[bad] = -1
        # Assemble backward tokens reversed, then the occurrence's tokens, then the forward walk.
        width = hi + 1
        toks = np.full((m, width), -1, dtype=np.int32)
        col = np.arange(width)[None, :]
        bl = np.maximum(back_len, 0)[:, None]
        src = np.clip(bl - 1 - col, 0, max(back.shape[1] - 1, 0))
        if back.shape[1]:
            toks = np.where(col < bl, np.take_along_axis(back, src, 1), toks)
        mid_pos = col - bl
        mid_src = np.clip(k - n_mid[:, None] + mid_pos, 0, k - 1)
        toks = np.where((mid_pos >= 0) & (mid_pos < n_mid[:, None]), np.take_along_axis(mid, mid_src, 1), toks)
        f_pos = col - bl - n_mid[:, None]
        f_src = np.clip(f_pos, 0, fwd.shape[1] - 1)
        toks = np.where((f_pos >= 0) & (f_pos < np.maximum(f_len, 0)[:, None]), np.take_along_axis(fwd, f_src, 1), toks)
        # Mean log-prob per token over both walks (each with its END) and the word itself, in its state; the
        # tokens before the word that came with the drawn occurrence are not counted (as a `start=` prefix's).
        nb = np.zeros(m, dtype=np.int64)
        nb[inside] = np.maximum(back_len[inside], 0) + 1
        nf = np.maximum(f_len, 0) + 1
        logp = ((b_logp * nb + f_logp * nf + occ_logp) / (nb + nf + 1)).astype(np.float32)
        return toks, length, logp

    def warm_around(self) -> None:
        """Derive now the tables that writing around a word needs, so a server's first turn does not pay for them."""
        if self.backward is not None:
            self._state_tokens  # noqa: B018 (cached on first use)
            self._by_token  # noqa: B018
            self._counts  # noqa: B018 (context_words)
            self.index  # noqa: B018
            self.backward._state_hashes  # noqa: B018

    def _into(self, tokens: tuple[int, ...]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For each token id, the transitions that emit it and their cumulative weights."""
        order, bounds, weight = self._by_token
        out = {}
        for tok in tokens:
            trans = order[bounds[tok] : bounds[tok + 1]]
            out[tok] = (trans, np.cumsum(weight[bounds[tok] : bounds[tok + 1]], dtype=np.float64))
        return out

    @functools.cached_property
    def _by_token(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The transitions sorted by the token they emit, where each token's run begins, and their weights in
        that order: one slice per word."""
        order = np.argsort(self.next_tok, kind="stable").astype(np.int32 if len(self.next_tok) < 2**31 else np.int64)
        return (order, np.searchsorted(self.next_tok[order], np.arange(len(self.vocab) + 1)),
                self.weight[order].astype(np.float32))

    @functools.cached_property
    def _state_tokens(self) -> np.ndarray:
        """Each state's `order` token ids, oldest first (BEGIN-padded), recovered from the tables on first use.

        A state's newest token is the one every transition into it emits; its older ones are its predecessor's.
        """
        k, n_states = self.config.order, len(self.row_ptr) - 1
        into = np.flatnonzero(self.next_state >= 0)
        row = np.searchsorted(self.row_ptr, into, side="right") - 1
        last = np.zeros(n_states, dtype=np.int32)  # state 0 is all BEGIN, and is its own predecessor
        pred = np.zeros(n_states, dtype=np.int64)
        last[self.next_state[into]] = self.next_tok[into]
        pred[self.next_state[into]] = row
        out = np.empty((n_states, k), dtype=np.int32)
        s = np.arange(n_states)
        for j in range(k - 1, -1, -1):
            out[:, j] = last[s]
            s = pred[s]
        return out

    @functools.cached_property
    def _state_hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """The states' token hashes, sorted, and the state id of each: a state found by its tokens in one search."""
        h = _hash_rows(self._state_tokens, np.full(len(self._state_tokens), self.config.order), self._powers)
        order = np.argsort(h)
        return h[order], order

    def _state_of(self, tokens: np.ndarray) -> np.ndarray:
        """The state id of each row of `order` token ids, or -1 where no state has them."""
        hashes, ids = self._state_hashes
        h = _hash_rows(tokens, np.full(len(tokens), tokens.shape[1]), self._powers)
        pos = np.minimum(np.searchsorted(hashes, h), len(hashes) - 1)
        state = ids[pos]
        hit = (hashes[pos] == h) & np.all(self._state_tokens[state] == tokens, axis=1)
        return np.where(hit, state, -1)

    def _walk(self, states: np.ndarray, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """Advance all walks together, one vectorized step per token; length -1 marks a walk that never ended.

        Returns the tokens (m, steps), lengths, mean log-prob per token and the polynomial hash of each walk.
        Per-walk sums live in compact arrays aligned with the walks still alive; a walk's sums are written
        out once, when it ends, rather than gathered and scattered at every step.
        """
        m = len(states)
        by_step = np.full((steps, m), -1, dtype=np.int32)  # (steps, m): each step writes one contiguous row
        length = np.full(m, -1, dtype=np.int64)
        logp_out = np.zeros(m, dtype=np.float32)
        hash_out = np.zeros(m, dtype=np.uint64)
        alive = np.arange(m)
        state = states.astype(np.int32)
        logp = np.zeros(m, dtype=np.float32)
        h = np.zeros(m, dtype=np.uint64)  # Horner's rule as we go: the novelty test needs no second pass
        for step in range(steps):
            if len(alive) == 0:
                break
            j = self._pick(state, rng.random(len(alive)))
            logp += self._logp[j]
            pair = self._packed[j].view(np.int32).reshape(-1, 2)  # (n, 2): next token, next state
            tok, nxt = pair[:, 0], pair[:, 1]
            ended = tok == END
            if ended.any():
                done = alive[ended]
                length[done] = step
                logp_out[done] = logp[ended] / (step + 1)  # mean over the tokens generated plus the END
                hash_out[done] = h[ended]
                go = ~ended
                alive, nxt, tok, logp, h = alive[go], nxt[go], tok[go], logp[go], h[go]
            state = nxt
            by_step[step, alive] = tok
            h = h * _HASH_BASE + tok.astype(np.uint64)
        return np.ascontiguousarray(by_step.T), length, logp_out, hash_out

    def _guide_table(self, cum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chen and Asau's guide table: row r gets G(r) buckets, bucket b holding the transition at the row's b/G quantile.

        G(r) is the row's total weight rounded up (at least its degree, at most 8x it), so with whole-number weights
        every bucket lies inside one transition and a draw is a single read. A bucket that straddles a boundary is
        stored as ~index; only draws that land there read the cumulative weights. `cum` is the global cumulative
        weight with a leading 0, used here only.
        """
        starts = self.row_ptr[:-1].astype(np.int64)
        deg = np.diff(self.row_ptr).astype(np.int64)
        total = cum[self.row_ptr[1:]] - cum[starts]
        size = np.clip(np.ceil(total - 1e-9).astype(np.int64), deg, 8 * deg)
        guide_ptr = np.concatenate([[0], np.cumsum(size)])
        off_type = np.int16 if deg.max(initial=0) < 2**15 else np.int32
        guide = np.empty(int(guide_ptr[-1]), dtype=off_type)
        weight = np.diff(cum)
        within = np.arange(len(weight)) - np.repeat(starts, deg)  # each transition's offset in its row
        # Rows of whole weights that fit uncapped: bucket b is the transition holding the b-th unit of weight,
        # so the guide is each offset repeated by its weight (the common, fast case: plain counts).
        fractional = np.bincount(np.repeat(np.arange(len(deg)), deg), weights=weight != np.round(weight), minlength=len(deg))
        whole = (fractional == 0) & (size == np.round(total))
        in_whole = np.repeat(whole, deg)
        guide[_ranges(guide_ptr[:-1][whole], size[whole])] = np.repeat(within[in_whole], weight[in_whole].astype(np.int64))
        # Other rows: bucket b holds the transition at quantile b/G; one straddling a boundary is stored as ~offset.
        rows = np.flatnonzero(~whole)
        if len(rows):
            row = np.repeat(rows, size[rows])
            bucket = np.arange(len(row)) - np.repeat(np.cumsum(size[rows]) - size[rows], size[rows])
            base, tot, g = cum[starts][row], total[row], size[row]
            lo = base + bucket / g * tot  # sorted: rows in order, buckets rising
            hi = base + (bucket + 1) / g * tot
            first, last = starts[row], self.row_ptr[1:][row] - 1
            j = np.clip(np.searchsorted(cum, lo, side="right") - 1, first, last)
            pure = (cum[j + 1] >= hi) | (j == last)
            guide[_ranges(guide_ptr[rows], size[rows])] = np.where(pure, j - first, ~(j - first))
        ptr_type = np.int64 if guide_ptr[-1] >= 2**31 else np.int32
        return guide_ptr.astype(ptr_type), guide

    def _pick(self, state: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Transition index for uniform draws u in each state's row: one guide-table read, O(1) expected."""
        g0, g1 = self._guide_ptr[state], self._guide_ptr[state + 1]
        offset = self._guide[g0 + (u * (g1 - g0)).astype(np.int64)]
        first = self.row_ptr[state]
        mixed = np.flatnonzero(offset < 0)
        j = first + offset
        if len(mixed) == 0:
            return j
        # straddling buckets: start at the bucket's transition and step forward to the target
        cum, s = self.cum_in_row, state[mixed]
        e, k = self.row_ptr[s + 1].astype(np.int64), (first[mixed] + ~offset[mixed]).astype(np.int64)
        target = u[mixed] * cum[e - 1]
        todo = np.flatnonzero((cum[k] <= target) & (k < e - 1))
        while len(todo):
            k[todo] += 1
            todo = todo[(cum[k[todo]] <= target[todo]) & (k[todo] < e[todo] - 1)]
        j[mixed] = k
        return j

    def _novel(self, toks: np.ndarray, length: np.ndarray, ok: np.ndarray, report: dict, hashes: np.ndarray | None = None) -> np.ndarray:
        """Hash-based novelty: no verbatim corpus line; optionally no copied run over the overlap ratio."""
        novel = np.ones(len(toks), dtype=bool)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return novel
        if self.config.reject_verbatim:
            h = hashes[idx] if hashes is not None else _hash_rows(np.maximum(toks[idx], 0), length[idx], self._powers)
            copy = _in_sorted(self.line_hashes, h)
            report["verbatim"] += int(copy.sum())
            novel[idx[copy]] = False
        ratio = self.config.max_overlap_ratio
        if ratio is not None and len(self.ngram_hashes):
            m = self.config.overlap_ngram
            h = _window_hashes(np.maximum(toks[idx], 0), m, self._powers)  # (k, W)
            inside = np.arange(h.shape[1])[None, :] <= (length[idx] - m)[:, None]
            hit = _in_sorted(self.ngram_hashes, h) & inside
            run = _longest_run(hit)
            covered = np.where(run > 0, run + m - 1, 0)
            over = (covered > ratio * length[idx]) & novel[idx]
            report["overlap"] += int(over.sum())
            novel[idx[over]] = False
        return novel

    def _to_text(self, toks: np.ndarray, length: np.ndarray) -> list[str]:
        """Join each row's pieces; one big join and split beats a join per row."""
        if len(length) == 0:
            return []
        # Rows have room for the END (walks reserve a step for it) and are -1 after it; END's piece is "\n".
        toks[np.arange(len(length)), length] = END
        text = "".join(self._pieces[toks[toks >= 0]].tolist())
        if self._spaced[toks[:, 0]].all():  # the usual case: every candidate opens with a spaced piece
            return text[1:-1].split("\n ")
        return [line[1:] if line[:1] == " " else line for line in text.split("\n")[:-1]]

    # ------------------------------------------------------------ start words

    def _start_states(self, start: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Prefix ids and the states a walk may start in, with their probabilities, found by following the words."""
        if not start or not start.strip():
            return np.zeros(0, np.int32), np.zeros(1, np.int64), None  # state 0 is all-BEGIN: it sorts first
        prefix = np.asarray([self._lookup(tok) for tok in tokenize(start)], dtype=np.int32)
        # Prefer the words as a line opening, as a person would begin.
        states, weights = self._follow(np.zeros(1, np.int64), np.ones(1), prefix)
        if len(states) == 0:  # anywhere in a line: every state the first word leads to, by how often
            into = np.flatnonzero(self.next_tok == prefix[0])
            states, weights = self._follow(self.next_state[into].astype(np.int64), self._weight_at(into), prefix[1:])
        if len(states) == 0:
            raise UnknownStartError(f"the start words {start!r} never occur in this order in the model's corpus")
        states, inverse = np.unique(states, return_inverse=True)
        weights = np.bincount(inverse.ravel(), weights=weights)
        return prefix, states, weights / weights.sum()

    def _find(self, states: np.ndarray, tok: int) -> tuple[np.ndarray, np.ndarray]:
        """For each state, the index of its transition emitting tok, and whether it has one."""
        first, end = self.row_ptr[states].astype(np.int64), self.row_ptr[states + 1].astype(np.int64)
        # tokens are sorted within each row: one binary search per row finds the token
        j = np.array([f + np.searchsorted(self.next_tok[f:e], tok) for f, e in zip(first, end, strict=True)], dtype=np.int64)
        hit = (j < end) & (self.next_tok[np.minimum(j, len(self.next_tok) - 1)] == tok)
        return j, hit

    def _follow(self, states: np.ndarray, weights: np.ndarray, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance a weighted set of states through the given token ids; states that cannot follow drop out."""
        for word in words:
            if len(states) == 0:
                break
            j, hit = self._find(states, word)
            j, weights = j[hit], weights[hit] * self._weight_at(j[hit])
            states = self.next_state[j].astype(np.int64)
            keep = states >= 0  # END leads nowhere
            states, weights = states[keep], weights[keep]
        return states, weights

    @property
    def weight(self) -> np.ndarray:
        """Each transition's weight (its count, or summed line weights), float64."""
        cum = self.cum_in_row.astype(np.float64)
        prev = np.concatenate([[0.0], cum[:-1]])
        prev[self.row_ptr[:-1][np.diff(self.row_ptr) > 0]] = 0.0  # a row starts from zero
        return cum - prev

    def _weight_at(self, j: np.ndarray) -> np.ndarray:
        """Weights of the given transitions only."""
        at_row_start = np.isin(j, self.row_ptr[:-1])
        prev = np.where(at_row_start, 0.0, self.cum_in_row[np.maximum(j - 1, 0)].astype(np.float64))
        return self.cum_in_row[j].astype(np.float64) - prev

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Token piece -> id, built on first use (the hot path never needs it)."""
        return {tok: i for i, tok in enumerate(self.vocab) if i > END}

    def _lookup(self, tok: str) -> int:
        """Token id for a start word, forgiving leading space and case; a clear error if unknown."""
        word = tok.strip()
        for variant in (tok, " " + word, word, " " + word.lower(), " " + word.capitalize(), word.lower()):
            if variant in self.index:
                return self.index[variant]
        raise UnknownStartError(f"start word {word!r} is not in the model's vocabulary")

    def knows(self, word: str) -> bool:
        """Whether a single word can start a candidate."""
        try:
            self._lookup(word if word.startswith(" ") else " " + word)
            return True
        except UnknownStartError:
            return False

    @functools.cached_property
    def _counts(self) -> np.ndarray:
        """Each token's weighted count in the corpus (its transitions' weight; END's is the line count)."""
        return np.bincount(self.next_tok, weights=self.weight, minlength=len(self.vocab))

    @functools.cached_property
    def _unigram(self) -> np.ndarray:
        """Share of all transition weight that ends in each token: the back-off distribution."""
        return self._counts / self._counts.sum()

    def specific_words(self, candidates: Sequence[str], k: int, min_count: float = 2.0) -> list[str]:
        """Up to k of the words the model knows (seen at least min_count times, after at least two different
        states, so it can write a line through them that is not a copy), the rarest first; ties keep order."""
        _, bounds, _ = self._by_token
        counts = []
        for i, word in enumerate(candidates):
            try:
                tok = self._lookup(word if word[:1] == " " else " " + word)
            except UnknownStartError:
                continue
            count = float(self._counts[tok])
            if count >= min_count and bounds[tok + 1] - bounds[tok] >= 2:
                counts.append((count, i, word))
        return [word for _, _, word in sorted(counts)[:k]]

    def context_words(self, lines: Sequence[str], k: int) -> list[str]:
        """The words to write a reply around: up to k content words of the newest line (lines: newest last) that has
        any this model knows, the rarest first; an older line's only where the newer ones have none ("ok then").

        The newest line alone: pooled with the line before it, the rarest words were often the bot's own last line's,
        and the reply kept the old subject after the user changed it (benchmarks/RESULTS.md, "Seventeenth pass")."""
        for line in reversed(lines):
            picked = self.specific_words(list(dict.fromkeys(content_words(words(line)))), k)
            if picked:
                return picked
        return []

    def reply_words(self, said: Sequence[str], lines: Sequence[str], k: int) -> tuple[list[str], list[str]]:
        """Up to k words people name in reply to the said words (`markov.replies`), none of the lines' own, that
        this model can write a line through, the strongest first, and the said words that have any; ([], []) for a
        model with no reply-word table."""
        if self.replies is None or k <= 0:
            return [], []
        ranked = self.replies.of(said, exclude={w for line in lines for w in words(line)}, k=3 * k)
        known = set(self.specific_words(ranked, len(ranked)))
        picked = [w for w in ranked if w in known][:k]
        return picked, ([w for w in said if self.replies.answers(w)] if picked else [])

    def log_likelihood(self, text: str, mix: float = 0.9, floor: float = 1e-7) -> float:
        """Mean log-probability per token (END included) of a text, interpolated with unigrams.

        The chain is followed as a weighted set of states; after an unseen transition it re-enters at every
        state the token leads to, so one odd word does not zero the rest of the text.
        """
        ids = [self.index.get(t, -1) for t in tokenize(text)] + [END]
        states, weights = np.zeros(1, np.int64), np.ones(1)
        total = 0.0
        for tok in ids:
            if tok < 0:
                total += math.log(floor)
                states, weights = np.zeros(0, np.int64), np.zeros(0)
                continue
            p_chain = 0.0
            if len(states):
                p_chain, states, weights = self._step_prob(states, weights / weights.sum(), tok)
            p = mix * p_chain + (1 - mix) * self._unigram[tok] + floor
            total += math.log(p)
            if p_chain == 0.0 and tok != END:
                into = np.flatnonzero(self.next_tok == tok)
                states, weights = self.next_state[into].astype(np.int64), self._weight_at(into)
        return total / len(ids)

    def _step_prob(self, states: np.ndarray, probs: np.ndarray, tok: int) -> tuple[float, np.ndarray, np.ndarray]:
        """P(tok | mixture of states) and the mixture after emitting it."""
        j, hit = self._find(states, tok)
        if not hit.any():
            return 0.0, np.zeros(0, np.int64), np.zeros(0)
        row_total = self.cum_in_row[self.row_ptr[states[hit] + 1] - 1].astype(np.float64)
        contrib = probs[hit] * self._weight_at(j[hit]) / row_total
        nxt = self.next_state[j[hit]].astype(np.int64)
        keep = nxt >= 0
        return float(contrib.sum()), nxt[keep], contrib[keep]

    def is_novel(self, texts: list[str]) -> np.ndarray:
        """Apply the novelty test to arbitrary texts (True for any text with an unknown token: no corpus line holds it)."""
        rows = [[self.index.get(t, -1) for t in tokenize(text)] for text in texts]
        width = max((len(r) for r in rows), default=0) + 1
        toks = np.full((len(rows), width), -1, dtype=np.int64)
        for i, r in enumerate(rows):
            toks[i, : len(r)] = r
        length = np.asarray([len(r) for r in rows], dtype=np.int64)
        known = np.all((toks >= 0) | (np.arange(width)[None, :] >= length[:, None]), axis=1)
        report = {"verbatim": 0, "overlap": 0}
        return ~known | self._novel(toks, length, known, report)

    # ------------------------------------------------------------ persistence

    def nbytes(self) -> int:
        """Bytes held by the tables (the reply-word table too) and the vocabulary."""
        arrays = sum(getattr(self, name).nbytes for name in self._ARRAYS)
        derived = self._guide.nbytes + self._guide_ptr.nbytes + self._logp.nbytes + self._pieces.nbytes
        backward = 0
        if self.backward is not None:  # its tables and what sampling derives from them (the vocabulary is shared)
            b = self.backward
            backward = sum(getattr(b, name).nbytes for name in self._TABLE) + b._guide.nbytes + b._guide_ptr.nbytes + b._logp.nbytes
        replies = self.replies.nbytes() if self.replies is not None else 0
        return arrays + derived + backward + replies + sum(len(t.encode()) + 50 for t in self.vocab)

    def save(self, path: str | Path) -> None:
        """Write config.json, vocab.txt and tables.npz (and replies.txt, with a reply-word table) to a directory,
        atomically."""
        with atomic_directory(path) as tmp:
            settings = {"config": asdict(self.config), "stats": self.stats}
            if self.replies is not None:
                settings["replies"] = self.replies.stats
            modeldir.write(tmp, KIND, FORMAT_VERSION, settings)
            (tmp / "vocab.txt").write_text("\n".join(self.vocab[2:]) + "\n", encoding="utf-8")
            arrays = {name: getattr(self, name) for name in self._ARRAYS}
            if self.backward is not None:
                arrays.update({f"backward_{name}": getattr(self.backward, name) for name in self._TABLE})
            if self.replies is not None:
                (tmp / "replies.txt").write_text("".join(w + "\n" for w in self.replies.vocab), encoding="utf-8")
                arrays.update({f"replies_{name}": a for name, a in self.replies.arrays().items()})
            np.savez(tmp / "tables.npz", **arrays)

    @classmethod
    def load(cls, path: str | Path) -> MarkovModel:
        """Load a directory written by `save`; a clear error if it is missing, corrupt or from another format."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path} is not a Markov model directory: config.json is missing")
        meta = modeldir.read(path, "Markov model", kind=KIND, hint="rebuild it with `python -m markov build`")
        version = meta.get("format_version")
        if version not in READS_VERSIONS:
            raise ValueError(
                f"{path} holds Markov format version {version!r}, but this riposte reads version "
                f"{' and '.join(map(str, READS_VERSIONS))}; rebuild it with `python -m markov build`"
            )
        known = {f.name for f in fields(MarkovConfig)}
        try:
            config = MarkovConfig(**{k: v for k, v in meta["config"].items() if k in known})
            n_vocab, n_states = int(meta["stats"]["vocab"]), int(meta["stats"]["states"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"{cfg_file} is corrupt ({type(exc).__name__}: {exc}); rebuild it") from exc
        try:
            vocab = _SPECIAL + (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
            with np.load(path / "tables.npz") as npz:
                arrays = {name: npz[name] for name in cls._ARRAYS}
                if "backward_row_ptr" in npz.files:  # format 4 (a model loaded from an older one saves without)
                    arrays.update({f"backward_{name}": npz[f"backward_{name}"] for name in cls._TABLE})
                replies = None
                if "replies_ptr" in npz.files:  # format 5, built from lines with speakers
                    reply_vocab = (path / "replies.txt").read_text(encoding="utf-8").split("\n")[:-1]
                    replies = ReplyWords.from_arrays(reply_vocab, {name: npz[f"replies_{name}"]
                                                                   for name in ("ptr", "to", "score")},
                                                     meta.get("replies") or {})
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path} is corrupt or incomplete ({type(exc).__name__}: {exc}); rebuild it") from exc
        backward = {name: arrays[f"backward_{name}"] for name in cls._TABLE} if "backward_row_ptr" in arrays else None
        if (len(vocab) != n_vocab or len(arrays["row_ptr"]) != n_states + 1 or not _tables_consistent(arrays, n_vocab)
                or (backward is not None and not _tables_consistent(backward, n_vocab))):
            raise ValueError(f"{path} is corrupt: its tables do not match its config.json; rebuild it")
        return cls(config, vocab, arrays, meta["stats"], replies)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MarkovModel):
            return NotImplemented
        return (
            self.config == other.config
            and self.vocab == other.vocab
            and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in self._ARRAYS)
            and (self.backward is None) == (other.backward is None)
            and (self.backward is None or all(np.array_equal(getattr(self.backward, a), getattr(other.backward, a))
                                              for a in self._TABLE))
            and self.replies == other.replies
        )

    __hash__ = None  # mutable arrays: equality only

    def __repr__(self) -> str:
        s = self.stats
        return f"MarkovModel(order={self.config.order}, lines={s['lines']}, vocab={s['vocab']}, states={s['states']}, transitions={s['transitions']})"


def _padded_stream(tokens: np.ndarray, lens: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Lines given as concatenated token ids, each as k BEGINs, its tokens and one END, in one array; and the mask
    of the ids predicted from the k before them (every token and END: an n-gram of k+1 ids of one line ends there)."""
    seq_len = lens + k + 1
    line_start = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
    seq = np.full(int(seq_len.sum()), BEGIN, dtype=np.int64)
    tok_pos = np.arange(len(tokens)) + np.repeat(line_start + k - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    seq[tok_pos] = tokens
    seq[line_start + seq_len - 1] = END
    pred = np.ones(len(seq), dtype=bool)
    pred[(line_start[:, None] + np.arange(k)[None, :]).ravel()] = False
    return seq, pred


def _compile(tokens: np.ndarray, lens: np.ndarray, line_weights: list[float], V: int, k: int) -> tuple[dict[str, np.ndarray], int]:
    """The transition tables (CSR rows by state) of lines given as concatenated token ids, and the state count."""
    seq, pred = _padded_stream(tokens, lens, k)
    pos = np.flatnonzero(pred)  # (P,)
    # Key each (k+1)-gram as one integer: state ids are the ranks of its first k ids, and a single
    # sort groups both states and transitions. Compress to ranks only when V**(k+1) would overflow.
    key = seq[pos - k]
    for j in range(1, k + 1):
        if int(key.max()) >= 2**62 // V:
            _, key = np.unique(key, return_inverse=True)
            key = key.ravel()
        key = key * V + seq[pos - k + j]
    order = np.argsort(key, kind="stable")
    full = key[order]
    new_trans = np.concatenate([[True], full[1:] != full[:-1]])
    state_key = full // V
    new_state = np.concatenate([[True], state_key[1:] != state_key[:-1]])
    state = np.empty(len(pos), dtype=np.int64)
    state[order] = np.cumsum(new_state) - 1  # state id of each position's first k ids
    n_states = int(new_state.sum())

    nxt = seq[pos]
    # Predictions are contiguous per line, so the state after position p is the state at p+1.
    following = np.full(len(pos), -1, dtype=np.int64)
    not_end = nxt != END
    following[not_end] = state[np.flatnonzero(not_end) + 1]

    pos_weight = np.repeat(np.asarray(line_weights, dtype=np.float64), lens + 1)
    t_first = order[new_trans]  # one position of each transition, in transition order
    t_id = np.cumsum(new_trans) - 1
    weight = np.bincount(t_id, weights=pos_weight[order], minlength=len(t_first))
    trans_state = state[t_first]
    row_ptr = np.searchsorted(trans_state, np.arange(n_states + 1))
    cum = np.cumsum(weight)
    cum_in_row = cum - np.repeat(np.concatenate([[0.0], cum])[row_ptr[:-1]], np.diff(row_ptr))

    n_trans = len(t_first)
    tables = {
        "row_ptr": row_ptr.astype(np.int32 if n_trans < 2**31 else np.int64),
        "next_tok": nxt[t_first].astype(np.int32),
        "next_state": following[t_first].astype(np.int32),
        "cum_in_row": cum_in_row.astype(np.float32),
    }
    return tables, n_states


def _tables_consistent(arrays: dict[str, np.ndarray], n_vocab: int) -> bool:
    """Cheap structural checks, so that damaged tables fail at load instead of sampling garbage or crashing later."""
    row_ptr, nxt, state, cum = arrays["row_ptr"], arrays["next_tok"], arrays["next_state"], arrays["cum_in_row"]
    n = len(nxt)
    if row_ptr.ndim != 1 or len(row_ptr) < 2 or row_ptr[0] != 0 or row_ptr[-1] != n or len(state) != n or len(cum) != n:
        return False
    if n == 0:
        return True
    return bool(
        np.all(np.diff(row_ptr) >= 0)
        and nxt.min() >= 1 and nxt.max() < n_vocab  # never BEGIN, always a known token
        and state.min() >= -1 and state.max() < len(row_ptr) - 1
        and np.all(np.isfinite(cum)) and cum.min() > 0
    )


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The indices start..start+size-1 of every (start, size) pair, concatenated."""
    ends = np.cumsum(sizes)
    return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(starts - (ends - sizes), sizes)


def _longest_run(hit: np.ndarray) -> np.ndarray:
    """Length of the longest run of True in each row of a (n, W) bool array."""
    n, width = hit.shape
    best = np.zeros(n, dtype=np.int64)
    run = np.zeros(n, dtype=np.int64)
    for j in range(width):
        run = np.where(hit[:, j], run + 1, 0)
        np.maximum(best, run, out=best)
    return best
