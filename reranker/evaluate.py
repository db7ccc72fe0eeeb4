"""How good is the editor, beside the baselines, on the same held-out cases.

Every scorer is measured on the same cases (fixed seed), each figure with its case count and standard error:
- next-line selection: the true next line among 9 or 99 lines from other documents (R@1, MRR), the standard
  response-selection measure; ties count against the true line, so a constant scorer gets R@1 = 0. The lines
  come from one pool of POOL_LINES (`OtherLines`): the mean R@1 of drawing from every document within noise (0.300
  over 20 seeds of 300 cases against 0.305 over 10, the zero-shot bi-encoder on chitchat), for a fraction of the reads.
- human vs writer: the true next line among 99 lines of a Markov writer that never saw its document, passed
  through the engine's own filters: the candidates a user's turn would see.
- swap pairs: (context, true next) against the same lines with the first and last exchanged (the training
  swap negative); accuracy = how often the true pair scores higher.

The context of a case is the `context_lines` lines before the true line. Baselines: the zero-shot MiniLM
bi-encoder (cosine of the joined context and the candidate) and TF-IDF cosine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from corpus.progress import progress as progress_bar
from corpus.text import LineFilter, dedupe_key
from markov.chain import AROUND_UNBIAS_ABOVE

MEASURES = ("select10", "select100", "writer99")
POOL_LINES = 2000  # a case draws its distractors, other people's lines or writer lines, from a pool this size
# Swapped windows are scored this many (context, candidate) pairs at a time, the deadline checked between pieces:
# 64 pairs (32 swaps) cost an editor about 2 s on a 2-core AVX2 CPU, the most a cut can run over. Even, so a piece
# never parts a true window from its swapped one.
SWAP_PIECE = 64
LABELS = {"select10": "R@1 of 10", "select100": "R@1 of 100", "writer99": "R@1 vs 99 writer lines"}


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve by the rank-sum formula, ties sharing their average rank; NaN if one class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def true_rank(scores: Sequence[float], true_index: int = 0) -> int:
    """1-based rank of the true candidate; every other candidate scoring >= it ranks above it (pessimistic ties).

    A NaN score counts as the worst possible, so a scorer that fails on the true line cannot rank it first.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    if scores[true_index] == -np.inf:
        return len(scores)
    others = np.delete(scores, true_index)
    return 1 + int((others >= scores[true_index]).sum())


def selection_metrics(ranks: Sequence[int]) -> dict:
    """R@1 and MRR from the true candidates' ranks, each with its standard error."""
    ranks = np.asarray(ranks, dtype=np.float64)
    n = len(ranks)
    if n == 0:
        return {"r@1": float("nan"), "r@1_se": float("nan"), "mrr": float("nan"), "mrr_se": float("nan"), "n": 0}
    hit, rr = (ranks == 1).astype(np.float64), 1.0 / ranks
    return {"r@1": float(hit.mean()), "r@1_se": standard_error(hit), "mrr": float(rr.mean()),
            "mrr_se": standard_error(rr), "n": n}


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); 0 for fewer than 2 values."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


# ---- baselines ------------------------------------------------------------------------------------------


class TfidfScorer:
    """The lexical baseline: TF-IDF cosine of the joined context and each candidate (IDF from `texts`)."""

    def __init__(self, texts: Sequence[str], context_lines: int = 3) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.context_lines = context_lines
        self.vectorizer = TfidfVectorizer(sublinear_tf=True).fit(list(texts))

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        """Cosine of TF-IDF vectors (rows are l2-normalised by the vectorizer)."""
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        m = self.vectorizer.transform([" ".join(context[-self.context_lines :]), *candidates])
        return (m[1:] @ m[0].T).toarray()[:, 0].astype(np.float32)

    def score_pairs(self, pairs: list[tuple[list[str], str]]) -> np.ndarray:
        """One cosine per (context, candidate) pair."""
        return np.array([self.score(c, [x])[0] for c, x in pairs], dtype=np.float32)


