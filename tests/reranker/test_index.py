"""The reply index: build, judge threshold, search against exact, save/load, growth, stale and damaged dirs, kills."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from corpus.text import LineRules, words
from reranker.biencoder import BiEncoder
from reranker.first_stage import DistillConfig, distill
from reranker.index import (
    LINES_FILE,
    META_FILE,
    VECTORS_FILE,
    IndexConfig,
    IndexLoadError,
    ReplyIndex,
    StaleIndexError,
    build_index,
    fingerprint,
)

CONTEXT = ["do you like dogs?", "i really like pizza."]
SUBJECTS, VERBS = ["i", "you", "we", "they", "my friend"], ["like", "hate", "want", "need"]
OBJECTS = ["dogs", "pizza", "the park", "music", "coffee", "old movies"]
LINES = [f"{s} really {v} {o}." for s in SUBJECTS for v in VERBS for o in OBJECTS] + \
    [f"why do {s} {v} {o} on sundays?" for s in SUBJECTS for v in VERBS for o in OBJECTS]
FINGERPRINTS = {"writer": "w1", "first_stage": "f1", "judge": "j1"}


def judge(texts: list[str]) -> np.ndarray:
    """A judge whose verdict is checkable by hand: the number of words."""
    return np.asarray([len(words(t)) for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def writer():
    from markov import MarkovConfig, MarkovModel

    return MarkovModel.build([(line, 1.0) for line in LINES], MarkovConfig(order=2))


@pytest.fixture(scope="module")
def stage(tiny_bert, writer):
    bi = BiEncoder.from_backbone(tiny_bert, dtype=torch.float32)
    texts = LINES
    vecs, _ = bi.embed(texts)
    stage, _ = distill(bi, texts, vecs, weights=(1.0, 0.5), config=DistillConfig(epochs=3, dim=16, lr=1e-2))
    stage.add_words(words(" ".join(writer.vocab[2:])))
    return stage


@pytest.fixture()
def built(tmp_path, writer, stage):
    directory = tmp_path / "index"
    report = build_index(directory, writer, judge, stage, 600, fingerprints=FINGERPRINTS,
                         config=IndexConfig(drop_share=0.25), rules=LineRules(max_words=9), progress=False)
    return directory, report


def test_build_keeps_new_rule_abiding_lines_above_the_judges_threshold(built):
    directory, report = built
    index = ReplyIndex.load(directory)
    lines = [index.line(r) for r in range(len(index))]
    assert len(index) == report["added"] > 0 and report["judged"] == report["added"] + report["dropped"]
    keys = [" ".join(words(t)) for t in lines]
    assert len(set(keys)) == len(keys)  # no line twice
    assert all(1 <= len(words(t)) <= 9 for t in lines)  # the line rules
    threshold = report["min_sense"]
    assert index.config.min_sense == threshold
    np.testing.assert_array_equal(index.meta[:, 0], judge(lines))  # each line keeps its judge's logit
    assert (index.meta[:, 0] >= threshold).all() and report["dropped"] > 0
    assert json.loads((directory / "config.json").read_text())["riposte"]["count"] == len(index)


def test_lines_of_reads_the_saved_lines_mapped_or_in_memory(built):
    directory, _ = built
    data = (directory / "lines.bin").read_bytes()
    offsets = np.load(directory / "offsets.npy")
    every = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    rows = np.array([3, 0, len(every) - 1, 3])  # any order, a row twice
    for index in (ReplyIndex.load(directory), ReplyIndex.load(directory, view=False)):
        assert index.lines_of(np.arange(len(index))) == every
        assert index.lines_of(rows) == [every[r] for r in rows] and index.line(5) == every[5]
        assert index.lines_of([]) == []


def test_search_finds_what_exact_search_finds_and_scores_like_the_first_stage(built, stage):
    directory, _ = built
    index = ReplyIndex.load(directory).attach(stage)
    hits = index.search(CONTEXT, 20)
    lines = [index.line(r) for r in range(len(index))]
    exact = stage.score(CONTEXT, lines)
    best = {lines[i] for i in np.argsort(-exact)[:20]}
    assert len(best & set(hits.texts)) >= 18  # a few thousand entries: the graph search is all but exact
    np.testing.assert_allclose(hits.scores, stage.score(CONTEXT, hits.texts), atol=2e-3)  # f16 vectors
    assert list(hits.scores) == sorted(hits.scores, reverse=True)
    assert hits.sense.tolist() == judge(hits.texts).tolist()
    assert len(index.search([], 5).texts) == 0  # no context, no query


def test_add_grows_the_index_and_keeps_every_old_entry(built, writer, stage):
    directory, first = built
    before = ReplyIndex.load(directory, view=False)
    old = [before.line(r) for r in range(len(before))]
    report = build_index(directory, writer, judge, stage, 200, fingerprints=FINGERPRINTS, add=True, progress=False)
    after = ReplyIndex.load(directory).attach(stage)
    assert len(after) == len(old) + report["added"] and report["added"] > 0
    assert [after.line(r) for r in range(len(old))] == old
    keys = np.arange(len(old), dtype=np.uint64)
    np.testing.assert_array_equal(after.graph.get(keys), before.graph.get(keys))  # and their vectors
    np.testing.assert_array_equal(after.meta[: len(old)], before.meta)
    assert len({after.line(r) for r in range(len(after))}) == len(after)  # nothing added twice
    assert report["min_sense"] == first["min_sense"]  # one bar for every entry
    assert [b["added"] for b in after.info["builds"]] == [first["added"], report["added"]]
    assert after.search(CONTEXT, 5).texts


def test_a_changed_writer_or_first_stage_makes_the_index_stale(built, writer, stage):
    directory, _ = built
    ReplyIndex.load(directory, expect={"writer": "w1", "first_stage": "f1"})
    with pytest.raises(StaleIndexError, match="another writer"):
        ReplyIndex.load(directory, expect={"writer": "w2"})
    with pytest.raises(StaleIndexError, match="another first stage"):
        build_index(directory, writer, judge, stage, 10, fingerprints={**FINGERPRINTS, "first_stage": "f2"},
                    add=True, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "missing", "config"])
def test_a_damaged_index_is_refused_with_a_clear_message(built, damage):
    directory, _ = built
    if damage == "truncate":
        path = directory / VECTORS_FILE
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "flip":
        path = directory / LINES_FILE
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x20
        path.write_bytes(bytes(data))
    elif damage == "missing":
        (directory / META_FILE).unlink()
    else:
        (directory / "config.json").write_text("{not json")
    with pytest.raises(IndexLoadError, match="damaged|missing|corrupt"):
        ReplyIndex.load(directory)


def test_a_build_killed_midway_leaves_the_previous_index_whole(built, writer, stage):
    directory, _ = built
    before = sorted(p.name for p in directory.iterdir())
    count = len(ReplyIndex.load(directory))
    calls = []

    def dies(texts):
        calls.append(len(texts))
        raise KeyboardInterrupt  # a kill while lines are being judged

    with pytest.raises(KeyboardInterrupt):
        build_index(directory, writer, dies, stage, 20_000, fingerprints=FINGERPRINTS, progress=False)
    assert sorted(p.name for p in directory.iterdir()) == before
    assert len(ReplyIndex.load(directory)) == count


def test_a_save_that_fails_midway_leaves_the_previous_index_and_no_temporary(built, writer, stage, monkeypatch):
    directory, _ = built
    count = len(ReplyIndex.load(directory))
    real_save = np.save

    def fails(path, *args, **kwargs):
        if str(path).endswith("meta.npy"):
            raise OSError("disk full")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(np, "save", fails)
    with pytest.raises(OSError, match="disk full"):
        build_index(directory, writer, judge, stage, 100, fingerprints=FINGERPRINTS, progress=False)
    monkeypatch.undo()
    assert len(ReplyIndex.load(directory)) == count
    assert [p.name for p in directory.parent.iterdir() if p.name.startswith(".index.")] == [".index.lock"]


def test_a_build_killed_between_its_renames_is_put_back_by_the_next(built, writer, stage):
    directory, _ = built
    count = len(ReplyIndex.load(directory))
    os.rename(directory, directory.with_name(".index.old-123"))  # what a kill between the two renames leaves
    (directory.parent / ".index.tmp-abc").mkdir()
    report = build_index(directory, writer, judge, stage, 50, fingerprints=FINGERPRINTS, add=True, progress=False)
    assert len(ReplyIndex.load(directory)) == count + report["added"]
    assert [p.name for p in directory.parent.iterdir() if p.name.startswith(".index.")] == [".index.lock"]


def test_searches_from_many_threads_agree_with_one_thread(built, stage):
    from concurrent.futures import ThreadPoolExecutor

    index = ReplyIndex.load(built[0]).attach(stage)
    contexts = [[line] for line in LINES[:40]]
    alone = [index.search(c, 16).texts for c in contexts]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda c: index.search(c, 16).texts, contexts * 5))
    assert together == alone * 5


def test_growing_with_another_judge_is_refused_and_no_judge_writes_strict_json(tmp_path, writer, stage):
    directory = tmp_path / "index"
    report = build_index(directory, writer, lambda t: np.zeros(len(t), np.float32), stage, 200,
                         fingerprints={**FINGERPRINTS, "judge": "none"}, config=IndexConfig(drop_share=0.0),
                         progress=False)
    assert report["min_sense"] is None and report["dropped"] == 0

    def strict(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    json.loads((directory / "config.json").read_text(), parse_constant=strict)
    with pytest.raises(StaleIndexError, match="another sense model"):
        build_index(directory, writer, judge, stage, 10, fingerprints=FINGERPRINTS, add=True, progress=False)


def test_fingerprint_changes_with_a_files_bytes(tmp_path):
    (tmp_path / "a").write_text("x")
    first = fingerprint(tmp_path)
    assert fingerprint(tmp_path) == first
    (tmp_path / "a").write_text("y")
    assert fingerprint(tmp_path) != first


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="drop_share"):
        IndexConfig(drop_share=1.0)
    with pytest.raises(ValueError, match="connectivity"):
        IndexConfig(connectivity=1)


def test_a_small_writer_gets_an_index_sized_to_what_it_can_say(tmp_path, stage):
    from markov import MarkovConfig, MarkovModel

    small = MarkovModel.build([(t, 1.0) for t in ["i like dogs.", "you like pizza.", "we like dogs."]],
                              MarkovConfig(order=1))
    report = build_index(tmp_path / "small", small, judge, stage, 100_000, fingerprints=FINGERPRINTS,
                         config=IndexConfig(drop_share=0.0), progress=False)
    index = ReplyIndex.load(tmp_path / "small")
    assert 0 < len(index) == report["added"] < 50 and report["written"] < 100_000
    assert {" ".join(words(index.line(r))) for r in range(len(index))} >= {"i like pizza", "you like dogs"}
