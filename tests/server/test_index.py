"""The reply index in the turn: hits join the live candidates under the same rules; load_engine maps each persona's
index, and a stale or damaged one leaves that persona's turns on live candidates."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from corpus.text import LineRules
from reranker.index import ReplyIndex
from server.engine import Engine, EngineConfig, words
from server.models import build_index, load_engine
from tests.server.conftest import ClockedScorer, FakeClock, FakeIndex, OverlapScorer, tiny_lines

HISTORY = ["hello there", "do you like pizza?"]
INDEX_LINES = ["do you like pizza?", "pizza pizza pizza with my pizza friends", "i love pizza on sundays.",
               "old movies and pizza.", "coffee"]


def test_index_hits_join_the_turn_pass_its_rules_and_are_counted(tiny_markov):
    index = FakeIndex(INDEX_LINES)
    # Plain live lines only (context_share 0): a live line written around "pizza" could pack the context's words
    # as tightly as the index line, and this test is about the index's hits, not the writer.
    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=128, index_k=4, context_share=0),
                 indexes={"default": index})
    try:
        r = eng.reply(HISTORY, seed=1, budget_ms=5000, n_alternatives=1000)
        assert index.calls == [(HISTORY, 4)] and index.last_lines == [EngineConfig.index_last_line]
        said = [r.reply] + [a.text for a in r.alternatives]
        assert "do you like pizza?" not in said  # the echo rule holds for index lines too
        assert "coffee" not in said  # past k
        s = r.stats["sources"]
        assert s["index"] == 3 and r.stats["index"]["hits"] == 4  # 4 found, the echo refused
        assert s["index_read"] == 3 and s["live_read"] == r.stats["filtered"] - 3  # the editor read them all
        assert set(INDEX_LINES[1:4]) <= set(said)
        # The overlap scorer likes the pizza-packed index line best, and the stats say where the reply came from.
        assert r.reply == "pizza pizza pizza with my pizza friends" and r.stats["source"] == "index"
    finally:
        eng.close()


def test_a_failing_index_leaves_the_turn_its_live_candidates(tiny_markov, caplog):
    class Broken:
        def search(self, context, k=256, last_line=0.0):
            raise RuntimeError("mapped file went away")

    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=64), indexes={"default": Broken()})
    try:
        r = eng.reply(HISTORY, seed=1)
        assert r.reply and r.stats["source"] == "live" and r.stats["index"]["error"] == "RuntimeError"
        assert "mapped file went away" in caplog.text
    finally:
        eng.close()


def test_without_an_index_for_the_persona_the_turn_is_live(tiny_markov):
    eng = Engine({"default": tiny_markov, "pirate": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=64),
                 indexes={"default": FakeIndex(INDEX_LINES)})
    try:
        r = eng.reply(HISTORY, seed=1, persona="pirate")
        assert r.stats["sources"]["index"] == 0 and r.stats["source"] == "live" and "index" not in r.stats
    finally:
        eng.close()


def test_when_the_editor_reads_nothing_an_index_line_can_still_win_by_the_first_stage(tiny_markov):
    clock = FakeClock()

    class Words:
        def score(self, context, candidates, words=None):
            ctx = {w for line in context for w in line.lower().split()}
            return np.asarray([len(ctx.intersection(w)) + 0.1 * w.count("pizza") for w in words], np.float32)

    eng = Engine({"default": tiny_markov}, ClockedScorer(clock, per_candidate=10.0), EngineConfig(n_candidates=64),
                 first_stage=Words(), indexes={"default": FakeIndex(INDEX_LINES)}, clock=clock)
    try:
        r = eng.reply(["pizza"], seed=1, budget_ms=100)
        assert r.stats["scored"] == 0 and r.stats["timed_out"]
        assert r.reply == "pizza pizza pizza with my pizza friends" and r.stats["source"] == "index"
    finally:
        eng.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_markov):
    """A model dir with a writer and a real (tiny, distilled) first stage, and no editor."""
    from reranker.biencoder import BiEncoder
    from reranker.first_stage import DistillConfig, distill
    from tests.reranker.conftest import write_tiny_bert

    root = tmp_path_factory.mktemp("indexed")
    tiny_markov.save(root / "markov")
    bi = BiEncoder.from_backbone(write_tiny_bert(root.parent / "tiny-bert-index"), dtype=torch.float32)
    vecs, _ = bi.embed(tiny_lines())
    stage, _ = distill(bi, tiny_lines(), vecs, weights=(1.0, 0.0), config=DistillConfig(epochs=2, dim=16))
    stage.save(root / "first_stage")
    return root


def test_riposte_index_builds_grows_and_the_engine_searches_it(tmp_path, model_dir):
    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    report = build_index(root, entries=300, progress=False)
    assert report["added"] > 0 and report["dropped"] == 0  # no editor: no judge, every line kept
    grown = build_index(root, entries=100, add=True, progress=False)
    eng = load_engine(root, require_reranker=False)
    try:
        assert len(eng.indexes["default"]) == report["added"] + grown["added"]
        r = eng.reply(["do you like dogs?"], seed=2)
        assert r.stats["index"]["hits"] > 0 and r.stats["sources"]["index"] > 0
        assert all(words(t) for t in eng.indexes["default"].search(["dogs"], 5).texts)
    finally:
        eng.close()


def test_the_search_weighs_the_last_line_as_asked(tmp_path, model_dir):
    from reranker.runtime import unit

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    build_index(root, entries=300, progress=False)
    eng = load_engine(root, require_reranker=False)
    try:
        index, stage = eng.indexes["default"], eng.indexes["default"].first_stage
        context = ["do you like old movies?", "i really need coffee on sundays."]
        joined, last = stage.context_vectors(context)
        np.testing.assert_allclose(index.query_vector(context), joined, atol=1e-6)  # the first stage's (1, 0)
        np.testing.assert_allclose(index.query_vector(context, 2.0), joined + 2.0 * last, atol=1e-6)
        # with the last line weighed far above the rest, the hits are the entries nearest the last line alone
        far = index.search(context, 5, last_line=1e4)
        nearest = index.search_vector(np.asarray(last, np.float32), 5)[0]
        assert set(far.rows) == set(nearest)  # as sets: entries with the same words tie
        assert set(index.search(context, 5).rows) == set(index.search_vector(joined, 5)[0])
        assert float(unit(index.query_vector(context, 1e4)[None])[0] @ last) > 0.999
    finally:
        eng.close()
    with pytest.raises(ValueError, match="index_last_line"):
        EngineConfig(index_last_line=-1.0)


def test_a_stale_or_damaged_index_is_skipped_with_a_warning(tmp_path, model_dir, caplog, tiny_markov):
    from markov import MarkovConfig, MarkovModel

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    build_index(root, entries=200, progress=False)
    data = root / "index" / "default" / "lines.bin"
    data.write_bytes(data.read_bytes()[::-1])  # same size, other bytes
    with caplog.at_level(logging.WARNING):
        eng = load_engine(root, require_reranker=False)
    try:
        assert "default" not in eng.indexes and "damaged" in caplog.text
        assert eng.reply(["do you like dogs?"], seed=2).reply  # live candidates still answer
    finally:
        eng.close()
    build_index(root, entries=200, progress=False)  # rebuilt whole
    shutil.rmtree(root / "markov")
    MarkovModel.build([(line, 1.0) for line in tiny_lines()[::2]], MarkovConfig(order=2)).save(root / "markov")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        eng = load_engine(root, require_reranker=False)
    try:
        assert "default" not in eng.indexes and "another writer" in caplog.text
    finally:
        eng.close()


def test_riposte_index_cli_reports_and_refuses_bad_input(tmp_path, model_dir, capsys):
    from server.__main__ import main

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    assert main(["index", "--model", str(root), "--entries", "150"]) == 0
    assert '"added"' in capsys.readouterr().out
    assert main(["index", "--model", str(root), "--persona", "nobody"]) == 2
    assert "no persona 'nobody'" in capsys.readouterr().err
    assert main(["index", "--model", str(root), "--entries", "0"]) == 2
    shutil.rmtree(root / "first_stage")
    assert main(["index", "--model", str(root)]) == 2
    assert "no first stage" in capsys.readouterr().err


def test_a_group_chats_default_persona_shares_the_index_of_all(tmp_path, model_dir, tiny_markov):
    root = tmp_path / "group"
    tiny_markov.save(root / "markov" / "all")
    tiny_markov.save(root / "markov" / "ross")
    shutil.copytree(model_dir / "first_stage", root / "first_stage")
    build_index(root, "all", entries=100, progress=False)
    eng = load_engine(root, require_reranker=False)
    try:
        assert eng.indexes["default"] is eng.indexes["all"] and "ross" not in eng.indexes
        assert eng.reply(["do you like dogs?"], seed=1).stats["index"]["hits"] > 0
    finally:
        eng.close()


def test_the_first_run_indexes_what_time_it_has_and_never_fails_the_start(tmp_path, model_dir, monkeypatch, caplog):
    import server.models as models

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    status = models.BuildStatus()
    models.first_run_index(root, 0.5, status, progress=False, rules=LineRules(max_words=4))
    assert (root / "index" / "default" / "config.json").is_file() and status.done == status.total == 1
    index = ReplyIndex.load(root / "index" / "default")
    assert len(index) and all(len(words(t)) <= 4 for t in index.lines_of(np.arange(len(index))))  # the rules given
    models.first_run_index(root, 0.5, status, progress=False)  # there is one already: nothing to do
    assert status.total == 1
    shutil.rmtree(root / "index")

    def broken(*args, **kwargs):
        raise RuntimeError("usearch exploded")

    monkeypatch.setattr(models, "build_index", broken)
    with caplog.at_level(logging.WARNING):
        models.first_run_index(root, 0.5, status, progress=False)  # logged, not raised
    assert "no reply index in this first run" in caplog.text and status.done == status.total == 2
    shutil.rmtree(root / "first_stage")
    models.first_run_index(root, 0.5, status, progress=False)  # no first stage: no index, no stage
    assert status.total == 2 and not (root / "index" / "default").exists()


class KeptIndex(FakeIndex):
    """A fake index whose entries carry kept readings: one column, the score the fake editor gives the entry."""

    def __init__(self, lines, kept_scores):
        super().__init__(lines)
        self.reads = np.asarray(kept_scores, np.float32)[:, None]

    def search(self, context, k=256, last_line=0.0):
        hits = super().search(context, k, last_line)
        hits.rows = np.arange(len(hits.texts))
        return hits

    def kept(self, rows):
        return self.reads[rows]


class KeptScorer(ClockedScorer):
    """A clocked editor that scores kept readings for free (their one column), or fails to."""

    def __init__(self, clock, per_candidate, fail=False):
        super().__init__(clock, per_candidate)
        self.fail, self.kept_calls = fail, 0

    def score_kept(self, context, kept, candidates):
        self.kept_calls += 1
        if self.fail:
            raise RuntimeError("bad readings")
        assert len(candidates) == len(kept)  # the hits' own texts, row for row
        return np.asarray(kept)[:, 0]


class FirstStageWords:
    """Likes context words, and pizza."""

    def score(self, context, candidates, words=None):
        ctx = {w for line in context for w in line.lower().split()}
        return np.asarray([len(ctx.intersection(w)) + 0.1 * w.count("pizza") for w in words], np.float32)


def test_when_the_editor_reads_nothing_the_index_hits_are_still_scored_from_their_kept_readings(tiny_markov):
    clock = FakeClock()
    editor = KeptScorer(clock, per_candidate=10.0)  # reads nothing in 100 ms
    index = KeptIndex(INDEX_LINES, [9.0, 1.0, 2.0, 5.0, 0.0])
    eng = Engine({"default": tiny_markov}, editor, EngineConfig(n_candidates=64), first_stage=FirstStageWords(),
                 indexes={"default": index}, clock=clock)
    try:
        r = eng.reply(HISTORY, seed=1, budget_ms=100)
        s = r.stats["sources"]
        # The first stage alone would pick the pizza-packed line; the editor's verdict from the kept readings picks
        # the best-scored hit that passed the rules (the echo of the context's own line, kept score 9, did not).
        assert r.reply == "old movies and pizza." and r.stats["source"] == "index" and r.score == 5.0
        assert editor.kept_calls == 1 and not set(INDEX_LINES) & set(editor.read)  # none read in the turn
        assert s["index_kept"] == s["index_read"] == s["index"] == r.stats["scored"] and s["live_read"] == 0
    finally:
        eng.close()


def test_a_turn_that_reaches_its_filter_late_still_passes_every_index_hit(tiny_markov):
    # Under load a turn waits for a thread and reaches its filter past the deadline: the filter then stops at its
    # first chunk of 64. The index's hits come first and cost the editor nothing, so all of them go through.
    clock = FakeClock()
    editor = KeptScorer(clock, per_candidate=10.0)  # reads nothing
    lines = [f"filler line number {i} about nothing" for i in range(300)]
    lines[200] = "i love pizza on sundays."  # the editor's best, by its kept reading, far past the first chunk
    index = KeptIndex(lines, [9.0 if i == 200 else 0.0 for i in range(300)])
    eng = Engine({"default": tiny_markov}, editor, EngineConfig(n_candidates=64, index_k_kept=300),
                 first_stage=FirstStageWords(), indexes={"default": index}, clock=clock)
    try:
        r = eng.reply(HISTORY, seed=1, budget_ms=1000, started=clock() - 0.7)  # 700 of 1000 ms gone: filter's passed
        assert r.stats["filtered"] >= 300 and r.stats["sources"]["index"] == 300
        assert r.reply == "i love pizza on sundays." and r.stats["source"] == "index" and r.score == 9.0
    finally:
        eng.close()


def test_an_index_with_kept_readings_offers_index_k_kept_hits_and_one_without_index_k(tiny_markov):
    clock = FakeClock()
    lines = [f"filler line number {i} about nothing" for i in range(1000)]
    kept, plain = KeptIndex(lines, np.zeros(1000)), FakeIndex(lines)
    config = EngineConfig(n_candidates=64)
    assert (config.index_k, config.index_k_kept) == (256, 512)
    assert (config.index_hits(True), config.index_hits(False)) == (512, 256)  # as the turn asks, below
    assert EngineConfig(index_k=0).index_hits(True) == 0
    for index, k in ((kept, 512), (plain, 64)):  # hits the editor must read are scaled as the live ones (64 here)
        eng = Engine({"default": tiny_markov}, KeptScorer(clock, per_candidate=10.0), config,
                     first_stage=FirstStageWords(), indexes={"default": index}, clock=clock)
        try:
            eng.reply(HISTORY, seed=1, budget_ms=100)
            assert index.calls[-1][1] == k
        finally:
            eng.close()
    eng = Engine({"default": tiny_markov}, KeptScorer(clock, per_candidate=10.0), EngineConfig(index_k=0),
                 first_stage=FirstStageWords(), indexes={"default": kept}, clock=clock)
    try:  # index_k 0 turns the index off, kept readings or not
        calls = len(kept.calls)
        assert eng.reply(HISTORY, seed=1, budget_ms=100).stats["sources"]["index"] == 0 and len(kept.calls) == calls
    finally:
        eng.close()
    with pytest.raises(ValueError, match="index_k_kept"):
        EngineConfig(index_k_kept=-1)


def test_the_filter_deadline_spares_the_first_candidates_it_must_pass():
    from server.engine import Candidates, TextFilter, Turn

    ticks = iter(range(10**6))
    candidates = Candidates([f"dogs are nice {i}" for i in range(1000)],
                            [["dogs", "are", "nice", str(i)] for i in range(1000)], np.zeros(1000))
    kept = TextFilter(EngineConfig()).apply(candidates, [Turn("user", "hi")], stop_at=0, always=300,
                                            clock=lambda: next(ticks))
    # past the deadline from the start: the first 300 pass all the same, then it stops at the next check (n = 319)
    assert kept.texts == candidates.texts[:319]


def test_kept_readings_that_fail_to_score_are_read_by_the_editor_instead(tiny_markov, caplog):
    clock = FakeClock()
    editor = KeptScorer(clock, per_candidate=0.001, fail=True)
    eng = Engine({"default": tiny_markov}, editor, EngineConfig(n_candidates=64, context_share=0),  # plain live lines
                 first_stage=FirstStageWords(), indexes={"default": KeptIndex(INDEX_LINES, [9.0, 1.0, 2.0, 5.0, 0.0])},
                 clock=clock)
    try:
        with caplog.at_level(logging.WARNING):
            r = eng.reply(HISTORY, seed=1, budget_ms=5000)
        s = r.stats["sources"]
        assert "scoring" in caplog.text and "kept readings failed" in caplog.text
        assert s["index_kept"] == 0 and s["index_read"] == s["index"] > 0  # read live instead, every one
        assert set(INDEX_LINES[1:4]) <= set(editor.read)
        assert r.reply == "pizza pizza pizza with my pizza friends"  # the overlap editor's own choice
    finally:
        eng.close()


def test_an_index_built_with_the_editor_keeps_its_readings_and_the_turn_scores_hits_from_them(tmp_path, model_dir,
                                                                                               caplog):
    from reranker.editor import Editor
    from reranker.index import READS_FILE, ReplyIndex
    from tests.reranker.conftest import write_tiny_bert

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    editor = Editor.from_backbone(write_tiny_bert(tmp_path / "tiny-bert"), dtype=torch.float32)
    editor.save(root / "editor")
    build_index(root, entries=200, progress=False)
    index_dir = root / "index" / "default"
    index = ReplyIndex.load(index_dir)
    assert index.reads is not None and index.reads.dtype == np.float16 and index.reads.shape == (len(index), editor.kept_width)
    rows = np.arange(min(8, len(index)))
    texts = [index.line(r) for r in rows]
    np.testing.assert_allclose(editor.score_kept(["do you like dogs?"], index.kept(rows), texts),
                               editor.score(["do you like dogs?"], texts), rtol=2e-2, atol=2e-2)
    grown = build_index(root, entries=100, add=True, progress=False)  # grows with readings too
    assert ReplyIndex.load(index_dir).reads.shape[0] == len(index) + grown["added"]
    eng = load_engine(root)
    try:
        assert eng.indexes["default"].reads is not None
        r = eng.reply(["do you like dogs?"], seed=2, budget_ms=5000)
        assert r.stats["sources"]["index_kept"] == r.stats["sources"]["index"] > 0
    finally:
        eng.close()
    # Another editor (a retrained fluency head) would score the readings wrong: the hits are read in the turn.
    other = Editor.from_backbone(write_tiny_bert(tmp_path / "tiny-bert"), dtype=torch.float32)
    with torch.no_grad():
        for param in other.fluency.parameters():
            param.add_(0.5)
    other.save(root / "editor")
    with caplog.at_level(logging.WARNING):
        eng = load_engine(root)
    try:
        assert eng.indexes["default"].reads is None and "readings of another editor" in caplog.text
        r = eng.reply(["do you like dogs?"], seed=2, budget_ms=5000)
        assert r.stats["sources"]["index_kept"] == 0 and r.stats["sources"]["index_read"] > 0
    finally:
        eng.close()
    with pytest.raises(Exception, match="rebuild it instead of --add"):
        build_index(root, entries=50, add=True, progress=False)
    # A damaged readings file is refused like any other part of the index.
    data = index_dir / READS_FILE
    data.write_bytes(data.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(Exception, match="damaged"):
        ReplyIndex.load(index_dir)


def test_a_format_1_index_without_readings_still_loads(tmp_path, model_dir):
    import json

    from reranker.index import ReplyIndex

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    build_index(root, entries=100, progress=False)  # no editor: no readings, as every format 1 index
    config = root / "index" / "default" / "config.json"
    data = json.loads(config.read_text())
    assert data["riposte"]["format_version"] == 2 and "reads.npy" not in data["riposte"]["files"]
    data["riposte"]["format_version"] = 1
    config.write_text(json.dumps(data))
    index = ReplyIndex.load(root / "index" / "default")
    assert index.reads is None and index.kept(np.arange(3)) is None and len(index) > 0


def test_growing_an_index_that_keeps_no_readings_keeps_none_and_says_so(tmp_path, model_dir, caplog):
    from reranker.editor import Editor
    from reranker.index import ReplyIndex
    from tests.reranker.conftest import write_tiny_bert

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    first = build_index(root, entries=150, progress=False)  # no editor yet: no readings (format 1)
    Editor.from_backbone(write_tiny_bert(tmp_path / "tiny-bert"), dtype=torch.float32).save(root / "editor")
    with caplog.at_level(logging.WARNING):
        grown = build_index(root, entries=80, add=True, progress=False)
    index = ReplyIndex.load(root / "index" / "default")
    assert "keeps no readings" in caplog.text and index.reads is None
    assert len(index) == first["added"] + grown["added"] and grown["added"] > 0


def test_an_index_built_under_other_line_rules_is_used_with_a_warning(tmp_path, model_dir, caplog):
    import json

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    build_index(root, entries=200, progress=False)  # under the served rules
    for config, said in ((None, None), (EngineConfig(max_sentences=0, blocklist_words=("dogs",)),
                                        "other line rules (blocklist_words, max_sentences)")):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            eng = load_engine(root, config, require_reranker=False)
        eng.close()
        assert "default" in eng.indexes  # used either way: its hits still pass the turn's own filter
        assert ("line rules" in caplog.text) == (said is not None) and (said or "") in caplog.text
    path = root / "index" / "default" / "config.json"
    saved = json.loads(path.read_text())
    for build in saved["riposte"]["builds"]:
        del build["rules"]  # as an index built before it kept them
    path.write_text(json.dumps(saved))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_engine(root, require_reranker=False).close()
    assert "before an index kept its line rules" in caplog.text


def test_an_index_keeps_the_readings_of_an_editor_with_a_token_head_and_they_score_as_reading_does(tmp_path, model_dir):
    from reranker.editor import Editor, EditorConfig
    from reranker.sense import SenseModel
    from tests.reranker.conftest import write_tiny_bert

    root = tmp_path / "m"
    shutil.copytree(model_dir, root)
    backbone = write_tiny_bert(tmp_path / "tiny-bert-editor")
    torch.manual_seed(0)
    sense = SenseModel.from_backbone(backbone)
    sense.encoder.set_token_head(torch.nn.Linear(sense.encoder.hidden_size, 1))
    editor = Editor.from_backbone(backbone, dtype=torch.float32).with_sense(sense).with_config(
        EditorConfig(weights=(5.0, 1.0, 0.5, 2.0, 1.5, -0.5, -0.8)))
    editor.save(root / "editor")
    report = build_index(root, entries=200, progress=False)
    assert report["added"] > 0
    eng = load_engine(root)
    try:
        index, served = eng.indexes["default"], eng.editor
        assert served.has_splice and index.reads.shape[1] == served.kept_width == editor.kept_width
        rows = np.arange(min(len(index), 40))
        texts = index.lines_of(rows)
        context = ["do you like dogs?", "i love pizza on sundays"]
        # stored as float16: the verdict from the kept readings is the one a forward pass gives, within rounding
        np.testing.assert_allclose(served.score_kept(context, index.kept(rows), texts), served.score(context, texts),
                                   rtol=2e-2, atol=2e-2)
        np.testing.assert_allclose(index.meta[rows, 0], sense.logits(texts), rtol=1e-2, atol=1e-2)  # judged by sense
    finally:
        eng.close()