def baselines(docs: Sequence, *, context_lines: int = 3, share_with=None) -> dict:
    """{"bi-encoder": zero-shot MiniLM, "tf-idf": TF-IDF fitted on the documents' lines}.

    `share_with`: an editor whose bi-encoder has the very same weights; the baseline then shares its
    embedding cache, so each text is embedded once for both.
    """
    from reranker.biencoder import BiEncoder, BiEncoderConfig

    bi = BiEncoder.from_backbone(config=BiEncoderConfig(context_lines=context_lines), dtype="auto")
    bi.cache = {}  # the cases reuse their candidate lines many times over
    own = getattr(share_with, "biencoder", None)
    if (own is not None and same_weights(own.model, bi.model) and own.config == bi.config and own.dtype == bi.dtype
            and own.token_head is None):  # a cached read keeps its token max: only readers without one share
        remember_readings(share_with)
        bi.cache = own.cache
    return {"bi-encoder": bi, "tf-idf": TfidfScorer([line.text for doc in docs for line in doc.lines], context_lines)}


def remember_readings(scorer) -> None:
    """Give each encoder of a scorer (a bi-encoder, an editor's bi-encoder and sense encoder) a cache of the texts
    it reads, where it has none: evaluation cases reuse their candidate lines many times over (every case draws its
    distractors from pools of POOL_LINES lines). A cache keeps exact and int8 vectors apart, so scores are unchanged
    up to the batch a text was read in (padding; int8 scales its activations per batch)."""
    sense = getattr(scorer, "sense", None)
    for encoder in (scorer, getattr(scorer, "biencoder", None), getattr(sense, "encoder", None)):
        if encoder is not None and hasattr(encoder, "cache") and encoder.cache is None:
            encoder.cache = {}


def same_weights(a, b) -> bool:
    """True when two torch modules hold equal tensors under the same names."""
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k].float(), sb[k].float()) for k in sa)


# ---- the writer's candidates -------------------------------------------------------------------------------


class WriterPools:
    """Writer candidates for a held-out case: lines of a Markov writer that never saw the case's document."""

    def __init__(self, pools: Sequence[Sequence[str]], pool_of_doc: Sequence[int]) -> None:
        if not pools or any(len(p) == 0 for p in pools):
            raise ValueError("every writer pool needs at least one line")
        self.pools = [list(p) for p in pools]
        self.pool_of_doc = list(pool_of_doc)

    def __call__(self, d: int, k: int, rng: np.random.Generator, exclude: str = "") -> list[str]:
        """k writer lines (fewer only if the pool is smaller) for a case in document d, none equal to `exclude`."""
        pool = self.pools[self.pool_of_doc[d]]
        picks = rng.choice(len(pool), size=min(k + 1, len(pool)), replace=False)
        return [pool[i] for i in picks if pool[i] != exclude][:k]

    @classmethod
    def from_writer(cls, writer, n_docs: int, *, pool_size: int = POOL_LINES, seed: int = 0) -> WriterPools:
        """One writer (a MarkovModel that saw none of the held-out documents) for every case."""
        return cls([writer_lines(writer, pool_size, seed)], [0] * n_docs)

    @classmethod
    def leave_out(cls, docs: Sequence, *, folds: int = 8, pool_size: int = POOL_LINES, seed: int = 0) -> WriterPools:
        """For held-out data only: document d's writer is built from the documents of the other folds."""
        from markov import MarkovModel

        folds = max(2, min(folds, len(docs)))
        pools = []
        for f in range(folds):
            rest = ((line.text, line.weight) for d, doc in enumerate(docs) if d % folds != f for line in doc.lines)
            pools.append(writer_lines(MarkovModel.build(rest), pool_size, seed + f))
        return cls(pools, [d % folds for d in range(len(docs))])


