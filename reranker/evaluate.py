"""How good is the editor: swap-pair accuracy and AUC, next-line R@1/MRR among 10 and 100, and vs Markov lines.

All measures run on held-out documents (the "test" split of corpus.windows.split_of):
- swap pairs: for a run of k+1 lines, the true (context, next line) against the same lines with the first
  and last exchanged (the training "swap" negative); accuracy = how often the true pair scores higher.
- next-line selection: the true next line among 9 or 99 lines from other documents (R@1, MRR), the standard
  response-selection measure; ties count against the true line, so a constant scorer gets R@1 = 0.
- Markov: the true next line among 99 Markov-generated candidates (R@1, MRR).
- optionally the zero-shot MiniLM bi-encoder (cosine of mean-pooled embeddings) on the same 1-of-10/100 sets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm


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
    """1-based rank of the true candidate; every other candidate scoring >= it ranks above it (pessimistic ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    others = np.delete(scores, true_index)
    return 1 + int((others >= scores[true_index]).sum())


def selection_metrics(ranks: Sequence[int]) -> dict:
    """R@1 and MRR from the true candidates' ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        return {"r@1": float("nan"), "mrr": float("nan"), "n": 0}
    return {"r@1": float((ranks == 1).mean()), "mrr": float((1.0 / ranks).mean()), "n": len(ranks)}


def _positions(docs: list, rng: np.random.Generator, n: int, context_lines: int) -> list[tuple[int, int]]:
    """Up to n (document, line) positions that have at least 2 earlier lines, spread over documents."""
    eligible = [(d, i) for d, doc in enumerate(docs) for i in range(2, len(doc.lines))]
    if not eligible:
        return []
    picks = rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)
    return [eligible[p] for p in picks]


def _context(doc, i: int, context_lines: int) -> list[str]:
    return [line.text for line in doc.lines[max(0, i - context_lines) : i]]


def _other_lines(docs: list, d: int, k: int, rng: np.random.Generator, true_text: str) -> list[str]:
    """k lines drawn from documents other than d, none equal to the true line."""
    out: list[str] = []
    while len(out) < k:
        e = int(rng.integers(len(docs)))
        if e == d or not docs[e].lines:
            continue
        text = docs[e].lines[int(rng.integers(len(docs[e].lines)))].text
        if text != true_text:
            out.append(text)
    return out


class BiEncoder:
    """The zero-shot baseline: all-MiniLM-L6-v2 mean-pooled embeddings, cosine of context vs candidate."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from reranker.model import default_backbone

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(default_backbone(), local_files_only=True)
        self.model = AutoModel.from_pretrained(default_backbone(), local_files_only=True).eval()

    def embed(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy()

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        vecs = self.embed([" ".join(context), *candidates])
        return vecs[1:] @ vecs[0]


def evaluate_documents(
    reranker,
    docs: list,
    *,
    seed: int = 0,
    n_swap: int = 1000,
    n_select10: int = 300,
    n_select100: int = 100,
    n_markov: int = 100,
    context_lines: int = 5,
    markov=None,
    baseline: bool = False,
    time_limit_s: float | None = None,
    progress: bool = True,
) -> dict:
    """All measures on held-out `docs` (corpus Documents); sections past `time_limit_s` are skipped and marked."""
    started = time.monotonic()
    docs = [doc for doc in docs if len(doc.lines) >= 3]
    if len(docs) < 2:
        raise ValueError("evaluation needs at least 2 held-out documents with 3 or more lines")
    rng = np.random.default_rng(seed)
    out: dict = {"documents": len(docs)}
    skipped: list[str] = []

    def over_time() -> bool:
        return time_limit_s is not None and time.monotonic() - started > time_limit_s

    # Swap pairs: (context, true next) vs (same lines, first and last exchanged), scored in one batched call.
    pairs: list[tuple[list[str], str]] = []
    for d, i in _positions(docs, rng, n_swap, context_lines):
        run = [line.text for line in docs[d].lines[max(0, i - context_lines) : i + 1]]
        if run[0] == run[-1]:
            continue
        pairs.append((run[:-1], run[-1]))
        swapped = [run[-1], *run[1:-1], run[0]]
        pairs.append((swapped[:-1], swapped[-1]))
    scores = reranker.score_pairs(pairs)
    pos, neg = scores[0::2], scores[1::2]
    out["swap"] = {
        "accuracy": float((pos > neg).mean()),
        "auc": roc_auc(np.concatenate([pos, neg]), np.r_[np.ones(len(pos)), np.zeros(len(neg))]),
        "n": len(pos),
    }

    bi = BiEncoder() if baseline else None
    for name, k, n in (("select10", 10, n_select10), ("select100", 100, n_select100)):
        ranks, bi_ranks = [], []
        positions = _positions(docs, rng, n, context_lines)
        for d, i in tqdm(positions, desc=name, disable=not progress, leave=False):
            if over_time():
                skipped.append(name)
                break
            context = _context(docs[d], i, context_lines)
            true = docs[d].lines[i].text
            candidates = [true, *_other_lines(docs, d, k - 1, rng, true)]
            ranks.append(true_rank(reranker.score(context, candidates)))
            if bi is not None:
                bi_ranks.append(true_rank(bi.score(context, candidates)))
        out[name] = selection_metrics(ranks)
        if bi is not None:
            out[f"{name}_biencoder"] = selection_metrics(bi_ranks)

    if markov is not None:
        ranks = []
        for d, i in tqdm(_positions(docs, rng, n_markov, context_lines), desc="markov", disable=not progress,
                         leave=False):
            if over_time():
                skipped.append("markov")
                break
            true = docs[d].lines[i].text
            fakes = [c for c in markov.sample(99, rng) if c != true][:99]
            if not fakes:
                continue
            ranks.append(true_rank(reranker.score(_context(docs[d], i, context_lines), [true, *fakes])))
        out["markov99"] = selection_metrics(ranks)
    if skipped:
        out["cut_short_by_time_limit"] = sorted(set(skipped))
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def format_table(metrics: dict) -> str:
    """A plain-text table of the measures."""
    rows = [("measure", "value", "n")]
    if "swap" in metrics:
        s = metrics["swap"]
        rows += [("swap-pair accuracy", f"{s['accuracy']:.3f}", str(s["n"])), ("swap ROC AUC", f"{s['auc']:.3f}", str(s["n"]))]
    labels = {"select10": "1 of 10", "select100": "1 of 100", "markov99": "1 of 100 (99 Markov)"}
    for key, label in labels.items():
        for suffix, who in (("", ""), ("_biencoder", " [bi-encoder baseline]")):
            m = metrics.get(key + suffix)
            if m:
                rows += [(f"R@1 {label}{who}", f"{m['r@1']:.3f}", str(m["n"])), (f"MRR {label}{who}", f"{m['mrr']:.3f}", str(m["n"]))]
    for key in ("test_samples",):
        m = metrics.get(key)
        if m:
            rows += [("prepared test AUC", f"{m['auc']:.3f}", str(m["n"])), ("prepared test accuracy", f"{m['accuracy']:.3f}", str(m["n"]))]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if metrics.get("cut_short_by_time_limit"):
        lines.append(f"(cut short by the time limit: {', '.join(metrics['cut_short_by_time_limit'])})")
    return "\n".join(lines)


def model_card(*, backbone: str, data: str, steps: int, metrics: dict, extra: dict | None = None) -> str:
    """The README.md saved with a trained reranker."""
    lines = [
        "# riposte reranker",
        "",
        "A cross-encoder scoring `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]` (one logit: does the candidate",
        "follow the context?). Load with `from reranker import Reranker; Reranker.load(dir)`.",
        "",
        f"- **Backbone:** {backbone}",
        f"- **Data:** {data}",
        f"- **Optimizer steps:** {steps}",
    ]
    for key, value in (extra or {}).items():
        lines.append(f"- **{key}:** {value}")
    lines += ["", "## Evaluation (held-out documents)", "", "```", format_table(metrics), "```", ""]
    return "\n".join(lines)
