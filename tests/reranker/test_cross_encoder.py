"""Loading, saving and scoring: round trips, truncation, deadlines, duplicates, precision, errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reranker import BackboneNotFoundError, Reranker, RerankerConfig
from reranker.runtime import cpu_has_bf16

from .conftest import WORDS

CONTEXT = ["hello how are you", "fine thanks and you", "good what is your name"]
CANDIDATES = ["my name is cat", "i like pizza", "bye", "where do you live", "yes", "the movie was great today"]


@pytest.fixture(scope="module")
def reranker(tiny_bert, tmp_path_factory) -> Reranker:
    out = tmp_path_factory.mktemp("rr") / "model"
    Reranker.from_backbone(tiny_bert, RerankerConfig(max_length=32)).save(out)
    return Reranker.load(out, dtype=torch.float32)


def test_save_load_round_trip_gives_equal_scores(tiny_bert, tmp_path):
    torch.manual_seed(3)
    rr = Reranker.from_backbone(tiny_bert, RerankerConfig(max_length=40, pooling="mean"))
    before = rr.score(CONTEXT, CANDIDATES)
    rr.save(tmp_path / "m", model_card="# card\n")
    loaded = Reranker.load(tmp_path / "m", dtype=torch.float32)
    np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), before, rtol=1e-5, atol=1e-6)
    assert loaded.config == rr.config
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["riposte"] == {"kind": "cross-encoder", "delimiter": "|", "max_length": 40, "truncation_side": "left", "pooling": "mean",
                                "context_speakers": False, "format_version": 2, "model_type": "bert"}
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("# card\n\n## Loading it with other libraries\n") and card.count("## Loading") == 1
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_cls_pooling_round_trips_too(tiny_bert, tmp_path):
    rr = Reranker.from_backbone(tiny_bert, RerankerConfig(pooling="cls"))
    rr.save(tmp_path / "m")
    loaded = Reranker.load(tmp_path / "m", dtype=torch.float32)
    np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), rr.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-6)


def test_mean_and_cls_heads_differ(tiny_bert):
    torch.manual_seed(0)
    mean = Reranker.from_backbone(tiny_bert, RerankerConfig(pooling="mean"))
    torch.manual_seed(0)
    cls = Reranker.from_backbone(tiny_bert, RerankerConfig(pooling="cls"))
    assert not np.allclose(mean.score(CONTEXT, CANDIDATES), cls.score(CONTEXT, CANDIDATES))


def test_left_truncation_keeps_candidate_whole(reranker):
    tok = reranker.tokenizer
    context = ["hello how are you today and tomorrow"] * 6 + ["the newest line"]
    candidate = "i like to eat pizza and tea"
    (ids,) = reranker.encode(context, [candidate])
    cand_ids = tok(candidate, add_special_tokens=False)["input_ids"]
    newest = tok("the newest line", add_special_tokens=False)["input_ids"]
    assert len(ids) <= reranker.config.max_length
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[-len(cand_ids) - 1 : -1] == cand_ids  # the candidate, whole, before the last [SEP]
    sep = ids.index(tok.sep_token_id)
    assert ids[sep - len(newest) : sep] == newest  # the newest context line survives; the oldest went
    assert ids.count(reranker.delim_id) < 6


def test_duplicates_get_equal_scores_and_order_is_kept(reranker):
    candidates = ["yes", "bye", "yes", "i like pizza", "bye", "yes"]
    scores = reranker.score(CONTEXT, candidates)
    assert scores.dtype == np.float32 and scores.shape == (6,)
    assert scores[0] == scores[2] == scores[5] and scores[1] == scores[4]
    single = reranker.score(CONTEXT, ["i like pizza"])
    np.testing.assert_allclose(scores[3], single[0], rtol=1e-5, atol=1e-6)  # batching and padding change nothing


def test_rank_is_best_first(reranker):
    ranked = reranker.rank(CONTEXT, CANDIDATES)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(c for c, _ in ranked) == sorted(CANDIDATES)
    assert reranker.rank(CONTEXT, CANDIDATES, top_k=2) == ranked[:2]


def test_score_pairs_matches_score(reranker):
    pairs = [(CONTEXT, c) for c in CANDIDATES] + [(CONTEXT[:1], "yes"), ([], "bye")]
    got = reranker.score_pairs(pairs)
    np.testing.assert_allclose(got[: len(CANDIDATES)], reranker.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[-2], reranker.score(CONTEXT[:1], ["yes"])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[-1], reranker.score([], ["bye"])[0], rtol=1e-5, atol=1e-6)


def test_empty_and_bad_inputs(reranker):
    assert reranker.score(CONTEXT, []).shape == (0,)
    assert reranker.score([], ["yes"]).shape == (1,)
    with pytest.raises(TypeError, match="lists of strings"):
        reranker.score("hello", ["yes"])
    with pytest.raises(TypeError, match="must hold strings"):
        reranker.score(CONTEXT, ["yes", 3])


def test_score_until_respects_deadline_and_returns_partial(reranker, monkeypatch):
    # 40 distinct candidates in batches of about 4, each batch slowed by 30 ms: scoring them all takes at
    # least 300 ms however fast the machine, so a 200 ms deadline must stop partway.
    words = ("yes", "no", "maybe", "hello", "bye", "cat", "dog", "tea")
    candidates = [f"{w} {v}" for w in words for v in ("cat", "dog", "tea", "city", "now")] * 3
    full = reranker.score(CONTEXT, candidates)
    # Each batch takes 30 ms more than the model needs: a slow machine, deterministically.
    real = reranker._forward
    batches = []  # (began, ended) of every batch

    def slow(batch):
        began = time.monotonic()
        time.sleep(0.03)
        out = real(batch)
        batches.append((began, time.monotonic()))
        return out

    monkeypatch.setattr(reranker, "_forward", slow)
    monkeypatch.setattr(reranker, "batch_tokens", 4 * 16)  # about 4 candidates per batch
    # A fresh cost estimate: one learned from batches that stalled on a busy machine (this fixture is shared)
    # could rightly refuse even the first batch within 200 ms.
    monkeypatch.setattr(reranker, "cost", type(reranker.cost)())
    # A past deadline scores nothing.
    scores, scored = reranker.score_until(CONTEXT, candidates, time.monotonic() - 1)
    assert not scored.any() and np.isnan(scores).all() and not batches
    start = time.monotonic()
    deadline = start + 0.2
    scores, scored = reranker.score_until(CONTEXT, candidates, deadline)
    finished = time.monotonic()
    # At most one mispredicted batch late: no batch starts after the deadline, and the call returns as soon
    # as the last one ends. Judged by that batch's own length, not a fixed margin: on a busy machine a single
    # forward of even this tiny model can stall for 100 ms or more.
    assert batches and all(began < deadline for began, _ in batches), [b - deadline for b, _ in batches]
    last_began, last_ended = batches[-1]
    assert finished - max(deadline, last_ended) <= 0.05, (finished - deadline, last_ended - last_began)
    assert 0 < scored.sum() < len(set(candidates)) * 3
    assert np.isnan(scores[~scored]).all()
    np.testing.assert_allclose(scores[scored], full[scored], rtol=1e-5, atol=1e-6)
    # Duplicates are scored together: a scored text is scored at every position.
    for text in set(candidates):
        marks = {bool(scored[i]) for i, c in enumerate(candidates) if c == text}
        assert len(marks) == 1
    # A generous deadline scores everything, equal to score().
    scores, scored = reranker.score_until(CONTEXT, candidates, time.monotonic() + 60)
    assert scored.all()
    np.testing.assert_allclose(scores, full, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_bf16_agrees_with_fp32(tiny_bert, tmp_path):
    Reranker.from_backbone(tiny_bert).save(tmp_path / "m")
    fp32 = Reranker.load(tmp_path / "m", dtype=torch.float32).score(CONTEXT, CANDIDATES)
    bf16_model = Reranker.load(tmp_path / "m", dtype="auto")
    assert bf16_model.dtype == torch.bfloat16
    bf16 = bf16_model.score(CONTEXT, CANDIDATES)
    # The stated tolerance: |bf16 - fp32| <= 0.05 + 2% of |fp32| per logit.
    assert np.all(np.abs(bf16 - fp32) <= 0.05 + 0.02 * np.abs(fp32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_gpu_scoring_matches_cpu(tiny_bert, tmp_path):
    Reranker.from_backbone(tiny_bert).save(tmp_path / "m")
    cpu = Reranker.load(tmp_path / "m", device="cpu", dtype=torch.float32).score(CONTEXT, CANDIDATES)
    gpu = Reranker.load(tmp_path / "m", device="cuda", dtype=torch.float32).score(CONTEXT, CANDIDATES)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_missing_backbone_fails_at_once_naming_the_fix(tmp_path):
    start = time.monotonic()
    with pytest.raises(BackboneNotFoundError, match="pass a local path"):
        Reranker.from_backbone("microsoft/deberta-v3-nonexistent-xyz")
    assert time.monotonic() - start < 10
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackboneNotFoundError, match="no config.json"):
        Reranker.from_backbone(tmp_path / "empty")


def test_load_rejects_a_plain_hf_model_and_other_versions(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match="not a trained reranker"):
        Reranker.load(tiny_bert)
    with pytest.raises(FileNotFoundError, match="not a reranker directory"):
        Reranker.load(tmp_path)
    Reranker.from_backbone(tiny_bert).save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["riposte"]["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        Reranker.load(tmp_path / "m")


def test_config_validation():
    with pytest.raises(ValueError, match="pooling"):
        RerankerConfig(pooling="max")
    with pytest.raises(ValueError, match="truncation_side"):
        RerankerConfig(truncation_side="right")
    with pytest.raises(ValueError, match="the layout this riposte writes"):
        RerankerConfig(format_version=1)


def test_pair_head_starts_as_scaled_cosine_and_round_trips(tiny_bert, tmp_path):
    rr = Reranker.from_backbone(tiny_bert, RerankerConfig(pooling="pair"))
    scores = rr.score(CONTEXT, CANDIDATES)
    encoded = rr.encode(CONTEXT, CANDIDATES)
    expected = []
    with torch.inference_mode():
        for ids in encoded:
            hidden = rr.model.base_model(input_ids=torch.tensor([ids], device=rr.device)).last_hidden_state[0]  # (T, H)
            sep = ids.index(rr.sep_id)
            u = hidden[:sep].mean(0)  # [CLS] and the context
            v = hidden[sep + 1 : len(ids) - 1].mean(0)  # the candidate, without its [SEP]
            expected.append(20.0 * (float(torch.nn.functional.cosine_similarity(u, v, dim=0)) - 0.3))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    rr.save(tmp_path / "m")
    loaded = Reranker.load(tmp_path / "m", dtype=torch.float32)
    assert loaded.config.pooling == "pair"
    np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), scores, rtol=1e-5, atol=1e-6)


def test_one_stalled_batch_cannot_stop_scoring_for_good(reranker):
    candidates = [f"{w} {v}" for w in ("yes", "no", "maybe") for v in ("cat", "dog", "tea")]
    reranker.score(CONTEXT, candidates)
    calm = reranker.cost.per_token
    # A batch stalled 1000x (a GIL holder, a first-shape compile) raises the estimate at most 2x...
    reranker.cost.update(100, 1000 * calm * 100 + reranker.cost.overhead)
    assert reranker.cost.per_token == pytest.approx(2 * calm)
    # ...and even an absurd estimate relaxes on refusals until a batch fits again. A deadline of 2 s, not a
    # few hundred ms: on a busy machine each forward can stall for 100 ms or more, and the estimate only
    # falls 20% a batch, so a short deadline could keep all nine out of reach of any single call.
    reranker.cost.per_token = 10.0
    scored_counts = []
    for _ in range(200):
        _, scored = reranker.score_until(CONTEXT, candidates, time.monotonic() + 2.0)
        scored_counts.append(int(scored.sum()))
        if scored.all():
            break
    assert scored_counts[0] == 0 and scored_counts[-1] == len(candidates)


# ---- other libraries' loaders -----------------------------------------------------------------------------------


def other_loaders() -> dict:
    """Every way sentence-transformers and transformers load a cross-encoder directory, by name."""
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoModelForSequenceClassification, pipeline

    return {
        "CrossEncoder": CrossEncoder,
        "AutoModelForSequenceClassification": AutoModelForSequenceClassification.from_pretrained,
        "AutoConfig": AutoConfig.from_pretrained,
        "pipeline": lambda path: pipeline("text-classification", model=path),
    }


def assert_refused(directory) -> None:
    for name, load in other_loaders().items():
        with pytest.raises(ValueError, match=r"riposte-reranker: a riposte cross-encoder that no") as caught:
            load(str(directory))
        assert "Reranker.load(dir)" in str(caught.value) and "/v1/rerank" in str(caught.value), name


def widen(reranker: Reranker, seed: int = 0) -> Reranker:
    """Weights of std 0.3 (the classifier's 1): at init's 0.02 a tiny model gives nearly one score for every input,
    so an equality of scores would prove little. The token-type rows get as wide, so sending them would show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in reranker.model.parameters():
            if param.dim() >= 2:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
        reranker.model.classifier.weight.copy_(torch.randn(reranker.model.classifier.weight.shape, generator=generator))
    return reranker


@pytest.mark.parametrize("pooling", ["pair", "mean"])
def test_other_libraries_refuse_a_pooled_reranker_and_riposte_scores_it_as_before(tiny_bert, tmp_path, pooling):
    rr = widen(Reranker.from_backbone(tiny_bert, RerankerConfig(pooling=pooling, max_length=40)))
    before = rr.score(CONTEXT, CANDIDATES)
    rr.save(tmp_path / "m", model_card="# card\n")
    assert_refused(tmp_path / "m")
    loaded = Reranker.load(tmp_path / "m", dtype=torch.float32)
    assert loaded.config == rr.config and type(loaded.model) is type(rr.model)
    np.testing.assert_allclose(loaded.score(CONTEXT, CANDIDATES), before, rtol=1e-5, atol=1e-5)
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["riposte"]["model_type"] == "bert" and raw["riposte"]["format_version"] == 2
    card = (tmp_path / "m" / "README.md").read_text()
    flat = " ".join(card.split())  # the note is wrapped
    assert card.count("## Loading it with other libraries") == 1
    assert "Other libraries refuse this directory" in flat and f"pooling `{pooling}`" in flat
    assert "Reranker.load(dir)" in flat and "/v1/rerank" in flat
    # Saved again (here with the card it already has) it keeps one note, and still loads.
    loaded.save(tmp_path / "m", model_card=card)
    assert (tmp_path / "m" / "README.md").read_text() == card
    np.testing.assert_allclose(Reranker.load(tmp_path / "m", dtype=torch.float32).score(CONTEXT, CANDIDATES), before,
                               rtol=1e-5, atol=1e-5)


def write_format_1(directory) -> None:
    """Rewrite a saved reranker's config.json the way riposte wrote every one before format 2."""
    raw = json.loads((directory / "config.json").read_text())
    raw["model_type"] = raw["riposte"].pop("model_type")
    raw["riposte"]["format_version"] = 1
    for key in ("sentence_transformers", "problem_type"):
        raw.pop(key, None)
    (directory / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("pooling", ["pair", "cls"])
def test_rerankers_saved_in_format_1_still_load_and_are_saved_back_in_format_2(tiny_bert, tmp_path, pooling):
    rr = widen(Reranker.from_backbone(tiny_bert, RerankerConfig(pooling=pooling, max_length=40)))
    before = rr.score(CONTEXT, CANDIDATES)
    rr.save(tmp_path / "m")
    write_format_1(tmp_path / "m")
    old = Reranker.load(tmp_path / "m", dtype=torch.float32)
    assert old.config == rr.config and old.config.format_version == 2
    np.testing.assert_allclose(old.score(CONTEXT, CANDIDATES), before, rtol=1e-5, atol=1e-5)
    old.save(tmp_path / "again")
    raw = json.loads((tmp_path / "again" / "config.json").read_text())
    assert raw["riposte"]["format_version"] == 2 and raw["riposte"]["model_type"] == "bert"
    assert (raw["model_type"] == "bert") == (pooling == "cls")
    np.testing.assert_allclose(Reranker.load(tmp_path / "again", dtype=torch.float32).score(CONTEXT, CANDIDATES),
                               before, rtol=1e-5, atol=1e-5)


def test_a_saved_reranker_is_a_backbone_to_train_on_and_a_damaged_one_says_so(tiny_bert, tmp_path):
    Reranker.from_backbone(tiny_bert, RerankerConfig(pooling="pair")).save(tmp_path / "m")
    again = Reranker.from_backbone(tmp_path / "m", RerankerConfig(pooling="mean"))
    assert type(again.model).__name__ == "BertForSequenceClassification" and again.config.pooling == "mean"
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    del raw["riposte"]["model_type"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="lost the backbone's model_type"):
        Reranker.load(tmp_path / "m")
    raw["riposte"]["model_type"] = "no-such-model"
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="model_type 'no-such-model' is unknown to transformers"):
        Reranker.load(tmp_path / "m")


# The "cls" head is the stock one, so the stock loaders may score it: on contexts that fit max_length they must give
# riposte's scores exactly (float rounding: measured at most 9e-6 on logits spread over 7 to 16 units).
CLS_MAX_LENGTH = 48


@pytest.fixture(scope="module", params=["bert", "deberta"])
def cls_model(request, tmp_path_factory):
    """(riposte's reranker, its saved directory, CrossEncoder on it): a widened tiny "cls" cross-encoder."""
    from sentence_transformers import CrossEncoder

    from .conftest import write_tiny_bert, write_tiny_deberta

    root = tmp_path_factory.mktemp(f"cls-{request.param}")
    backbone = (write_tiny_bert if request.param == "bert" else write_tiny_deberta)(root / "backbone")
    rr = widen(Reranker.from_backbone(backbone, RerankerConfig(pooling="cls", max_length=CLS_MAX_LENGTH)))
    rr.save(root / "m", model_card="# card\n")
    return rr, root / "m", CrossEncoder(str(root / "m"))


WORD_LISTS = st.lists(st.sampled_from(WORDS + ["?", ".", ","]), min_size=1, max_size=6).map(" ".join)


@settings(max_examples=25, deadline=None)
@given(context=st.lists(WORD_LISTS, max_size=4), candidates=st.lists(WORD_LISTS, min_size=1, max_size=4))
def test_cross_encoder_gives_riposte_scores_for_a_cls_reranker(cls_model, context, candidates):
    rr, _, ce = cls_model
    assume(max(len(ids) for ids in rr.encode(context, candidates)) <= CLS_MAX_LENGTH)  # the pair fits max_length
    ours = rr.score(context, candidates)
    theirs = ce.predict([(" | ".join(context), c) for c in candidates])
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=5e-5)