def writer_lines(writer, n: int, seed: int = 0, deadline: float = math.inf) -> list[str]:
    """Up to n distinct lines from a Markov writer that pass the line rules (URLs, lengths; not a turn's
    `EngineConfig.max_sentences`, so these measures compare with every build before it)."""
    text_filter, rng = LineFilter(), np.random.default_rng(seed)
    out: dict[str, str] = {}
    for _ in range(20):  # rounds: a tiny writer cannot make n distinct lines, and must not loop forever
        for text in writer.generate(min(max(256, n - len(out)), 8192), rng).candidates:
            kept = text_filter(text)
            if kept:
                out.setdefault(dedupe_key(kept), kept)
        if len(out) >= n or time.monotonic() > deadline:
            break
    return list(out.values())[:n]


def around_writer_lines(writer, contexts: Sequence[Sequence[str]], n: int, seed: int = 0,
                        deadline: float = math.inf, per_context: int = 16, seed_words: int = 4) -> list[str]:
    """Up to n distinct writer lines written around the context words of contexts drawn from `contexts` (the newest
    line's that has any the writer knows), as a turn writes its seeded candidates
    (`MarkovModel.context_words`, `generate(around=...)`, thinned by length as
    `markov.AROUND_UNBIAS_ABOVE` says); the line rules apply, as in `writer_lines`. A writer without a backward table (saved
    before format 4) cannot: none."""
    if getattr(writer, "backward", None) is None:
        return []
    text_filter, rng = LineFilter(), np.random.default_rng(seed)
    out: dict[str, str] = {}
    tries = 0
    while len(out) < n and tries < 4 * (n // per_context + 1) and contexts and time.monotonic() < deadline:
        tries += 1
        around = writer.context_words(list(contexts[rng.integers(len(contexts))]), seed_words)
        if not around:
            continue
        for text in writer.generate(per_context, rng, around=around, max_rounds=3,
                                    unbias_above=AROUND_UNBIAS_ABOVE).candidates:
            kept = text_filter(text)
            if kept:
                out.setdefault(dedupe_key(kept), kept)
    return list(out.values())[:n]


def seeded_writer_lines(writer, starts: Sequence[str], n: int, seed: int = 0, deadline: float = math.inf,
                        per_start: int = 24) -> list[str]:
    """Up to n distinct lines of a writer started from words drawn from `starts` (with repeats, so as often as
    they occur); the line rules apply, as in `writer_lines`.

    Fragments: a line begun mid-sentence at a topic word fails in ways a line begun at a line's start does not,
    and these were the lines an editor that rewards topic picked. Unknown starts are skipped."""
    text_filter, rng = LineFilter(), np.random.default_rng(seed)
    out: dict[str, str] = {}
    dead: set[str] = set()  # starts the writer cannot begin a new line with: unknown, or only its own lines
    distinct, tries = len(set(starts)), 0
    while len(out) < n and tries < 4 * (n // per_start + 1) and len(dead) < distinct:  # tries: duplicates happen
        if time.monotonic() > deadline:
            break
        start = starts[rng.integers(len(starts))]
        if start in dead:
            continue
        tries += 1
        gen = writer.generate(per_start, rng, start=start)
        if not gen.candidates:
            dead.add(start)
        for text in gen.candidates:
            kept = text_filter(text)
            if kept:
                out.setdefault(dedupe_key(kept), kept)
    return list(out.values())[:n]


# ---- the evaluation ---------------------------------------------------------------------------------------


def _positions(docs: list, rng: np.random.Generator, n: int, context_lines: int) -> list[tuple[int, int]]:
    """Up to n (document, line) positions with a full context before them, spread over documents."""
    eligible = [(d, i) for d, doc in enumerate(docs) for i in range(context_lines, len(doc.lines))]
    if not eligible:
        eligible = [(d, i) for d, doc in enumerate(docs) for i in range(1, len(doc.lines))]
    if not eligible:
        return []
    picks = rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)
    return [eligible[p] for p in picks]


class OtherLines:
    """A fixed pool of lines from the documents, each with its document: the distractors of next-line selection.

    Every case draws its distractors from one pool, as its writer lines come from one pool (`WriterPools`), so an
    encoder reads each pool line once and serves later cases from its cache (`remember_readings`). The pool is drawn
    as a case used to draw a line, a document at random and then a line of it, without repeats; a split of no more
    lines than `size` gives every line once."""

    def __init__(self, docs: Sequence, size: int, rng: np.random.Generator) -> None:
        sizes = np.array([len(doc.lines) for doc in docs], dtype=np.int64)
        total = int(sizes.sum())
        if total <= size:
            picks = np.arange(total)
        else:  # each line weighs 1 / (documents with lines x its document's lines)
            per_line = np.repeat(1.0 / (np.count_nonzero(sizes) * np.maximum(sizes, 1)), sizes)
            picks = np.sort(rng.choice(total, size=size, replace=False, p=per_line / per_line.sum()))
        doc_of = np.repeat(np.arange(len(docs)), sizes)[picks]
        starts = np.cumsum(sizes) - sizes
        self.doc = doc_of.astype(np.int64)
        self.text = np.array([docs[d].lines[i].text for d, i in zip(doc_of, picks - starts[doc_of], strict=True)],
                             dtype=object)

    def __call__(self, d: int, k: int, rng: np.random.Generator, exclude: str = "") -> list[str]:
        """k pool lines from documents other than d, none equal to `exclude` (repeats only where a small split has
        fewer such lines than k); none if it has none."""
        eligible = np.flatnonzero((self.doc != d) & (self.text != exclude))
        if len(eligible) == 0:
            return []
        picks = rng.choice(eligible, size=k, replace=len(eligible) < k)
        return [str(self.text[i]) for i in picks]


def build_cases(docs: list, *, writer: Callable | None = None, seed: int = 0, n_select10: int = 300,
                n_select100: int = 300, n_writer: int = 300, n_swap: int = 500, context_lines: int = 3) -> dict:
    """The cases every scorer is measured on: {measure: [(context, candidates with the true one first)]}, swaps.

    The distractors of next-line selection come from one pool of POOL_LINES lines (`OtherLines`)."""
    rng = np.random.default_rng(seed)
    others_of = OtherLines(docs, POOL_LINES, rng)
    cases: dict = {}
    for name, k, n in (("select10", 10, n_select10), ("select100", 100, n_select100)):
        cases[name] = []
        for d, i in _positions(docs, rng, n, context_lines):
            context = [line.text for line in docs[d].lines[max(0, i - context_lines) : i]]
            true = docs[d].lines[i].text
            others = others_of(d, k - 1, rng, exclude=true)
            if len(others) == k - 1:
                cases[name].append((context, [true, *others]))
    cases["writer99"] = []
    if writer is not None:
        for d, i in _positions(docs, rng, n_writer, context_lines):
            context = [line.text for line in docs[d].lines[max(0, i - context_lines) : i]]
            true = docs[d].lines[i].text
            fakes = writer(d, 99, rng, exclude=true)
            if fakes:
                cases["writer99"].append((context, [true, *fakes]))
    pairs: list[tuple[list[str], str]] = []
    for d, i in _positions(docs, rng, n_swap, context_lines):
        run = [line.text for line in docs[d].lines[max(0, i - context_lines) : i + 1]]
        if len(run) < 2 or run[0] == run[-1]:
            continue
        swapped = [run[-1], *run[1:-1], run[0]]
        pairs += [(run[:-1], run[-1]), (swapped[:-1], swapped[-1])]
    cases["swap"] = pairs
    return cases


def evaluate_cases(scorers: Mapping, cases: dict, *, deadline: float | None = None, progress: bool = True) -> dict:
    """Every scorer's figures on prepared cases, case by case, so a time cut leaves all of them the same cases."""
    out: dict = {name: {} for name in scorers}
    cut: list[str] = []
    measures = [m for m in MEASURES if cases.get(m)]
    # The measures take turns, case by case: a time cut leaves each of them its share, not the last one nothing.
    longest = max((len(cases[m]) for m in measures), default=0)
    queue = [(m, cases[m][i]) for i in range(longest) for m in measures if i < len(cases[m])]
    ranks: dict[str, dict[str, list[int]]] = {m: {name: [] for name in scorers} for m in measures}
    for measure, (context, candidates) in progress_bar(queue, desc="cases", disable=not progress, leave=False):
        if deadline is not None and time.monotonic() > deadline:
            break
        for name, scorer in scorers.items():
            ranks[measure][name].append(true_rank(scorer.score(context, candidates)))
    for measure in measures:
        if len(ranks[measure][next(iter(scorers))]) < len(cases[measure]):
            cut.append(measure)
        for name in scorers:
            out[name][measure] = {**selection_metrics(ranks[measure][name]), "ranks": ranks[measure][name]}
    pairs = cases.get("swap") or []
    # Swapped windows are scored in pieces (SWAP_PIECE): scored at once, 300 of them cost an editor ~18 s on a
    # 2-core AVX2 CPU, and begun just before the deadline they ran a 10-minute build 18 s over its budget.
    swap_scores: dict[str, list[np.ndarray]] = {name: [] for name in scorers}
    done = 0
    while done < len(pairs) and (deadline is None or time.monotonic() <= deadline):
        piece = pairs[done : done + SWAP_PIECE]
        for name, scorer in scorers.items():
            swap_scores[name].append(scorer.score_pairs(piece))
        done += len(piece)
    if done < len(pairs):
        cut.append("swap")
    if done:
        for name in scorers:
            scores = np.concatenate(swap_scores[name])
            pos, neg = scores[0::2], scores[1::2]
            wins = (pos > neg).astype(np.float64)
            out[name]["swap"] = {
                "accuracy": float(wins.mean()),
                "accuracy_se": standard_error(wins),
                "auc": roc_auc(np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]),
                "n": len(pos),
                "wins": wins.astype(int).tolist(),
            }
    for name in scorers:
        if cut:
            out[name]["cut_short"] = cut
    return out


