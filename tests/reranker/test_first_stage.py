"""The first stage: distillation, scoring, unseen words, save/load, damaged directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reranker.biencoder import BiEncoder, unit
from reranker.first_stage import DistillConfig, FirstStage, FirstStageConfig, distill, split_words

CONTEXT = ["hello how are you", "i like to eat pizza"]
WORDS = "pizza tea cat dog night name hello yes good great eat like you are how what is the and".split()


def lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]


@pytest.fixture(scope="module")
def bi(tiny_bert) -> BiEncoder:
    return BiEncoder.from_backbone(tiny_bert, dtype=torch.float32)


@pytest.fixture(scope="module")
def fitted(bi):
    texts = lines(600)
    vecs, _ = bi.embed(texts)
    stage, report = distill(bi, texts, vecs, weights=(2.0, 1.0), config=DistillConfig(epochs=6, dim=16, lr=1e-2))
    return stage, report, texts, vecs


def test_distillation_brings_static_vectors_toward_the_biencoder(fitted):
    stage, report, _, _ = fitted
    assert report["val_cosine"] > report["val_cosine_before"] and report["val_cosine"] > 0.5
    assert report["words"] == len(set(WORDS)) and stage.dim == 16 and report["steps"] == 6 * 2


def test_score_is_the_weighted_cosine_of_static_vectors(fitted):
    stage, _, texts, _ = fitted
    candidates = texts[:20]
    vecs = unit(stage.embed(candidates))
    ctx = unit(stage.embed([" ".join(CONTEXT), CONTEXT[-1]]))
    expected = vecs @ ctx.T @ np.array([2.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(stage.score(CONTEXT, candidates), expected, rtol=1e-5, atol=1e-6)
    words = [split_words(c) for c in candidates]
    np.testing.assert_array_equal(stage.score(CONTEXT, candidates, words), stage.score(CONTEXT, candidates))
    # The last line itself is the best possible candidate for the last-line cosine.
    last_only = FirstStage(FirstStageConfig(weights=(0.0, 1.0)), stage.tokenizer, stage.pieces,
                           list(stage._index)[: stage.trained_words], stage._table[: stage.trained_words])
    scores = last_only.score(CONTEXT, [*candidates, CONTEXT[-1]])
    assert scores.argmax() == len(candidates) and scores[-1] == pytest.approx(1.0, abs=1e-5)


def test_unseen_words_get_their_wordpiece_vector_once(fitted):
    stage, _, _, _ = fitted
    before = stage._size
    expected = stage.piece_vectors(["zebra"])[0]
    np.testing.assert_allclose(stage.embed(["zebra zebra"])[0], 2 * expected, rtol=1e-5, atol=1e-6)
    assert stage._size == before + 1 and stage.add_words(["zebra", "pizza"]) == 0
    assert stage.embed([""]).tolist() == [[0.0] * stage.dim]  # no words, no direction
    assert stage.score([], ["pizza"]).tolist() == [0.0]  # no context, no preference
    with pytest.raises(ValueError, match="word lists for"):
        stage.score(CONTEXT, ["a", "b"], [["a"]])


def test_save_load_gives_the_same_scores(fitted, tmp_path):
    stage, _, texts, _ = fitted
    stage.save(tmp_path / "fs")
    again = FirstStage.load(tmp_path / "fs")
    assert again.config == stage.config and again.trained_words == stage.trained_words
    # saved in float16: scores agree to about 1e-3
    np.testing.assert_allclose(again.score(CONTEXT, texts[:50]), stage.score(CONTEXT, texts[:50]), atol=5e-3)
    assert np.array_equal(np.argsort(-again.score(CONTEXT, texts[:50]))[:5],
                          np.argsort(-stage.score(CONTEXT, texts[:50]))[:5])


def test_damaged_directories_are_clear_errors(fitted, tmp_path):
    stage, _, _, _ = fitted
    path = stage.save(tmp_path / "fs")
    raw = json.loads((path / "config.json").read_text())
    raw["riposte"]["format_version"] = 7
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="format_version 7"):
        FirstStage.load(path)
    raw["riposte"]["kind"] = "editor"
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="not a riposte first stage"):
        FirstStage.load(path)
    stage.save(path)
    (path / "vectors.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cannot load the first stage"):
        FirstStage.load(path)
    with pytest.raises(ValueError, match="at least 20 texts"):
        distill(None, ["a"], np.zeros((1, 4)))


def test_the_editor_loader_names_a_first_stage_instead_of_loading_it(fitted, tmp_path):
    import reranker

    stage, _, _, _ = fitted
    stage.save(tmp_path / "fs")
    with pytest.raises(ValueError, match="holds a first stage, which orders candidates for an editor"):
        reranker.load(tmp_path / "fs")
