"""The default recipe's pieces: the fluency head learns, the mix finds the signal, bad input is refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from corpus.documents import Document, Line
from reranker.editor import FluencyHead
from reranker.recipes import DefaultRecipe, around_negatives, fit_mix, topic_starts, train_fluency
from reranker.sense import SenseTraining


def test_fluency_head_learns_a_separable_problem_and_reports_held_out_figures():
    rng = np.random.default_rng(0)
    n, h = 600, 8
    x = rng.normal(size=(n, h + 2)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).astype(np.float32)  # "human" is a direction of the embedding
    head = FluencyHead(h, width=16)
    report = train_fluency(head, x, y, seed=0, max_epochs=60, lr=3e-3)
    assert report["accuracy"] > 0.9 and report["auc"] > 0.95
    assert report["n_val"] == 60 and report["n_train"] == 540
    with torch.no_grad():
        z = head(torch.from_numpy(x)).numpy()
    assert ((z > 0) == (y > 0)).mean() > 0.9


def test_fluency_training_is_reproducible_under_a_seed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x[:, 1] > 0).astype(np.float32)
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        head = FluencyHead(4, width=8)
        train_fluency(head, x, y, seed=3, max_epochs=5)
        outs.append([p.detach().clone() for p in head.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outs, strict=True))


def test_fluency_training_refuses_one_class_or_too_little_data():
    head = FluencyHead(4, width=8)
    with pytest.raises(ValueError, match="both human"):
        train_fluency(head, np.zeros((40, 6), np.float32), np.ones(40))
    with pytest.raises(ValueError, match="at least 20"):
        train_fluency(head, np.zeros((5, 6), np.float32), np.array([0, 1, 0, 1, 0]))


def test_fit_mix_puts_weight_on_the_feature_that_finds_the_true_candidate():
    rng = np.random.default_rng(0)
    cases, k = 200, 12
    feats = rng.normal(size=(cases, k, 3)).astype(np.float32)
    feats[:, 0, 2] += 2.0  # only the third feature marks the true (first) candidate
    w = fit_mix(feats, init=(1.0, 1.0, 0.0))
    assert w[2] > 1.0 and abs(w[0]) < 0.5 * w[2] and abs(w[1]) < 0.5 * w[2]
    with pytest.raises(ValueError, match="feats must be"):
        fit_mix(feats[:, :, :2])
    # A held weight stays as given, and the others fit around it: here the second gives way to the held third.
    held = fit_mix(feats, init=(1.0, 1.0, 0.0), fixed={2: -1.0})
    assert held[2] == -1.0 and abs(held[0]) < 0.5 and abs(held[1]) < 0.5
    with pytest.raises(ValueError, match="fixed names features"):
        fit_mix(feats, init=(1.0, 1.0, 0.0), fixed={3: 0.0})


def test_recipe_config_checks():
    with pytest.raises(ValueError, match="max_minutes"):
        DefaultRecipe(max_minutes=0)
    with pytest.raises(ValueError, match="max_train_lines"):
        DefaultRecipe(max_train_lines=10)
    with pytest.raises(ValueError, match="sense_seeded_share"):
        DefaultRecipe(sense_seeded_share=1.5)
    with pytest.raises(ValueError, match="sense_lr"):
        DefaultRecipe(sense_lr=0)
    with pytest.raises(ValueError, match="switch_share"):
        DefaultRecipe(switch_share=1.5)
    with pytest.raises(ValueError, match="lr and head_lr"):
        SenseTraining(lr=-1e-4)


def test_topic_starts_are_content_words_as_often_as_said():
    lines = ["I like pizza and pizza likes me", "the movie was great", "ok", "2 cats"] * 5
    starts = topic_starts(lines, seed=0)
    assert set(starts) == {"like", "pizza", "likes", "movie", "great", "ok", "cats"}  # no stopwords, no numbers
    assert starts.count("pizza") == 10 and starts.count("movie") == 5
    assert topic_starts(lines, seed=0) == starts and len(topic_starts(lines, seed=0, n=3)) == 3


def test_around_negatives_are_writer_lines_through_the_words_before_a_line():
    from markov import MarkovModel

    talk = [["we went hiking in the mountains", "the mountains were cold and windy", "did you see any bears"],
            ["my sister plays the violin", "the violin sounds lovely at night", "she practises every evening"]]
    docs = [Document(f"d{d}", [Line(t) for t in lines]) for d, lines in enumerate(talk * 3)]
    writer = MarkovModel.build((t, 1.0) for lines in talk for t in lines)
    around = around_negatives(writer, docs, seed=0)
    line = around("did you see any bears")  # its context: the two lines about the mountains
    assert line is not None and line != "did you see any bears"
    assert {"mountains", "cold", "windy", "hiking", "went"} & set(line.lower().split())
    assert around("we went hiking in the mountains") is None  # a conversation's first line has no context
    assert around("a line no conversation holds") is None
    with pytest.raises(ValueError, match="backward table"):  # a writer saved before it could write around words
        around_negatives(SimpleNamespace(backward=None), docs)
    one, two = around_negatives(writer, docs, seed=3), around_negatives(writer, docs, seed=3)
    asked = ["she practises every evening", "did you see any bears"] * 3
    first = [one(x) for x in asked]
    assert first == [two(x) for x in asked] and all(first)  # seeded, and a line for every line with a context


def test_presets_and_their_overrides():
    assert DefaultRecipe.preset("default") == DefaultRecipe()
    large = DefaultRecipe.preset("large", seed=3, max_minutes=None)
    assert large.max_minutes == 60 and large.max_train_lines > DefaultRecipe().max_train_lines and large.seed == 3
    assert DefaultRecipe.preset("default", max_minutes=2.5).max_minutes == 2.5
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        DefaultRecipe.preset("huge")
    assert DefaultRecipe().sense_mine_at == () and DefaultRecipe.preset("large", sense_mine_at=None).sense_mine_at == ()
    assert DefaultRecipe.preset("default", sense_mine_at=(0.35, 0.65)).sense_mine_at == (0.35, 0.65)
    with pytest.raises(ValueError, match="sense_mine_at must be increasing fractions"):
        DefaultRecipe.preset("default", sense_mine_at=(0.65, 0.35))


def test_a_bad_mining_schedule_is_a_clear_cli_error(tmp_path, capsys):
    from reranker.__main__ import main

    assert main(["train", "--default", "--sense-mine-at", "1.5", "--out", str(tmp_path / "editor")]) == 2
    assert "sense_mine_at must be increasing fractions within (0, 1), got (1.5,)" in capsys.readouterr().err
    assert not (tmp_path / "editor").exists()
    # a dump is not read when the flag is wrong, nor does a cross-encoder take it
    assert main(["train", "--dump", str(tmp_path / "none"), "--sense-mine-at", "0.5", "0.2"]) == 2
    assert "increasing fractions" in capsys.readouterr().err
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "cross", "--sense-mine-at", "0.5"]) == 2
    assert "applies to the editor recipes" in capsys.readouterr().err


def test_a_bad_fallback_margin_is_a_clear_cli_error_before_any_training(tmp_path, capsys):
    from reranker.__main__ import main

    for bad in ("-0.5", "nan", "inf", "one"):
        with pytest.raises(SystemExit) as stop:
            main(["train", "--default", "--fallback-margin", bad, "--out", str(tmp_path / "editor")])
        assert stop.value.code == 2
        assert "--fallback-margin" in capsys.readouterr().err
    assert not (tmp_path / "editor").exists()


def test_the_fallback_margin_reaches_the_rule_and_defaults_to_one_se(tmp_path, monkeypatch):
    import reranker.recipes as recipes
    from reranker.__main__ import main

    seen = []

    def fake_train_default(out, **kwargs):
        Path(out).mkdir(parents=True)
        (Path(out) / "eval.json").write_text("{}")
        return out

    monkeypatch.setattr(recipes, "train_default", fake_train_default)
    monkeypatch.setattr(recipes, "fall_back_if_worse", lambda out, metrics, **kw: seen.append(kw["margin_se"]))
    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--fallback-margin", "0", "--out", str(tmp_path / "b")]) == 0
    assert seen == [1.0, 0.0]


def figures(model: tuple[float, float], bi: tuple[float, float], n: int = 100) -> dict:
    """Metrics with R@1 of 100 and vs writer lines for the model and the bi-encoder (hand values)."""
    def scorer(r100, rw):
        def measure(r):
            return {"r@1": r, "r@1_se": 0.03, "mrr": r, "mrr_se": 0.03, "n": n}

        return {"select100": measure(r100), "writer99": measure(rw)}

    return {"scorers": {"model": scorer(*model), "bi-encoder": scorer(*bi), "tf-idf": scorer(0.1, 0.1)}}


def test_measures_worse_compares_the_mean_of_the_headline_measures():
    from reranker.card import measures_worse

    assert measures_worse(figures((0.30, 0.40), (0.22, 0.32))) is None
    assert measures_worse(figures((0.20, 0.40), (0.22, 0.32))) is None  # loses one, wins the mean
    why = measures_worse(figures((0.058, 0.052), (0.110, 0.178)))  # the cross-encoder on a dump
    assert "R@1 of 100 0.058 against the bi-encoder's 0.110 (n 100)" in why and "0.052 against" in why
    assert measures_worse({"scorers": {"model": {}, "bi-encoder": {}}}) is None  # nothing measured: nothing said


def test_headline_gap_is_paired_where_the_ranks_were_kept():
    from reranker.card import headline_gap

    figs = figures((0.30, 0.38), (0.31, 0.40))  # no ranks kept: unpaired errors, sqrt(4 * 0.03**2) / 2
    gap, se, n = headline_gap(figs)
    assert gap == pytest.approx(0.015) and se == pytest.approx(0.03) and n == 100
    for scorer, ranks in (("model", [1, 1, 2, 3]), ("bi-encoder", [1, 2, 2, 1])):  # per-case hits 1100 / 1001
        for m in ("select100", "writer99"):
            figs["scorers"][scorer][m].update(ranks=ranks, n=4)
    gap, se, n = headline_gap(figs)  # differences 0, 1, 0, -1 on each measure: SE 0.408, of the mean 0.289
    assert se == pytest.approx(np.std([0, 1, 0, -1], ddof=1) / 2 * np.sqrt(2) / 2) and n == 4
    assert headline_gap({"scorers": {"model": {}, "bi-encoder": {}}}) is None


def test_a_close_call_is_called_one_when_the_scorer_falls_back(tmp_path, capsys):
    from reranker.recipes import fall_back_if_worse

    for model, close in (((0.27, 0.36), True), ((0.05, 0.05), False)):  # 0.040 below (1.3 SE of 0.03), then 0.305
        out = tmp_path / "editor"
        out.mkdir()
        (out / "config.json").write_text("{}")
        assert fall_back_if_worse(out, figures(model, (0.31, 0.40)), keep_worse=True) is None
        err = capsys.readouterr().err
        assert "WORSE than the zero-shot bi-encoder" in err and "--keep-worse" in err
        assert ("a close call" in err) is close and ("as few as 100 cases" in err) is close
        (out / "config.json").unlink()
        out.rmdir()


def test_a_gap_within_the_margin_keeps_the_scorer_and_its_card_says_where_it_loses(tmp_path, capsys):
    import json

    from reranker.recipes import fall_back_if_worse

    out = tmp_path / "editor"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "README.md").write_text("# riposte editor\n")
    metrics = figures((0.30, 0.38), (0.31, 0.40))  # 0.015 below, SE 0.03: half a standard error
    (out / "eval.json").write_text(json.dumps(metrics))
    assert fall_back_if_worse(out, metrics) is None
    assert (out / "config.json").read_text() == "{}" and not (tmp_path / "editor-worse").exists()
    err = capsys.readouterr().err
    assert "WORSE than the zero-shot bi-encoder" in err and "within 1 standard error" in err
    card = (out / "README.md").read_text()
    assert card.startswith("# riposte editor\n") and "## Where it loses" in card
    assert "The headline figures: R@1 of 100 0.300 against the bi-encoder's 0.310 (n 100)" in card
    assert "0.015 of mean R@1 below" in card
    kept = json.loads((out / "eval.json").read_text())
    assert kept["scorers"] == metrics["scorers"]  # nothing lost
    noted = kept["kept_within_noise"]
    assert noted["gap"] == pytest.approx(0.015) and noted["se"] == pytest.approx(0.03) and noted["margin_se"] == 1.0

    assert fall_back_if_worse(out, metrics) is None  # a second time: one section, not two
    assert (out / "README.md").read_text().count("## Where it loses") == 1
    edge = figures((0.28, 0.40), (0.31, 0.40))  # 0.015 below, SE 0.016 (unpaired, 0.016 each): just within one SE
    for scorer in edge["scorers"].values():
        for m in scorer.values():
            m["r@1_se"] = 0.016
    assert fall_back_if_worse(out, edge) is None and not (tmp_path / "editor-worse").exists()

    moved = fall_back_if_worse(out, metrics, margin_se=0.0)  # no margin: any gap falls back
    assert moved == tmp_path / "editor-worse" and (moved / "config.json").read_text() == "{}"
    assert "saved the zero-shot bi-encoder" in capsys.readouterr().err
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="0 or more standard errors"):
            fall_back_if_worse(out, metrics, margin_se=bad)


def test_equal_means_are_a_tie_whatever_the_float_rounding():
    from reranker.card import measures_worse

    assert (0.1 + 0.7) / 2 != (0.3 + 0.5) / 2  # the two means differ in the last bit
    assert measures_worse(figures((0.1, 0.7), (0.3, 0.5))) is None


def test_a_section_goes_before_the_note_on_other_libraries_once():
    from reranker.card import EDITOR_ELSEWHERE, with_loading_note, with_section

    card = with_loading_note("# riposte editor\n\n## Figures\n\nR@1 0.3\n")
    once = with_section(card, "Where it loses", "below within noise")
    assert once.index("## Figures") < once.index("## Where it loses") < once.index(EDITOR_ELSEWHERE[:40])
    again = with_section(once, "Where it loses", "below again")
    assert again.count("## Where it loses") == 1 and "below again" in again and "below within noise" not in again
    assert again.endswith(EDITOR_ELSEWHERE) and "## Figures\n\nR@1 0.3" in again
    assert with_section("# plain\n", "Where it loses", "x") == "# plain\n\n## Where it loses\n\nx\n"


def test_a_worse_scorer_moves_aside_and_the_zero_shot_biencoder_takes_its_place(tmp_path, capsys):
    import json

    import reranker
    from reranker.biencoder import BiEncoder
    from reranker.recipes import fall_back_if_worse

    out = tmp_path / "editor"
    (out / "first_stage").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "first_stage" / "marker").write_text("kept")
    assert fall_back_if_worse(out, figures((0.3, 0.4), (0.2, 0.3))) is None and (out / "config.json").read_text() == "{}"

    moved = fall_back_if_worse(out, figures((0.05, 0.05), (0.11, 0.18)), first_stage_ok=True)
    assert moved == tmp_path / "editor-worse" and (moved / "config.json").read_text() == "{}"  # nothing lost
    assert "WORSE than the zero-shot bi-encoder" in capsys.readouterr().err
    fallback = reranker.load(out, dtype=torch.float32, warmup=False)
    bi = BiEncoder.from_backbone(dtype=torch.float32)
    context, candidates = ["hi there", "how are you?"], ["fine thanks", "the cat sat", "i am well, you?"]
    ours, theirs = fallback.score(context, candidates), 20 * bi.score(context, candidates)
    np.testing.assert_allclose(ours, theirs, atol=0.05)  # bf16 where the CPU has it: cosines within ~1e-3
    assert np.argsort(ours).tolist() == np.argsort(theirs).tolist()
    eval_json = json.loads((out / "eval.json").read_text())
    assert eval_json["scorers"]["model"]["select100"]["r@1"] == 0.11 and "fallback" in eval_json
    assert (out / "first_stage" / "marker").read_text() == "kept"
    assert "zero-shot fallback" in (out / "README.md").read_text()

    (out / "config.json").unlink()  # --keep-worse: loud, but the directory stays as it is
    (out / "config.json").write_text("{}")
    assert fall_back_if_worse(out, figures((0.05, 0.05), (0.11, 0.18)), keep_worse=True) is None
    assert (out / "config.json").read_text() == "{}" and "--keep-worse" in capsys.readouterr().err


def test_only_a_first_stage_distilled_from_the_biencoder_fits_a_zero_shot_fallback(tmp_path):
    import json

    from reranker.recipes import zero_shot_first_stage

    def editor_dir(name: str, first_stage: dict) -> object:
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.json").write_text(json.dumps({"first_stage": first_stage}))
        return tmp_path / name

    assert zero_shot_first_stage(editor_dir("zero_shot", {"distilled_from": "bi-encoder", "words": 3}))
    assert not zero_shot_first_stage(editor_dir("sense", {"distilled_from": "sense", "words": 3}))
    assert zero_shot_first_stage(editor_dir("older", {"words": 3}))  # before the key: always the bi-encoder
    assert not zero_shot_first_stage(tmp_path / "nothing")  # no train.json: nothing to vouch for it


@pytest.fixture
def recipes_built(monkeypatch) -> list:
    """The recipes `train` hands its editor trainers, which are stubbed to save an empty eval.json and no more."""
    import reranker.recipes as recipes

    seen = []

    def fake_train(out, recipe):
        seen.append(recipe)
        Path(out).mkdir(parents=True)
        (Path(out) / "eval.json").write_text("{}")
        return out

    monkeypatch.setattr(recipes, "train_default", lambda out, recipe=None, **kw: fake_train(out, recipe))
    monkeypatch.setattr(recipes, "train_editor", lambda splits, out, recipe=None, **kw: fake_train(out, recipe))
    monkeypatch.setattr(recipes, "fall_back_if_worse", lambda out, metrics, **kw: None)
    return seen


def test_the_relevance_around_flag_reaches_the_recipe_and_is_off_by_default(tmp_path, recipes_built, capsys):
    from reranker.__main__ import main

    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--relevance-around", "--out", str(tmp_path / "b")]) == 0
    assert [recipe.relevance_around for recipe in recipes_built] == [False, True]
    # a cross-encoder has no sense stage: refused before its dump is read
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "cross", "--relevance-around"]) == 2
    assert "--relevance-around applies to the editor recipes" in capsys.readouterr().err


def test_the_eval_cases_flag_overrides_the_preset_only_when_given(tmp_path, recipes_built, capsys):
    import re

    from reranker.__main__ import main

    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--preset", "large", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--default", "--preset", "large", "--eval-cases", "40", "--out", str(tmp_path / "c")]) == 0
    default, large = DefaultRecipe.preset("default").eval_cases, DefaultRecipe.preset("large").eval_cases
    assert default != large  # else the flag's default could hide the preset's and this test would not see it
    assert [recipe.eval_cases for recipe in recipes_built] == [default, large, 40]
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    stated = re.search(r"default:theeditorpreset's,(\d+)with--presetdefaultand(\d+)withlarge",
                       "".join(capsys.readouterr().out.split()))
    assert stated and (int(stated.group(1)), int(stated.group(2))) == (default, large)  # the help says what runs


def test_the_sense_lr_flag_reaches_the_recipe_and_its_help_states_the_default(tmp_path, monkeypatch, recipes_built,
                                                                              capsys):
    import re

    import reranker.__main__ as cli
    from reranker.__main__ import main

    def lrs() -> list[float]:
        return [recipe.sense_lr for recipe in recipes_built]

    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--sense-lr", "1e-4", "--out", str(tmp_path / "b")]) == 0
    assert lrs() == [SenseTraining.lr, 1e-4]
    for bad in ("0", "inf"):
        assert main(["train", "--default", "--sense-lr", bad, "--out", str(tmp_path / "c")]) == 2
        assert "sense_lr must be a finite number > 0" in capsys.readouterr().err and len(lrs()) == 2
    # a dump's editor recipe takes it too, and a bad one is refused before the dump is read
    reads = []
    monkeypatch.setattr(cli, "read_split", lambda dump, split, **kw: (reads.append(split) or [], {}))
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "editor", "--sense-lr", "2e-4",
                 "--out", str(tmp_path / "d")]) == 0
    assert lrs()[-1] == 2e-4 and reads == ["train", "val", "test"]
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "editor", "--sense-lr", "-1"]) == 2
    assert reads == ["train", "val", "test"]
    # a cross-encoder has no sense model: refused, whatever the rate (0 included)
    for rate in ("1e-4", "0"):
        assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "cross", "--sense-lr", rate]) == 2
        assert "--sense-lr applies to the editor recipes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    # (argparse may wrap the help at the number's hyphen: read it with the whitespace taken out)
    stated = re.search(r"peaklearningrate\(default([0-9.e-]+):", "".join(capsys.readouterr().out.split()))
    assert stated and float(stated.group(1)) == SenseTraining.lr  # the help says what the code does


def test_the_sense_splice_weight_flag_reaches_the_recipe(tmp_path, recipes_built, capsys):
    import re

    from reranker.__main__ import main

    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--sense-splice-weight", "1", "--out", str(tmp_path / "b")]) == 0
    assert [recipe.sense_splice_weight for recipe in recipes_built] == [SenseTraining.splice_weight, 1.0]
    for bad in ("-1", "inf"):
        assert main(["train", "--default", "--sense-splice-weight", bad, "--out", str(tmp_path / "c")]) == 2
        assert "sense_splice_weight must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "cross", "--sense-splice-weight", "1"]) == 2
    assert "--sense-splice-weight applies to the editor recipes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    stated = re.search(r"besideitslineloss\(default([0-9.]+);", "".join(capsys.readouterr().out.split()))
    assert stated and float(stated.group(1)) == SenseTraining.splice_weight  # the help says what the code does


def test_the_switch_share_flag_reaches_the_recipe(tmp_path, recipes_built, capsys):
    from reranker.__main__ import main

    assert main(["train", "--default", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", "--default", "--switch-share", "0", "--out", str(tmp_path / "b")]) == 0
    assert [recipe.switch_share for recipe in recipes_built] == [DefaultRecipe.switch_share, 0.0]
    assert main(["train", "--default", "--switch-share", "2", "--out", str(tmp_path / "c")]) == 2
    assert "switch_share must be within [0, 1]" in capsys.readouterr().err
    assert main(["train", "--dump", str(tmp_path / "none"), "--recipe", "cross", "--switch-share", "0.5"]) == 2
    assert "--switch-share applies to the editor recipes" in capsys.readouterr().err