def evaluate_documents(
    scorers,
    docs: list,
    *,
    writer: Callable | None = None,
    seed: int = 0,
    n_select10: int = 300,
    n_select100: int = 300,
    n_writer: int = 300,
    n_swap: int = 500,
    context_lines: int = 3,
    time_limit_s: float | None = None,
    progress: bool = True,
) -> dict:
    """Every scorer on the same cases of held-out `docs`: {"scorers": {name: figures}, "documents", "seconds"}.

    `scorers` is one scorer (named "model") or {name: scorer}; a scorer has `score(context, candidates)` and
    `score_pairs(pairs)`. `writer(d, k, rng, exclude)` gives writer lines for a case in document d (WriterPools).
    """
    started = time.monotonic()
    docs = [doc for doc in docs if len(doc.lines) >= 2]
    if len(docs) < 2:
        raise ValueError("evaluation needs at least 2 held-out documents with 2 or more lines")
    if not isinstance(scorers, Mapping):
        scorers = {"model": scorers}
    for scorer in scorers.values():
        remember_readings(scorer)
    cases = build_cases(docs, writer=writer, seed=seed, n_select10=n_select10, n_select100=n_select100,
                        n_writer=n_writer, n_swap=n_swap, context_lines=context_lines)
    deadline = None if time_limit_s is None else started + time_limit_s
    out: dict = {"documents": len(docs), "context_lines": context_lines, "seed": seed, "scorers": {}}
    out["scorers"] = evaluate_cases(scorers, cases, deadline=deadline, progress=progress)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out