def test_transformers_give_riposte_scores_for_a_cls_reranker_and_the_card_says_how(cls_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    rr, directory, ce = cls_model
    ours = rr.score(CONTEXT, CANDIDATES)
    assert np.ptp(ours) > 1.0  # widened: the inputs move the score
    query = " | ".join(CONTEXT)
    pipe = pipeline("text-classification", model=str(directory))
    np.testing.assert_allclose([pipe({"text": query, "text_pair": c})["score"] for c in CANDIDATES], ours, atol=5e-5)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.inference_mode():
        batch = tokenizer([query] * len(CANDIDATES), CANDIDATES, padding=True, truncation=True, return_tensors="pt")
        assert "token_type_ids" not in batch
        np.testing.assert_allclose(model(**batch).logits[:, 0].numpy(), ours, atol=5e-5)
        # The type ids are why the saved tokenizer sends none: on BERT, riposte's zeros and the stock ones differ.
        typed = tokenizer([query] * len(CANDIDATES), CANDIDATES, padding=True, return_token_type_ids=True,
                          return_tensors="pt")
        moved = np.abs(model(**typed).logits[:, 0].numpy() - ours).max()
        assert moved > 1e-2 if model.config.model_type == "bert" else moved < 5e-5
    raw = json.loads((directory / "config.json").read_text())
    assert raw["model_type"] == raw["riposte"]["model_type"] == model.config.model_type
    card = (directory / "README.md").read_text()
    flat = " ".join(card.split())  # the note is wrapped
    assert card.count("## Loading it with other libraries") == 1 and 'CrossEncoder(dir).predict([(" | ".join(context)' in card
    assert f"fits {CLS_MAX_LENGTH} tokens" in flat and "Riposte drops whole context lines, oldest first" in flat
    assert "refuse" not in flat


def test_past_max_length_a_cls_reranker_is_cut_as_the_card_says(cls_model):
    rr, _, ce = cls_model
    context = [f"{w} how are you today and tomorrow" for w in ("hello", "fine", "good", "cat", "dog", "tea")]
    candidate = "i like to eat pizza"
    (ours,) = rr.encode(context, [candidate])
    theirs = ce.tokenizer(" | ".join(context), candidate, truncation=True)["input_ids"]
    full = ce.tokenizer(" | ".join(context), add_special_tokens=False)["input_ids"]
    mine, their_sep = ours.index(rr.sep_id), theirs.index(rr.sep_id)
    assert len(ours) <= CLS_MAX_LENGTH == len(theirs)
    assert theirs[their_sep:] == ours[mine:]  # both keep the candidate whole, between its [SEP]s
    # Riposte keeps the newest whole lines; the tokenizer keeps the newest tokens, wherever that cuts.
    kept = ours[:mine].count(rr.delim_id) + 1
    assert kept < len(context) and ours == rr.encode(context[-kept:], [candidate])[0]
    assert theirs[1:their_sep] == full[len(full) - (their_sep - 1):]
    assert theirs != ours


def test_a_cls_reranker_whose_tokenizer_pairs_otherwise_is_refused(tiny_bert, tmp_path):
    """A RoBERTa-like template, `[CLS] A [SEP] [SEP] B [SEP]`, in the saved tokenizer: the stock encoding is not
    riposte's, so the stock head would be fed input it never saw."""
    import shutil

    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    source = AutoTokenizer.from_pretrained(tiny_bert)
    backend = source.backend_tokenizer
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", source.cls_token_id), ("[SEP]", source.sep_token_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]",
                                        pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
    backbone = tmp_path / "backbone"
    shutil.copytree(tiny_bert, backbone, ignore=shutil.ignore_patterns("*token*", "vocab.txt"))
    tokenizer.save_pretrained(backbone)
    rr = Reranker.from_backbone(backbone, RerankerConfig(pooling="cls"))
    before = rr.score(CONTEXT, CANDIDATES)
    rr.save(tmp_path / "m", model_card="# card\n")
    assert_refused(tmp_path / "m")
    flat = " ".join((tmp_path / "m" / "README.md").read_text().split())
    assert "Other libraries refuse this directory" in flat and "encoding of two texts is not riposte's" in flat
    np.testing.assert_allclose(Reranker.load(tmp_path / "m", dtype=torch.float32).score(CONTEXT, CANDIDATES), before,
                               rtol=1e-5, atol=1e-5)
