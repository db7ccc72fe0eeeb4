"""The sense model: length-matched pairs, end-to-end training that learns, and the editor carrying it."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch

from corpus.text import words
from markov import Splice, Splices
from reranker.editor import FEATURES, Editor, EditorConfig
from reranker.runtime import unit
from reranker.sense import (
    SenseModel,
    SenseTraining,
    batch_order,
    held_out_auc,
    held_out_aucs,
    length_matched_pairs,
    mine_hard,
    splice_labels,
    train_sense,
)

STEPS = 60  # training steps of the tiny runs below: fixed, so they learn the same on any machine

CONTEXT = ["hello how are you", "i like to eat pizza"]
CANDIDATES = ["yes pizza is great", "the cat and the dog", "good night", "what is your name", "i like tea"]
# "Human" lines use one half of the tiny vocabulary, "writer" lines the other: learnable only by reading the words.
HUMAN_WORDS = "hello hi how are you fine thanks good what is your name my the movie cat yes".split()
WRITER_WORDS = "dog no maybe where do live in city town ok sure why not because it was great".split()


def lines(vocab: list[str], n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocab, size=int(rng.integers(2, 7)))) for _ in range(n)]


def test_pairs_match_word_counts_and_use_each_line_once():
    human = ["a b", "a b c", "a", "a b c d e f g"]
    writer = ["x y", "x y z", "p q", "x y z w"]
    pairs = length_matched_pairs(human, writer, min_words=2, max_words=5, seed=0)
    matched = dict(pairs)
    assert set(matched) == {"a b", "a b c"}  # "a" is too short, the 7-word line too long, "x y z w" unmatched
    assert matched["a b c"] == "x y z" and matched["a b"] in {"x y", "p q"}
    assert all(len(words(h)) == len(words(w)) for h, w in pairs)
    assert len({w for _, w in pairs}) == len(pairs)  # no writer line twice
    assert pairs == length_matched_pairs(human, writer, min_words=2, max_words=5, seed=0)  # seeded


def test_bucketed_batches_cover_every_line_once_and_hold_lines_of_like_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 26, size=1000)
    bucketed = batch_order(lengths, 32, 8, np.random.default_rng(1))
    plain = batch_order(lengths, 32, 0, np.random.default_rng(1))
    for batches in (bucketed, plain):  # one epoch: every index exactly once, batches of 32 but one short
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert sorted(len(b) for b in batches)[1:] == [32] * (len(batches) - 1)

    def spread(batches):  # the padding a batch pays: its longest line against its mean
        return np.mean([lengths[b].max() - lengths[b].mean() for b in batches if len(b) == 32])

    assert spread(bucketed) < 0.25 * spread(plain)
    # the batches themselves come in a shuffled order, not shortest first
    firsts = [int(lengths[b].min()) for b in bucketed]
    assert firsts != sorted(firsts)
    again = batch_order(lengths, 32, 8, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))  # seeded


def test_training_learns_what_separates_human_from_writer_lines(tiny_bert):
    torch.manual_seed(0)
    model = SenseModel.from_backbone(tiny_bert)
    pairs = length_matched_pairs(lines(HUMAN_WORDS, 600, 1), lines(WRITER_WORDS, 1500, 2), seed=0)
    held = length_matched_pairs(lines(HUMAN_WORDS, 200, 3), lines(WRITER_WORDS, 600, 4), seed=1)
    report = train_sense(model, pairs, held, deadline=math.inf, max_steps=STEPS,
                         training=SenseTraining(batch_size=32, lr=1e-3, head_lr=1e-2, warmup_steps=2), progress=False)
    assert report["steps"] == STEPS and report["lines"] == 32 * report["steps"]
    assert report["held_out_auc"] > 0.9 > report["held_out_auc_before"] - 0.3
    assert held_out_auc(model, held) == pytest.approx(report["held_out_auc"], abs=1e-6)  # the kept state
    assert report["history"][-1]["event"] == "eval"


def test_splice_labels_mark_the_first_token_of_each_spliced_word_and_a_spliced_end(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    text = "hello how are you"
    found = [None, Splice((text.index("are"),), True), Splice((0, text.index("you")), False)]
    ids, labels = splice_labels(tokenizer, [text] * 3, found, 40)
    inner = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == [[tokenizer.cls_token_id, *inner, tokenizer.sep_token_id]] * 3  # as BiEncoder.tokenize makes them
    assert labels == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1], [0, 1, 0, 0, 1, 0]]
    # cut to max_length: a splice past the cut marks nothing, and neither does a spliced end no longer in view
    ids, labels = splice_labels(tokenizer, [text], [Splice((text.index("you"),), True)], 4)
    assert len(ids[0]) == 4 and labels == [[0, 0, 0, 0]]


def test_training_taught_where_the_writer_splices_learns_it_and_reports_it(tiny_bert):
    human = lines(HUMAN_WORDS, 600, 1)
    pairs = length_matched_pairs(human, lines(HUMAN_WORDS + WRITER_WORDS, 1500, 2), seed=0)
    held = length_matched_pairs(lines(HUMAN_WORDS, 200, 3), lines(WRITER_WORDS, 600, 4), seed=1)
    finder = Splices(human, order=1).find
    training = SenseTraining(batch_size=32, lr=1e-3, head_lr=1e-2, warmup_steps=2, splice_weight=1.0)
    runs = {}
    for weight in (1.0, 0.0):
        torch.manual_seed(0)
        model = SenseModel.from_backbone(tiny_bert)
        report = train_sense(model, pairs, held, deadline=math.inf, max_steps=STEPS, progress=False, splices=finder,
                             training=SenseTraining(**{**training.__dict__, "splice_weight": weight}))
        runs[weight] = (model.head.weight.detach().clone(), report, model)
    (head, report, model), (plain_head, plain, plain_model) = runs[1.0], runs[0.0]
    curve = [h["splice_loss"] for h in report["history"] if "splice_loss" in h]
    assert len(curve) == STEPS // 20 and curve[-1] < 0.8 * curve[0]  # the token head learns where lines break
    writer_lines = [w for _, w in pairs]
    assert 0 < report["splices_per_writer_line"] <= max(s.count for s in finder(writer_lines))
    assert report["splice_weight"] == 1.0 and report["held_out_auc"] > 0.9
    assert plain["splice_weight"] == 0.0 and plain["splices_per_writer_line"] is None
    assert not any("splice_loss" in h for h in plain["history"])
    assert not torch.equal(head, plain_head)  # the splice loss reaches the encoder the line head reads
    # The token head is kept on the encoder: its largest logit over a line tells the held-out writer lines apart
    assert model.has_splice and not plain_model.has_splice and plain["held_out_auc_splice"] is None
    assert report["held_out_auc_splice"] > 0.8
    texts = [t for pair in held for t in pair]
    assert report["held_out_auc_splice"] == pytest.approx(held_out_aucs(model, held)[1], abs=1e-4)
    assert held_out_aucs(plain_model, held)[1] is None  # no head, no figure (not a chance-level 0.5)
    read = model.read_until(texts)
    assert read.done.all() and np.ptp(read.splice) > 0


def test_splices_need_a_fast_tokenizer(tiny_bert):
    model = SenseModel.from_backbone(tiny_bert)
    fast = model.encoder.tokenizer

    class Slow:  # a tokenizer without character offsets (a python-backed one)
        is_fast = False

        def __getattr__(self, name):
            return getattr(fast, name)

    model.encoder.tokenizer = Slow()
    pairs = length_matched_pairs(lines(HUMAN_WORDS, 100, 1), lines(WRITER_WORDS, 300, 2), seed=0)
    with pytest.raises(ValueError, match="fast tokenizer"):
        train_sense(model, pairs, [], deadline=math.inf, max_steps=1, progress=False,
                    training=SenseTraining(splice_weight=1.0),
                    splices=lambda texts: [Splice((), False)] * len(texts))
    with pytest.raises(ValueError, match="splice_weight"):
        SenseTraining(splice_weight=-1.0)


def permuted_replies() -> tuple[dict[str, str], dict[str, str], list[tuple[str, str]], list[str]]:
    """A relevance task no untrained encoder can read: each reply's context is its words mapped through a fixed
    permutation of the vocabulary. (mapping, reply -> context, length-matched train pairs, held-out replies)."""
    vocab = HUMAN_WORDS
    mapped = dict(zip(vocab, np.random.default_rng(7).permutation(vocab), strict=True))
    human = lines(vocab, 800, 1)
    contexts = {h: " ".join(mapped[w] for w in h.split()) for h in human}
    pairs = length_matched_pairs(human, lines(WRITER_WORDS, 2000, 2), seed=0)
    held = [h for h in lines(vocab, 400, 3) if h not in contexts][:200]
    return mapped, contexts, pairs, held


def test_training_with_contexts_learns_relevance_in_the_same_encoder(tiny_bert):
    # A reply's words are its context's words mapped through a fixed permutation of the vocabulary: no overlap, so
    # an untrained encoder cannot match them; only training on (context, reply) pairs can.
    mapped, contexts, pairs, held = permuted_replies()

    def recall_at_1(model: SenseModel) -> float:
        ctx = np.stack([model.context_vector([" ".join(mapped[w] for w in h.split())]) for h in held])
        cand = unit(model.encoder.embed(held)[0])
        return float(np.mean(np.argmax(ctx @ cand.T, axis=1) == np.arange(len(held))))

    torch.manual_seed(0)
    model = SenseModel.from_backbone(tiny_bert)
    before = recall_at_1(model)
    # A step count, not a time: the test learns the same on a fast machine and a loaded one.
    report = train_sense(model, pairs, [], deadline=math.inf, max_steps=STEPS, contexts=contexts, progress=False,
                         training=SenseTraining(batch_size=32, lr=2e-3, head_lr=1e-2, warmup_steps=2))
    assert report["relevance"] and any("relevance_loss" in h for h in report["history"])
    after = recall_at_1(model)
    assert after > max(0.2, 2 * before)
    # a relevance weight of 0 trains sense alone, contexts or not
    off = train_sense(SenseModel.from_backbone(tiny_bert), pairs, [], deadline=time.monotonic() + 1.0,
                      contexts=contexts, progress=False, training=SenseTraining(batch_size=32, relevance_weight=0))
    assert not off["relevance"]


def test_around_negatives_teach_that_a_line_of_the_contexts_own_words_is_not_its_reply(tiny_bert):
    # Replies use the context's words mapped through a permutation; the "around" line of a context is its own words
    # and one more that no batch line holds: a line that packs the context's words together. Untrained, and trained
    # on the batch's lines alone, the encoder often ranks it above the reply; only the around negatives say it is not.
    mapped, contexts, pairs, held = permuted_replies()

    def echo(context: str) -> str:
        return " ".join([*context.split(), "pizza"])

    def reply_beats_echo(model: SenseModel) -> float:
        ctx = [" ".join(mapped[w] for w in h.split()) for h in held]
        c = np.stack([model.context_vector([x]) for x in ctx])
        true, fake = unit(model.encoder.embed(held)[0]), unit(model.encoder.embed([echo(x) for x in ctx])[0])
        return float(np.mean((c * true).sum(1) > (c * fake).sum(1)))

    training = SenseTraining(batch_size=32, lr=2e-3, head_lr=1e-2, warmup_steps=2)
    shares, reports = {}, {}
    for name, around in (("without", None), ("with", lambda h: echo(contexts[h]) if h in contexts else None)):
        torch.manual_seed(0)
        model = SenseModel.from_backbone(tiny_bert)
        reports[name] = train_sense(model, pairs, [], deadline=math.inf, max_steps=STEPS, contexts=contexts,
                                    progress=False, training=training, around=around)
        shares[name] = reply_beats_echo(model)
    assert reports["without"]["around_negatives"] == 0
    assert reports["with"]["around_negatives"] == 16 * STEPS  # one per human line of every batch
    assert shares["with"] > max(0.8, shares["without"] + 0.2)
    # without contexts there is no relevance loss, and the around lines are not read
    off = train_sense(SenseModel.from_backbone(tiny_bert), pairs, [], deadline=math.inf, max_steps=2,
                      progress=False, training=training, around=lambda h: "a line")
    assert off["around_negatives"] == 0


def test_mining_keeps_the_lines_the_model_finds_most_human_at_each_length(tiny_bert):
    torch.manual_seed(0)
    model = SenseModel.from_backbone(tiny_bert)
    with torch.no_grad():
        model.head.weight.normal_()
    model.refresh()
    pool = lines(HUMAN_WORDS + WRITER_WORDS, 300, 5)
    model.encoder.model.train()  # as mid-training: mining reads in eval mode and gives train mode back
    hard, read = mine_hard(model, pool, top=0.25, max_length=40, bf16=False)
    assert read == len(pool) and model.encoder.model.training
    model.encoder.model.eval()
    logits = dict(zip(pool, model.logits(pool).tolist(), strict=True))
    by_length: dict[int, list[str]] = {}
    for line in pool:
        by_length.setdefault(len(words(line)), []).append(line)
    assert set(hard) <= set(pool) and len(hard) == sum(math.ceil(0.25 * len(v)) for v in by_length.values())
    for n, group in by_length.items():  # every word count keeps its own top quarter, by the model's logits
        kept = [line for line in hard if len(words(line)) == n]
        assert kept and min(logits[k] for k in kept) >= max(logits[g] for g in group if g not in kept) - 1e-4
    # past its deadline it reads nothing more, and picks among what it read
    assert mine_hard(model, pool, top=0.25, max_length=40, bf16=False, deadline=0.0) == ([], 0)


def test_mined_negatives_teach_what_random_writer_lines_never_show(tiny_bert):
    # Human lines use HUMAN_WORDS. The paired writer lines are human lines with one word turned into a
    # WRITER_WORDS word (easy). A tenth of the mining pool has "coffee" there instead (never in a human line nor
    # in a paired writer line): those look human to a model trained on the easy pairs, so mining picks them, and
    # only training on them teaches that "coffee" marks the writer.
    rng = np.random.default_rng(9)

    def marked(texts: list[str], marks: list[str]) -> list[str]:
        out = []
        for text in texts:
            ws = text.split()
            ws[int(rng.integers(len(ws)))] = str(rng.choice(marks))
            out.append(" ".join(ws))
        return out

    pairs = length_matched_pairs(lines(HUMAN_WORDS, 800, 1), marked(lines(HUMAN_WORDS, 2000, 2), WRITER_WORDS),
                                 seed=0)
    pool = marked(lines(HUMAN_WORDS, 1800, 6), WRITER_WORDS) + marked(lines(HUMAN_WORDS, 200, 7), ["coffee"])
    pool = [pool[i] for i in rng.permutation(len(pool))]
    held = length_matched_pairs(lines(HUMAN_WORDS, 300, 3), marked(lines(HUMAN_WORDS, 600, 8), ["coffee"]), seed=1)
    training = dict(batch_size=32, lr=1e-3, head_lr=1e-2, warmup_steps=2, relevance_weight=0)

    def run(mine_at: tuple[float, ...]) -> tuple[SenseModel, dict]:
        torch.manual_seed(0)
        model = SenseModel.from_backbone(tiny_bert)
        report = train_sense(model, pairs, held, deadline=math.inf, max_steps=STEPS, progress=False,
                             mine_pool=pool, training=SenseTraining(**training, mine_at=mine_at, mine_lines=2000))
        return model, report

    plain_model, plain = run(())
    _, mined = run((0.3,))
    assert plain["mined"] == [] and [r["step"] for r in mined["mined"]] == [18]
    assert mined["mined"][0]["offered"] == mined["mined"][0]["read"] == 2000 and mined["mined"][0]["pairs"] > 16
    assert any(h["event"] == "mine" for h in mined["history"])
    # what mining finds: the coffee lines are a tenth of the pool and well over a fifth of what the model mines
    hard, _ = mine_hard(plain_model, pool, top=0.25, max_length=40, bf16=False)
    assert sum("coffee" in h.split() for h in hard) > 0.2 * len(hard)
    # and what training on them does: human lines told from coffee lines with a quarter of the errors or fewer
    # (measured: 0.2% of pairs misordered against 2.9%)
    assert 1 - mined["held_out_auc"] < 0.25 * (1 - plain["held_out_auc"])


def test_mining_settings_are_checked():
    with pytest.raises(ValueError, match="mine_at"):
        SenseTraining(mine_at=(0.7, 0.4))
    with pytest.raises(ValueError, match="mine_at"):
        SenseTraining(mine_at=(1.0,))
    with pytest.raises(ValueError, match="mine_top"):
        SenseTraining(mine_top=0.0)


def test_too_few_pairs_is_a_clear_error(tiny_bert):
    with pytest.raises(ValueError, match="length-matched pairs"):
        train_sense(SenseModel.from_backbone(tiny_bert), [("hi", "no")], [], deadline=time.monotonic() + 1)


@pytest.fixture(scope="module")
def sensible_editor(tiny_bert) -> Editor:
    torch.manual_seed(0)
    editor = Editor.from_backbone(tiny_bert, dtype=torch.float32)
    sense = SenseModel.from_backbone(tiny_bert)
    with torch.no_grad():
        sense.head.weight.normal_()
    sense.refresh()
    return editor.with_sense(sense).with_config(EditorConfig(weights=(5.0, 1.0, 0.5, 2.0, 1.5), bias=0.1))


def test_the_sense_features_are_its_logit_and_its_cosine_and_enter_the_score(sensible_editor):
    editor = sensible_editor
    reading = editor.read_texts(CANDIDATES)
    assert reading.done.all() and FEATURES[3:5] == ("sense", "sense_context")
    np.testing.assert_allclose(reading.sense, editor.sense.logits(CANDIDATES), rtol=1e-5, atol=1e-6)
    feats = editor.features(editor.context_vectors(CONTEXT), reading, editor.context_asks(CONTEXT))
    np.testing.assert_allclose(feats[:, 3], reading.sense, rtol=1e-6)
    # the fifth: the sense encoder's own cosine between the joined context and the candidate
    ctx = unit(editor.sense.encoder.embed([" ".join(CONTEXT)], keep_end=True)[0])[0]
    cand = unit(editor.sense.encoder.embed(CANDIDATES)[0])
    np.testing.assert_allclose(feats[:, 4], cand @ ctx, rtol=1e-5, atol=1e-5)
    expected = feats @ np.asarray(editor.config.weights, dtype=np.float32) + np.float32(0.1)
    np.testing.assert_allclose(editor.score(CONTEXT, CANDIDATES), expected, rtol=1e-4, atol=1e-5)
    without = editor.with_sense(None).score(CONTEXT, CANDIDATES)
    np.testing.assert_allclose(editor.score(CONTEXT, CANDIDATES) - without, 2.0 * feats[:, 3] + 1.5 * feats[:, 4],
                               rtol=1e-4, atol=1e-4)
    pairs = [(CONTEXT, c) for c in CANDIDATES] + [(["good night"], CANDIDATES[0])]
    np.testing.assert_allclose(editor.score_pairs(pairs)[:-1], editor.score(CONTEXT, CANDIDATES), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(editor.score_pairs(pairs)[-1], editor.score(["good night"], CANDIDATES[:1])[0],
                               rtol=1e-4, atol=1e-4)


def test_an_editor_with_sense_saves_and_loads_the_same_scores(sensible_editor, tmp_path):
    import reranker

    sensible_editor.save(tmp_path / "ed")
    assert (tmp_path / "ed" / "sense" / "sense_head.safetensors").is_file()
    raw = json.loads((tmp_path / "ed" / "config.json").read_text())["riposte"]
    assert raw["format_version"] == 5 and raw["weights"]["sense"] == 2.0 and raw["weights"]["sense_context"] == 1.5
    assert raw["weights"]["splice"] == 0.0 and not (tmp_path / "ed" / "sense" / "token_head.safetensors").exists()
    again = reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert again.sense is not None
    np.testing.assert_allclose(again.score(CONTEXT, CANDIDATES), sensible_editor.score(CONTEXT, CANDIDATES),
                               rtol=1e-5, atol=1e-5)
    many = again.score_many([(CONTEXT, CANDIDATES), (["good night"], CANDIDATES[:2])])
    np.testing.assert_allclose(many[0][0], again.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)


def test_a_version_1_editor_loads_with_no_sense(sensible_editor, tmp_path):
    import reranker

    sensible_editor.with_sense(None).with_config(EditorConfig(weights=(3.0, 1.0, 0.5))).save(tmp_path / "ed")
    path = tmp_path / "ed" / "config.json"
    raw = json.loads(path.read_text())
    raw["riposte"]["format_version"] = 1
    for name in ("sense", "sense_context", "asks_back", "splice"):
        del raw["riposte"]["weights"][name]
    path.write_text(json.dumps(raw))
    old = reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert old.sense is None and old.config.weights == (3.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0)


def test_a_version_2_editor_loads_with_no_sense_context_weight(sensible_editor, tmp_path):
    import reranker

    sensible_editor.save(tmp_path / "ed")
    path = tmp_path / "ed" / "config.json"
    raw = json.loads(path.read_text())
    raw["riposte"]["format_version"] = 2
    for name in ("sense_context", "asks_back", "splice"):
        del raw["riposte"]["weights"][name]
    path.write_text(json.dumps(raw))
    old = reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert old.sense is not None and old.config.weights == (5.0, 1.0, 0.5, 2.0, 0.0, 0.0, 0.0)


def test_a_mix_that_weighs_a_missing_sense_model_is_refused(sensible_editor, tmp_path):
    import shutil

    import reranker

    sensible_editor.save(tmp_path / "ed")
    shutil.rmtree(tmp_path / "ed" / "sense")
    with pytest.raises(FileNotFoundError, match="no sense/ but its mix weighs sense"):
        reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)


def test_an_editor_whose_sense_model_shares_its_encoder_reads_each_candidate_once(sensible_editor, tmp_path):
    import reranker

    sense = SenseModel(sensible_editor.biencoder, sensible_editor.sense.head)
    shared = sensible_editor.with_sense(sense)
    assert shared.shared and not sensible_editor.shared and shared.cost is shared.biencoder.cost
    reading = shared.read_texts(CANDIDATES)
    np.testing.assert_allclose(reading.sense, sense.logits(CANDIDATES), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(reading.sense_vecs, reading.vecs)
    feats = shared.features(shared.context_vectors(CONTEXT), reading, 0.0)
    np.testing.assert_allclose(feats[:, 4], feats[:, 0], rtol=1e-6)  # one encoder: one context cosine
    calls = []
    forward = shared.biencoder._forward
    shared.biencoder._forward = lambda batch: calls.append(len(batch)) or forward(batch)
    shared.score(["a fresh context"], ["a fresh candidate line"])
    # the joined context, the last line and the candidate, once each: no sense read of either (unshared: 5)
    assert sum(calls) == 3
    shared.biencoder._forward = forward

    shared.save(tmp_path / "ed")
    assert not (tmp_path / "ed" / "sense" / "config.json").exists()  # the head alone: the encoder is biencoder/
    again = reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert again.shared and again.config.shared_encoder
    np.testing.assert_allclose(again.score(CONTEXT, CANDIDATES), shared.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)


def test_the_first_stage_is_distilled_from_the_encoder_that_carries_the_relevance(sensible_editor):
    from reranker.recipes import first_stage_source

    assert first_stage_source(sensible_editor) == (sensible_editor.biencoder, (5.0, 1.0))  # zero-shot leads
    learned = sensible_editor.with_config(EditorConfig(weights=(-2.2, 2.0, 0.1, -0.5, 17.0)))
    encoder, weights = first_stage_source(learned)
    assert encoder is learned.sense.encoder and weights == (1.0, 0.0)
    # never a negative weight: the first stage orders candidates by relevance, not against it
    negative = sensible_editor.with_sense(None).with_config(EditorConfig(weights=(-1.0, -2.0, 0.5)))
    assert first_stage_source(negative) == (negative.biencoder, (1.0, 0.0))
    mixed = sensible_editor.with_sense(None).with_config(EditorConfig(weights=(-1.0, 3.0, 0.5)))
    assert first_stage_source(mixed)[1] == (0.0, 3.0)


def test_many_contexts_embed_in_one_batch_each_and_match_one_at_a_time(tiny_bert):
    torch.manual_seed(0)
    editor = Editor.from_backbone(tiny_bert, config=EditorConfig()).with_sense(SenseModel.from_backbone(tiny_bert))
    contexts = [["hello how are you", "fine thanks"], ["i like pizza"], [], ["hello how are you", "fine thanks"]]
    alone = [editor.context_vectors(c) for c in contexts]
    editor._contexts.clear()
    calls = []
    for model in (editor.biencoder, editor.sense.encoder):
        original = model.embed
        model.embed = lambda texts, _o=original, **kw: calls.append(len(texts)) or _o(texts, **kw)
    many = editor.context_vectors_many(contexts)
    assert calls == [4, 2]  # two distinct non-empty contexts: (joined, last line) each, then the sense encoder's
    for a, b in zip(alone, many, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not many[2].any()  # an empty context is zeros
    assert editor.context_vectors_many(contexts[:2]) and calls == [4, 2]  # cached now: no forward


@pytest.mark.parametrize("with_sense", [True, False])
def test_kept_readings_score_as_reading_does_for_any_context(sensible_editor, with_sense):
    editor = sensible_editor if with_sense else sensible_editor.with_sense(None)
    editor = editor.with_config(EditorConfig(weights=(*editor.config.weights[:5], -0.7), bias=0.1))  # asks_back too
    kept = editor.keep(CANDIDATES)
    assert kept.shape == (len(CANDIDATES), editor.kept_width) and kept.dtype == np.float32
    if with_sense:
        np.testing.assert_allclose(kept[:, -1], editor.sense.logits(CANDIDATES), rtol=1e-5, atol=1e-5)
    for context in (CONTEXT, ["good night"], ["what is your name", "i like tea", "the cat and the dog"],
                    ["i like tea", "what is your name?"]):
        # stored as float16 by the reply index: the verdict moves by no more than rounding
        for stored, tol in ((kept, 1e-4), (kept.astype(np.float16), 2e-2)):
            np.testing.assert_allclose(editor.score_kept(context, stored, CANDIDATES), editor.score(context, CANDIDATES),
                                       rtol=tol, atol=tol)
    assert editor.score_kept(CONTEXT, kept[:0], []).shape == (0,)
    with pytest.raises(ValueError, match="kept readings must be"):
        editor.score_kept(CONTEXT, kept[:, :-1], CANDIDATES)
    with pytest.raises(ValueError, match="4 kept readings for 5 candidates"):
        editor.score_kept(CONTEXT, kept[:-1], CANDIDATES)


def test_evaluation_reads_each_text_once_per_encoder_and_scores_as_without_a_cache(tiny_bert, monkeypatch):
    import reranker.evaluate
    from corpus.documents import Document, Line
    from reranker.evaluate import WriterPools, evaluate_documents

    def fresh() -> Editor:  # not the module's editor: the caches this test turns on must not reach other tests
        torch.manual_seed(0)
        sense = SenseModel.from_backbone(tiny_bert)
        with torch.no_grad():
            sense.head.weight.normal_()
        sense.refresh()
        return Editor.from_backbone(tiny_bert, dtype=torch.float32).with_sense(sense).with_config(
            EditorConfig(weights=(5.0, 1.0, 0.5, 2.0, 1.5)))

    vocab = HUMAN_WORDS + WRITER_WORDS
    docs = [Document(f"d{d}", [Line(t) for t in lines(vocab, 10, seed=d)]) for d in range(6)]
    pool = WriterPools([lines(WRITER_WORDS, 30, seed=99)], [0] * len(docs))
    counts = dict(writer=pool, n_select10=8, n_select100=6, n_writer=8, n_swap=6, progress=False)

    plain = fresh()
    reads = {"biencoder": [], "sense": []}
    for name, encoder in (("biencoder", plain.biencoder), ("sense", plain.sense.encoder)):
        encoder._forward = (lambda real, log: lambda batch: log.extend(batch) or real(batch))(encoder._forward, reads[name])
    cached = evaluate_documents(plain, docs, **counts)["scorers"]["model"]
    assert plain.biencoder.cache and plain.sense.encoder.cache  # evaluation turned them on
    caches = {"biencoder": plain.biencoder.cache, "sense": plain.sense.encoder.cache}
    for name in reads:  # every text read (a candidate, or a context cut at its end) was read once, and kept
        assert len(reads[name]) == len(caches[name]), name

    uncached = fresh()
    monkeypatch.setattr(reranker.evaluate, "remember_readings", lambda scorer: None)  # every text read anew
    again = evaluate_documents(uncached, docs, **counts)["scorers"]["model"]
    assert uncached.biencoder.cache is None and uncached.sense.encoder.cache is None
    for measure in ("select10", "select100", "writer99"):
        assert cached[measure]["ranks"] == again[measure]["ranks"], measure
    np.testing.assert_array_equal(cached["swap"]["wins"], again["swap"]["wins"])


def with_token_head(sense: SenseModel, seed: int = 1) -> SenseModel:
    """The same sense model (weights shared) on a new encoder over its torch model that carries a random token head."""
    from reranker.biencoder import BiEncoder

    torch.manual_seed(seed)
    old = sense.encoder
    encoder = BiEncoder(old.model, old.tokenizer, old.config, dtype=None,
                        token_head=torch.nn.Linear(old.hidden_size, 1))
    return SenseModel(encoder, sense.head)


def test_the_splice_feature_is_the_token_heads_largest_logit_and_enters_the_score(sensible_editor, tmp_path):
    import reranker
    from reranker.runtime import max_token_logit, pad_batch

    sense = with_token_head(sensible_editor.sense)
    weights = (*sensible_editor.config.weights[:6], -0.8)
    editor = sensible_editor.with_sense(sense).with_config(EditorConfig(weights=weights, bias=0.1))
    assert FEATURES[6] == "splice" and editor.has_splice and not sensible_editor.has_splice
    with pytest.raises(ValueError, match="no token head"):  # a weight on a logit nothing gives
        sensible_editor.with_config(EditorConfig(weights=weights))
    # by hand: the head on every token's hidden state, the largest over the real tokens but [CLS]
    encoder = sense.encoder
    ids = encoder.tokenize(CANDIDATES)
    input_ids, mask = pad_batch(ids, encoder.pad_id, encoder.device)
    with torch.no_grad():
        hidden = encoder.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        logits = encoder.token_head(hidden.float())[..., 0]
        expected = [max(logits[i, 1 : len(x)].tolist()) for i, x in enumerate(ids)]
        np.testing.assert_allclose(max_token_logit(hidden, mask, encoder.token_head).numpy(), expected, rtol=1e-5)
    reading = editor.read_texts(CANDIDATES)
    np.testing.assert_allclose(reading.splice, expected, rtol=1e-4, atol=1e-5)
    feats = editor.features(editor.context_vectors(CONTEXT), reading, editor.context_asks(CONTEXT))
    np.testing.assert_allclose(feats[:, 6], reading.splice, rtol=1e-6)
    np.testing.assert_allclose(editor.score(CONTEXT, CANDIDATES) - sensible_editor.score(CONTEXT, CANDIDATES),
                               -0.8 * reading.splice, rtol=1e-4, atol=1e-4)
    # kept readings carry it (one column more, the sense logit still last) and score as reading does
    kept = editor.keep(CANDIDATES)
    assert kept.shape[1] == sensible_editor.kept_width + 1 == editor.kept_width
    np.testing.assert_allclose(kept[:, -1], reading.sense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(editor.score_kept(CONTEXT, kept, CANDIDATES), editor.score(CONTEXT, CANDIDATES),
                               rtol=1e-4, atol=1e-4)
    # saved with the sense encoder, loaded back the same
    editor.save(tmp_path / "ed")
    assert (tmp_path / "ed" / "sense" / "token_head.safetensors").is_file()
    again = reranker.load(tmp_path / "ed", dtype=torch.float32, backend="torch", warmup=False)
    assert again.has_splice and again.config.weights[6] == pytest.approx(-0.8)
    np.testing.assert_allclose(again.score(CONTEXT, CANDIDATES), editor.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)
    # a mix that weighs the splice logit without the head that gives it is refused
    (tmp_path / "ed" / "sense" / "token_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no token head"):
        reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)


def test_a_shared_encoder_with_a_token_head_reads_the_splice_in_the_same_forward(sensible_editor, tmp_path):
    import reranker

    sense = with_token_head(SenseModel(sensible_editor.biencoder, sensible_editor.sense.head))
    shared = Editor(sense.encoder, sensible_editor.fluency, EditorConfig(weights=(5.0, 1.0, 0.5, 2.0, 0.0, 0.0, 1.2)),
                    sense)
    assert shared.shared and shared.has_splice
    reading = shared.read_texts(CANDIDATES)
    np.testing.assert_allclose(reading.splice, sense.read_until(CANDIDATES).splice, rtol=1e-5, atol=1e-5)
    assert np.ptp(reading.splice) > 0
    shared.save(tmp_path / "ed")
    assert (tmp_path / "ed" / "biencoder" / "token_head.safetensors").is_file()
    again = reranker.load(tmp_path / "ed", dtype=torch.float32, backend="torch", warmup=False)
    assert again.shared and again.has_splice
    np.testing.assert_allclose(again.score(CONTEXT, CANDIDATES), shared.score(CONTEXT, CANDIDATES), rtol=1e-5, atol=1e-5)


def test_a_version_4_editor_loads_with_no_splice_weight(sensible_editor, tmp_path):
    import reranker

    sensible_editor.save(tmp_path / "ed")
    path = tmp_path / "ed" / "config.json"
    raw = json.loads(path.read_text())
    raw["riposte"]["format_version"] = 4
    del raw["riposte"]["weights"]["splice"]
    path.write_text(json.dumps(raw))
    old = reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
    assert old.config.weights == (5.0, 1.0, 0.5, 2.0, 1.5, 0.0, 0.0) and not old.has_splice
    raw["riposte"]["weights"]["splice"] = 1.0  # a version-4 file names six features, no more
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="must name exactly"):
        reranker.load(tmp_path / "ed", dtype=torch.float32, warmup=False)
