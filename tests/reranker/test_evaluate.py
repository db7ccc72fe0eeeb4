"""Evaluation measures against hand-computed values on toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corpus.documents import Document, Line
from reranker.evaluate import evaluate_documents, format_table, roc_auc, selection_metrics, true_rank


def test_roc_auc_hand_values():
    # Positives 0.35 and 0.8 vs negatives 0.1 and 0.4: 3 of the 4 pairs are ordered right.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1.0, 1.0], [1, 0]) == pytest.approx(0.5)  # a tie is half right
    assert roc_auc([3.0, 2.0, 1.0], [1, 0, 0]) == pytest.approx(1.0)
    assert roc_auc([3.0, 2.0, 1.0], [0, 1, 1]) == pytest.approx(0.0)
    assert math.isnan(roc_auc([1.0, 2.0], [1, 1]))


def test_true_rank_counts_ties_against_the_true_line():
    assert true_rank([0.5, 0.9, 0.5, 0.1]) == 3
    assert true_rank([0.9, 0.5, 0.1]) == 1
    assert true_rank([1.0, 1.0, 1.0]) == 3
    assert true_rank([0.1, 0.9, 0.2], true_index=2) == 2


def test_selection_metrics_hand_values():
    m = selection_metrics([1, 2, 4])
    assert m["r@1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert m["n"] == 3


def _docs(n_docs: int = 6, n_lines: int = 12) -> list[Document]:
    return [Document(f"doc{d}", [Line(f"d{d} l{i}") for i in range(n_lines)]) for d in range(n_docs)]


def _parse(text: str) -> tuple[int, int]:
    d, i = text.split()
    return int(d[1:]), int(i[1:])


class Oracle:
    """Scores 1 exactly when the candidate is the line after the context's last line, else 0 (or the reverse)."""

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = sign

    def score(self, context, candidates):
        last = _parse(context[-1])
        return np.array([self.sign * float(_parse(c) == (last[0], last[1] + 1)) for c in candidates], np.float32)

    def score_pairs(self, pairs):
        return np.concatenate([self.score(ctx, [c]) for ctx, c in pairs])


class Constant(Oracle):
    def score(self, context, candidates):
        return np.zeros(len(candidates), np.float32)


class FakeMarkov:
    def sample(self, n, rng):
        return [f"d99 l{i}" for i in range(n)]


def test_perfect_scorer_gets_full_marks():
    m = evaluate_documents(Oracle(), _docs(), n_swap=30, n_select10=20, n_select100=10, n_markov=10,
                           markov=FakeMarkov(), progress=False)
    assert m["swap"] == {"accuracy": 1.0, "auc": 1.0, "n": 30}
    for key in ("select10", "select100", "markov99"):
        assert m[key]["r@1"] == 1.0 and m[key]["mrr"] == 1.0, key
    assert m["select10"]["n"] == 20 and m["select100"]["n"] == 10 and m["markov99"]["n"] == 10
    assert "swap-pair accuracy" in format_table(m)


def test_constant_scorer_gets_no_credit_and_reversed_scorer_ranks_last():
    m = evaluate_documents(Constant(), _docs(), n_swap=20, n_select10=10, n_select100=5, progress=False)
    assert m["swap"]["accuracy"] == 0.0 and m["swap"]["auc"] == pytest.approx(0.5)
    assert m["select10"]["r@1"] == 0.0 and m["select10"]["mrr"] == pytest.approx(1 / 10)
    assert m["select100"]["mrr"] == pytest.approx(1 / 100)
    r = evaluate_documents(Oracle(sign=-1.0), _docs(), n_swap=20, n_select10=10, n_select100=5, progress=False)
    assert r["swap"]["accuracy"] == 0.0 and r["swap"]["auc"] == 0.0
    assert r["select10"]["mrr"] == pytest.approx(1 / 10)


def test_too_few_documents_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 held-out documents"):
        evaluate_documents(Oracle(), _docs(n_docs=1), progress=False)
