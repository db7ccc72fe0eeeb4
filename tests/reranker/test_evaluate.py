"""Evaluation measures against hand-computed values on toy cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corpus.documents import Document, Line
from reranker.card import format_table, verdict
from reranker.evaluate import (
    OtherLines,
    TfidfScorer,
    WriterPools,
    evaluate_documents,
    roc_auc,
    seeded_writer_lines,
    selection_metrics,
    standard_error,
    true_rank,
)


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
    assert true_rank([float("nan"), 0.1, 0.2]) == 3  # a failed score never ranks the true line first
    assert true_rank([0.5, float("nan"), 0.2]) == 1


def test_selection_metrics_hand_values():
    m = selection_metrics([1, 2, 4])
    assert m["r@1"] == pytest.approx(1 / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25) / 3)
    assert m["n"] == 3
    # hits 1, 0, 0: sample sd sqrt(1/3), over sqrt(3)
    assert m["r@1_se"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert standard_error(np.array([2.0, 4.0])) == pytest.approx(1.0)
    assert standard_error(np.array([5.0])) == 0.0


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


def fake_writer(d, k, rng, exclude=""):
    return [f"d99 l{i}" for i in range(k)]


def test_perfect_scorer_gets_full_marks_on_every_measure():
    m = evaluate_documents(Oracle(), _docs(), writer=fake_writer, n_swap=30, n_select10=20, n_select100=10,
                           n_writer=10, progress=False)
    s = m["scorers"]["model"]
    assert s["swap"]["accuracy"] == 1.0 and s["swap"]["auc"] == 1.0 and s["swap"]["n"] == 30
    for key in ("select10", "select100", "writer99"):
        assert s[key]["r@1"] == 1.0 and s[key]["mrr"] == 1.0 and s[key]["r@1_se"] == 0.0, key
    assert s["select10"]["n"] == 20 and s["select100"]["n"] == 10 and s["writer99"]["n"] == 10
    table = format_table(m)
    assert "R@1 vs 99 writer lines" in table and "1.000 ± 0.000" in table and "swap accuracy" in table


def test_scorers_are_measured_on_the_same_cases_side_by_side():
    m = evaluate_documents({"oracle": Oracle(), "constant": Constant()}, _docs(), n_swap=20, n_select10=10,
                           n_select100=5, progress=False)
    assert list(m["scorers"]) == ["oracle", "constant"]
    c = m["scorers"]["constant"]
    assert c["swap"]["accuracy"] == 0.0 and c["swap"]["auc"] == pytest.approx(0.5)
    assert c["select10"]["r@1"] == 0.0 and c["select10"]["mrr"] == pytest.approx(1 / 10)
    assert c["select100"]["mrr"] == pytest.approx(1 / 100)
    assert "writer99" not in c  # no writer given
    header = format_table(m).splitlines()[0].split()
    assert header[1:3] == ["oracle", "constant"]
    text = verdict(m, model="oracle", baseline="constant")
    assert "R@1 of 10: oracle 1.000 beats the constant's 0.000" in text
    r = evaluate_documents(Oracle(sign=-1.0), _docs(), n_swap=20, n_select10=10, n_select100=5, progress=False)
    assert r["scorers"]["model"]["swap"]["accuracy"] == 0.0 and r["scorers"]["model"]["swap"]["auc"] == 0.0


def test_a_deadline_cuts_the_swaps_between_pieces_and_reports_the_pairs_every_scorer_read(monkeypatch):
    from types import SimpleNamespace

    import reranker.evaluate as evaluate

    clock = [0.0]
    monkeypatch.setattr(evaluate, "time", SimpleNamespace(monotonic=lambda: clock[0]))  # this module's clock only

    class Slow(Oracle):
        """Each call to score_pairs takes 10 s of the fake clock."""

        def score_pairs(self, pairs):
            clock[0] += 10.0
            return super().score_pairs(pairs)

    docs = _docs(n_docs=20, n_lines=20)
    full = evaluate_documents(Oracle(), docs, n_swap=100, n_select10=0, n_select100=0, progress=False)
    assert full["scorers"]["model"]["swap"]["n"] == 100 > evaluate.SWAP_PIECE  # more than two pieces of swaps
    # Two scorers, 20 s a piece: past the 25-s deadline after the second piece, so two pieces are read, not all.
    m = evaluate_documents({"slow": Slow(), "oracle": Slow(sign=-1.0)}, docs, n_swap=100, n_select10=0,
                           n_select100=0, time_limit_s=25.0, progress=False)
    for name, accuracy in (("slow", 1.0), ("oracle", 0.0)):
        s = m["scorers"][name]
        assert s["swap"]["n"] == 2 * (evaluate.SWAP_PIECE // 2) == len(s["swap"]["wins"])  # two pieces' swaps
        assert s["swap"]["accuracy"] == accuracy and "swap" in s["cut_short"]
    assert clock[0] == 40.0  # nothing scored after the deadline
    late = evaluate_documents(Slow(), docs, n_swap=100, n_select10=0, n_select100=0, time_limit_s=-1.0,
                              progress=False)
    assert "swap" not in late["scorers"]["model"] and late["scorers"]["model"]["cut_short"] == ["swap"]


def test_cases_are_reproducible_under_a_seed():
    class Recorder(Constant):
        def __init__(self):
            self.seen = []

        def score(self, context, candidates):
            self.seen.append((tuple(context), tuple(candidates)))
            return super().score(context, candidates)

    a, b, c = Recorder(), Recorder(), Recorder()
    for rec, seed in ((a, 3), (b, 3), (c, 4)):
        evaluate_documents(rec, _docs(), n_swap=5, n_select10=8, n_select100=4, seed=seed, progress=False)
    assert a.seen == b.seen and a.seen != c.seen
    assert all(len(ctx) == 3 for ctx, _ in a.seen)  # three context lines, as the figures use


def test_distractors_come_from_one_pool_of_other_documents_lines():
    docs = _docs(n_docs=30, n_lines=40)  # 1,200 lines, a pool of 200
    pool = OtherLines(docs, 200, np.random.default_rng(0))
    assert len(set(pool.text)) == 200
    rng = np.random.default_rng(1)
    drawn: set[str] = set()
    for d in range(30):
        others = pool(d, 99, rng, exclude="d5 l3")
        assert len(others) == 99 and len(set(others)) == 99  # without repeats when the pool has enough
        assert all(_parse(t)[0] != d for t in others) and "d5 l3" not in others
        drawn.update(others)
    assert drawn <= set(pool.text)  # 2,970 draws read at most the pool's 200 lines
    again = OtherLines(docs, 200, np.random.default_rng(0))
    assert list(again.text) == list(pool.text) and list(again.doc) == list(pool.doc)


def test_a_small_split_pools_every_line_and_repeats_only_when_it_must():
    docs = _docs(n_docs=3, n_lines=5)
    pool = OtherLines(docs, 2000, np.random.default_rng(0))
    assert sorted(pool.text) == sorted(line.text for doc in docs for line in doc.lines)
    others = pool(0, 20, np.random.default_rng(0))  # 10 lines in the other documents: 20 draws repeat some
    assert len(others) == 20 and set(others) <= {f"d{d} l{i}" for d in (1, 2) for i in range(5)}
    assert OtherLines(docs[:1], 10, np.random.default_rng(0))(0, 5, np.random.default_rng(0)) == []


def test_an_evaluation_draws_no_more_distinct_distractors_than_its_pool_whatever_the_case_count():
    class Reader(Constant):
        def __init__(self):
            self.read: set[str] = set()

        def score(self, context, candidates):
            self.read.update(candidates[1:])  # the distractors; the true line is first
            return super().score(context, candidates)

    few, many = Reader(), Reader()
    docs = _docs(n_docs=40, n_lines=60)  # 2,400 lines
    evaluate_documents(few, docs, n_swap=2, n_select10=0, n_select100=10, progress=False)
    evaluate_documents(many, docs, n_swap=2, n_select10=0, n_select100=200, progress=False)
    assert len(few.read) > 500  # 10 cases draw ~990 lines ...
    assert 1900 < len(many.read) <= 2000  # ... and 200 cases (19,800 draws) no more than the pool holds


def test_too_few_documents_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 held-out documents"):
        evaluate_documents(Oracle(), _docs(n_docs=1), progress=False)


def test_tfidf_baseline_prefers_shared_words():
    tfidf = TfidfScorer(["the cat sat", "a dog ran", "pizza tonight", "the cat ran"])
    scores = tfidf.score(["do you like the cat"], ["the cat sat", "pizza tonight"])
    assert scores[0] > 0 and scores[1] == 0.0
    assert tfidf.score(["pizza tonight"], ["pizza tonight"])[0] == pytest.approx(1.0, abs=1e-6)


def test_leave_out_writers_never_saw_the_document_they_judge():
    # Each document has words of its own: a writer that saw document d could only show that by using them.
    rng = np.random.default_rng(1)
    docs = [Document(f"film{d}", [Line(" ".join(rng.choice([f"w{d}a", f"w{d}b", "shared", "also", "then"], 6)))
                                  for _ in range(40)]) for d in range(4)]
    pools = WriterPools.leave_out(docs, folds=4, pool_size=50, seed=0)
    for d in range(4):
        lines = pools(d, 20, rng)
        assert lines
        assert not any(f"w{d}" in line for line in lines), d
    with pytest.raises(ValueError, match="at least one line"):
        WriterPools([[]], [0])


def test_verdict_uses_the_paired_error_of_shared_cases():
    a_ranks = [1] * 60 + [2] * 40
    b_ranks = [1] * 50 + [2] * 50  # b's hits are a subset of a's: a is ahead on 10 cases and behind on none
    metrics = {"scorers": {"model": {"select10": {**selection_metrics(a_ranks), "ranks": a_ranks}},
                           "bi-encoder": {"select10": {**selection_metrics(b_ranks), "ranks": b_ranks}}}}
    assert "model 0.600 beats the bi-encoder's 0.500" in verdict(metrics)
    # Without per-case ranks (figures from elsewhere) the unpaired error is all that is known: within noise.
    for s in metrics["scorers"].values():
        del s["select10"]["ranks"]
    assert "ties (within 2 SE)" in verdict(metrics)


def test_model_card_metadata_is_yaml_the_hub_reads_with_the_models_figures():
    import yaml

    from reranker.card import model_card

    metrics = {"data": "tiny, test split", "scorers": {
        "model": {"select10": {"r@1": 0.5, "r@1_se": 0.1, "mrr": 0.625, "mrr_se": 0.1, "n": 4},
                  "swap": {"accuracy": 0.75, "accuracy_se": 0.2, "n": 4}},
        "bi-encoder": {"select10": {"r@1": 0.25, "r@1_se": 0.1, "mrr": 0.5, "mrr_se": 0.1, "n": 4}}}}
    card = model_card(title="t", summary="s", parts={"a": 1}, metrics=metrics,
                      metadata={"base_model": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0",
                                "pipeline_tag": "text-ranking", "datasets": ["chitchat-dataset"]})
    assert card.startswith("---\n")
    head = yaml.safe_load(card.split("---\n")[1])
    assert head["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and head["pipeline_tag"] == "text-ranking"
    assert head["license"] == "apache-2.0" and head["datasets"] == ["chitchat-dataset"]
    results = head["model-index"][0]["results"][0]
    assert results["dataset"]["name"] == "tiny, test split"
    assert {(m["name"], m["value"]) for m in results["metrics"]} == {
        ("R@1 of 10", 0.5), ("MRR of 10", 0.625), ("swap accuracy", 0.75)}  # the model's figures only
    assert "# t" in card and not model_card(title="t", summary="s", parts={}, metrics=metrics).startswith("---")


def test_seeded_writer_lines_begin_at_the_start_words_pass_the_filters_and_skip_unknown_starts():
    from markov import MarkovConfig, MarkovModel

    corpus = ["i like pizza with cheese.", "we like pizza a lot.", "you like dogs and cats.", "dogs like to run.",
              "cats like to sleep all day.", "see http://example.com now please."]
    writer = MarkovModel.build([(line, 1.0) for line in corpus], MarkovConfig(order=1))
    out = seeded_writer_lines(writer, ["pizza", "dogs", "see", "zebra"], 50, seed=0)
    assert out and len(set(out)) == len(out)
    # "zebra" is unknown and "see" begins only a line of the corpus itself (a copy, never said): both skipped
    assert {line.split()[0] for line in out} == {"pizza", "dogs"}
    assert "dogs and cats like pizza a lot." in out
    assert seeded_writer_lines(writer, ["pizza", "dogs", "see", "zebra"], 50, seed=0) == out  # seeded
    # the engine's line rules apply: a line with a URL loses it
    urls = MarkovModel.build([("we look at http://example.com please.", 1.0), ("i sat at home.", 1.0)],
                             MarkovConfig(order=1))
    assert "look at please." in seeded_writer_lines(urls, ["look"], 10, seed=0)
    assert seeded_writer_lines(writer, [], 10) == [] and len(seeded_writer_lines(writer, ["dogs"], 2)) <= 2
