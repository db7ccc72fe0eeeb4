"""The bi-encoder and the default editor: save/load, the zero-shot equivalence, budgets, bad directories."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from reranker import Reranker
from reranker.biencoder import BiEncoder, BiEncoderConfig, unit
from reranker.editor import FEATURES, Editor, EditorConfig, fluency_inputs

CONTEXT = ["hello how are you", "i like to eat pizza"]
CANDIDATES = ["yes pizza is great", "the cat and the dog", "good night", "what is your name", "i like tea"]


@pytest.fixture(scope="module")
def bi(tiny_bert) -> BiEncoder:
    return BiEncoder.from_backbone(tiny_bert, dtype=torch.float32)


@pytest.fixture(scope="module")
def editor(tiny_bert) -> Editor:
    return Editor.from_backbone(tiny_bert, dtype=torch.float32)


def test_biencoder_score_is_the_cosine_of_its_own_embeddings(bi):
    vecs, tokens = bi.embed(CANDIDATES)
    assert vecs.shape == (len(CANDIDATES), bi.hidden_size) and tokens.tolist() == [4, 5, 2, 4, 3]
    ctx, _ = bi.embed([" ".join(CONTEXT)], keep_end=True)
    expected = unit(vecs) @ unit(ctx)[0]
    np.testing.assert_allclose(bi.score(CONTEXT, CANDIDATES), expected, rtol=1e-5, atol=1e-6)


def test_biencoder_embeds_a_text_the_same_alone_or_in_a_batch(bi):
    alone = np.stack([bi.embed([c])[0][0] for c in CANDIDATES])
    np.testing.assert_allclose(bi.embed(CANDIDATES)[0], alone, rtol=1e-4, atol=1e-5)


def test_a_long_context_keeps_its_newest_tokens(tiny_bert):
    bi = BiEncoder.from_backbone(tiny_bert, BiEncoderConfig(max_length=6, context_lines=3), dtype=torch.float32)
    ids = bi.tokenize(["hello how are you fine thanks"], keep_end=True)[0]
    assert bi.tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "are", "you", "fine", "thanks", "[SEP]"]
    head = bi.tokenize(["hello how are you fine thanks"])[0]
    assert bi.tokenizer.convert_ids_to_tokens(head) == ["[CLS]", "hello", "how", "are", "you", "[SEP]"]
    assert bi.context_text(["a", "b", "c", "d"]) == "b c d"


def test_biencoder_save_load_gives_the_same_scores(bi, tmp_path):
    bi.save(tmp_path / "bi")
    again = BiEncoder.load(tmp_path / "bi", dtype=torch.float32)
    assert again.config == bi.config
    np.testing.assert_allclose(again.score(CONTEXT, CANDIDATES), bi.score(CONTEXT, CANDIDATES), rtol=1e-6)
    raw = json.loads((tmp_path / "bi" / "config.json").read_text())
    raw["riposte"]["format_version"] = 99
    (tmp_path / "bi" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="format_version 99"):
        BiEncoder.load(tmp_path / "bi")


def test_untrained_editor_ranks_exactly_as_the_zero_shot_biencoder(editor, bi):
    assert editor.config.weights == (20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # FEATURES: context, last line, ..., splice
    np.testing.assert_allclose(editor.score(CONTEXT, CANDIDATES), 20 * bi.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)


def test_editor_score_is_the_weighted_sum_of_its_features(editor):
    mixed = editor.with_config(EditorConfig(weights=(3.0, -2.0, 0.5), bias=1.5))
    vecs, tokens = mixed.biencoder.embed(CANDIDATES)
    feats = mixed.features(mixed.context_vectors(CONTEXT), mixed.read_texts(CANDIDATES), mixed.context_asks(CONTEXT))
    assert feats.shape == (len(CANDIDATES), len(FEATURES))
    last = unit(mixed.biencoder.embed([CONTEXT[-1]], keep_end=True)[0])[0]
    np.testing.assert_allclose(feats[:, 1], unit(vecs) @ last, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed.score(CONTEXT, CANDIDATES), feats @ np.array([3.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0]) + 1.5, rtol=1e-5, atol=1e-5)
    pairs = [(CONTEXT, c) for c in CANDIDATES]
    np.testing.assert_allclose(mixed.score_pairs(pairs), mixed.score(CONTEXT, CANDIDATES), rtol=1e-4, atol=1e-4)


def test_editor_duplicates_empty_and_bad_input(editor, monkeypatch):
    rows = []
    real = editor.biencoder._forward
    monkeypatch.setattr(editor.biencoder, "_forward", lambda batch: rows.append(len(batch)) or real(batch))
    editor.context_vectors(CONTEXT)
    rows.clear()
    scores = editor.score(CONTEXT, ["good night", "i like tea", "good night"])
    assert scores[0] == scores[2] and sum(rows) == 2  # the duplicate is embedded once
    assert editor.score(CONTEXT, []).shape == (0,)
    assert np.isfinite(editor.score([], ["good night"])).all()  # no context: relevance is 0, fluency still counts
    with pytest.raises(TypeError, match="not a single string"):
        editor.score("hello", CANDIDATES)
    with pytest.raises(TypeError, match="must hold strings"):
        editor.score(CONTEXT, ["ok", 3])
    ranked = editor.rank(CONTEXT, CANDIDATES, top_k=2)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1]


def test_editor_save_load_roundtrip_and_reranker_load_dispatch(editor, tmp_path):
    trained = editor.with_config(EditorConfig(weights=(12.0, 4.0, 1.0), bias=-2.0))
    with torch.no_grad():
        for p in trained.fluency.parameters():
            p.add_(0.1)
    trained.save(tmp_path / "ed", model_card="# card\n", extra_files={"eval.json": "{}"})
    loaded = Reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert isinstance(loaded, Editor) and loaded.config == trained.config
    np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), trained.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "ed" / "README.md").read_text().startswith("# card\n")
    assert json.loads((tmp_path / "ed" / "config.json").read_text())["riposte"]["weights"]["fluency"] == 1.0


def test_damaged_editor_directories_are_clear_errors(editor, tmp_path):
    editor.save(tmp_path / "ed")
    (tmp_path / "ed" / "fluency.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="fluency.safetensors"):
        Reranker.load(tmp_path / "ed")
    editor.save(tmp_path / "ed2")
    raw = json.loads((tmp_path / "ed2" / "config.json").read_text())
    del raw["riposte"]["weights"]["fluency"]
    (tmp_path / "ed2" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="must name exactly the features"):
        Reranker.load(tmp_path / "ed2")
    with pytest.raises(ValueError, match="one value per feature"):
        EditorConfig(weights=(1.0, 2.0))


def test_fluency_inputs_hand_values():
    x = fluency_inputs(np.array([[3.0, 4.0]], np.float32), np.array([4]))
    np.testing.assert_allclose(x, [[0.6, 0.8, np.log(5.0), np.log(5.0)]], rtol=1e-6)


def test_score_until_stops_at_the_deadline_and_keeps_the_callers_order(editor, monkeypatch):
    bi = editor.biencoder
    real = bi._forward

    def slow(batch):
        time.sleep(0.03)
        return real(batch)

    monkeypatch.setattr(bi, "_forward", slow)
    monkeypatch.setattr(bi, "batch_tokens", 64)  # small batches: many chances to stop
    candidates = [f"i like {w} {'and tea ' * (i % 4)}{i}" for i, w in enumerate(["pizza", "tea", "coffee"] * 60)]
    editor.context_vectors(CONTEXT)  # the context is cached, as it is for every slice after a turn's first
    start = time.monotonic()
    scores, scored = editor.score_until(CONTEXT, candidates, start + 0.25)
    took = time.monotonic() - start
    assert 0 < scored.sum() < len(candidates)
    assert np.isnan(scores[~scored]).all() and np.isfinite(scores[scored]).all()
    assert took < 0.25 + 0.5  # at most one mispredicted batch past the deadline, with room for a busy machine
    # Windows of 64 go front to back (length-sorted inside): every window before the last one touched is whole.
    last_window = int(np.flatnonzero(scored).max()) // 64
    assert scored[: last_window * 64].all()
    late = editor.score_until(CONTEXT, candidates, time.monotonic() - 1)
    assert not late[1].any()


def test_biencoder_pairs_and_cache_give_the_same_scores(tiny_bert):
    bi = BiEncoder.from_backbone(tiny_bert, dtype=torch.float32)
    pairs = [(CONTEXT, c) for c in CANDIDATES] + [(["good night"], "bye"), ([], "hello")]
    expected = np.array([bi.score(c, [x])[0] for c, x in pairs])
    np.testing.assert_allclose(bi.score_pairs(pairs), expected, rtol=1e-5, atol=1e-6)
    assert expected[-1] == 0.0
    bi.cache = {}
    first = bi.score(CONTEXT, CANDIDATES)
    assert (True, True, " ".join(CONTEXT)) in bi.cache and (True, False, CANDIDATES[0]) in bi.cache
    calls = []
    real = bi._forward
    bi._forward = lambda batch: calls.append(batch) or real(batch)
    np.testing.assert_allclose(bi.score(CONTEXT, CANDIDATES), first, rtol=1e-6)
    assert not calls  # every text came from the cache
    bi.score(CONTEXT, ["a new line"])
    assert len(calls) == 1


def test_reranker_load_knows_every_kind_and_refuses_unknown_ones(bi, editor, tmp_path):
    bi.save(tmp_path / "bi")
    assert isinstance(Reranker.load(tmp_path / "bi", dtype=torch.float32), BiEncoder)
    editor.save(tmp_path / "ed")
    raw = json.loads((tmp_path / "ed" / "config.json").read_text())
    raw["riposte"]["kind"] = "hologram"
    (tmp_path / "ed" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="unknown riposte model kind 'hologram'"):
        Reranker.load(tmp_path / "ed")
    with pytest.raises(ValueError, match="not an editor's settings"):
        Editor.load(tmp_path / "bi")


def test_reranker_load_and_the_old_name_load_the_same_kinds(bi, editor, tmp_path):
    import reranker
    from reranker import CrossEncoder

    editor.save(tmp_path / "ed")
    for load in (reranker.load, Reranker.load):
        loaded = load(tmp_path / "ed", dtype=torch.float32, warmup=False)
        assert isinstance(loaded, Editor) and loaded.config == editor.config
        np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), editor.score(CONTEXT, CANDIDATES), rtol=1e-5)
    assert issubclass(Reranker, CrossEncoder)  # the old name is the cross-encoder, whose load reads any kind


def test_a_corrupt_fluency_head_is_a_clear_error(editor, tmp_path):
    editor.save(tmp_path / "ed")
    (tmp_path / "ed" / "fluency.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="does not fit the editor"):
        Reranker.load(tmp_path / "ed")
    wide = editor.with_config(EditorConfig())
    wide.save(tmp_path / "ed2")
    raw = json.loads((tmp_path / "ed2" / "config.json").read_text())
    raw["riposte"]["fluency_width"] = 7
    (tmp_path / "ed2" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="does not fit the editor"):
        Reranker.load(tmp_path / "ed2")


def test_other_libraries_refuse_a_saved_editor_and_say_to_use_riposte(editor, tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    editor.save(tmp_path / "ed", model_card="# card\n")
    loaders = {
        "CrossEncoder": CrossEncoder,
        "AutoModelForSequenceClassification": AutoModelForSequenceClassification.from_pretrained,
        "AutoConfig": AutoConfig.from_pretrained,
        "pipeline": lambda path: pipeline("text-classification", model=path),
    }
    for name, load in loaders.items():
        with pytest.raises(ValueError, match=r"riposte-editor: not a transformers model") as caught:
            load(str(tmp_path / "ed"))
        assert "Reranker.load(dir)" in str(caught.value) and "/rank" in str(caught.value), name
    card = (tmp_path / "ed" / "README.md").read_text()
    assert card.startswith("# card\n") and card.count("## Loading it with other libraries") == 1
    assert "refuse" in card and "Reranker.load(dir)" in card
    editor.save(tmp_path / "ed", model_card=card)  # a card that has the note keeps one copy
    assert (tmp_path / "ed" / "README.md").read_text() == card


def test_asks_back_is_a_question_answering_a_question(editor):
    only = editor.with_config(EditorConfig(weights=(0.0, 0.0, 0.0, 0.0, 0.0, -1.0)))
    candidates = ["what is your name?", "i like tea", "and you? i like tea", "good night!"]
    asked = ["hello, nice to meet you", "do you like pizza?"]
    assert only.score(asked, candidates).tolist() == [-1.0, 0.0, -1.0, 0.0]
    assert only.score(asked[:1], candidates).tolist() == [0.0] * 4  # a statement: nothing asks back
    assert only.score(["what?", "fine."], candidates).tolist() == [0.0] * 4  # the last line counts
    assert only.score(["do you like pizza"], candidates).tolist() == [-1.0, 0.0, -1.0, 0.0]  # asked without a "?"
    pairs = [(asked, c) for c in candidates] + [(asked[:1], c) for c in candidates]
    assert only.score_pairs(pairs).tolist() == [-1.0, 0.0, -1.0, 0.0] + [0.0] * 4  # each pair its own context
    many = only.score_many([(asked, candidates), (asked[:1], candidates)])
    assert many[0][0].tolist() == [-1.0, 0.0, -1.0, 0.0] and many[1][0].tolist() == [0.0] * 4


def test_editors_saved_before_the_foreign_loader_guard_still_load(editor, tmp_path):
    trained = editor.with_config(EditorConfig(weights=(5.0, 1.0, 0.5), bias=0.25))
    trained.save(tmp_path / "ed")
    raw = json.loads((tmp_path / "ed" / "config.json").read_text())
    assert raw["model_type"].startswith("riposte-editor") and raw["riposte"]["format_version"] == 5
    del raw["model_type"]  # the layout every editor had before: only the riposte section
    (tmp_path / "ed" / "config.json").write_text(json.dumps(raw))
    old = Reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert isinstance(old, Editor) and old.config == trained.config
    np.testing.assert_allclose(old.score(CONTEXT, CANDIDATES), trained.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)


def test_max_token_logit_hand_values():
    from reranker.runtime import max_token_logit

    head = torch.nn.Linear(2, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -1.0]]))
        head.bias.fill_(0.5)
    # token logits: row 0 [9.5 (CLS), 1.5, -0.5, 99.5 (pad)], row 1 [9.5 (CLS), -2.5 (SEP), pads]
    hidden = torch.tensor([[[9.0, 0.0], [2.0, 1.0], [0.0, 1.0], [99.0, 0.0]],
                           [[9.0, 0.0], [-3.0, 0.0], [50.0, 0.0], [50.0, 0.0]]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert max_token_logit(hidden, mask, head).tolist() == [1.5, -2.5]  # never [CLS], never a pad
