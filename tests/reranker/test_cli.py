"""`python -m reranker train|eval` end to end on a tiny dump and a tiny model."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import time

import pytest

from reranker import Reranker
from reranker.__main__ import main
from reranker.editor import FEATURES
from reranker.recipes import ASKS_BACK
from reranker.windows import split_of

from .conftest import WORDS


def write_dump(directory, n_files: int = 60, seed: int = 0) -> str:
    """A folder of small SubRip files whose lines are made of the tiny vocabulary."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        cues = []
        for i in range(25):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize() + "."
            cues.append(f"{i + 1}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\n{text}\n")
        (directory / f"film{f:03d}.srt").write_text("\n".join(cues), encoding="utf-8")
    return str(directory)


@pytest.mark.slow
def test_train_then_eval_on_a_tiny_dump(tiny_bert, tmp_path, capsys):
    dump = write_dump(tmp_path / "dump")
    out = tmp_path / "models" / "reranker"
    code = main(["train", "--dump", dump, "--base-model", tiny_bert, "--out", str(out), "--max-steps", "4",
                 "--eval-every", "2", "--save-every", "2", "--max-length", "32", "--batch-size", "8",
                 "--workers", "1", "--eval-cases", "20", "--no-progress", "--keep-worse"])
    assert code == 0
    rr = Reranker.load(out, warmup=False)
    assert rr.config.max_length == 32 and rr.config.pooling == "cls"
    card = (out / "README.md").read_text()
    assert "optimizer steps:** 4" in card and "Evaluation" in card
    metrics = json.loads((out / "eval.json").read_text())
    assert 0.0 <= metrics["test_samples"]["auc"] <= 1.0
    assert (tmp_path / "models" / ".reranker-train" / "train_log.jsonl").is_file()
    capsys.readouterr()
    code = main(["eval", str(out), dump, "--no-writer", "--n-swap", "20", "--n-select10", "5", "--n-select100", "3",
                 "--json", str(tmp_path / "eval.json"), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0  # the 60 films' names put 2 or more in the test split (checked by name below)
    assert sum(split_of(f"film{f:03d}.srt") == "test" for f in range(60)) >= 2
    assert "swap accuracy" in printed
    assert json.loads((tmp_path / "eval.json").read_text())["scorers"]["model"]["select10"]["n"] == 5


def test_missing_backbone_is_a_clear_cli_error(tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "reranker", "train", "--dump", str(tmp_path), "--base-model",
         "microsoft/deberta-v3-nonexistent-xyz", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "pass a local path" in proc.stderr
    assert time.monotonic() - start < 60


def test_eval_of_an_editor_on_unseen_data_with_baselines_and_leave_out_writers(tiny_bert, tmp_path, capsys):
    from reranker.editor import Editor

    dump = write_dump(tmp_path / "dump", n_files=6)
    Editor.from_backbone(tiny_bert).save(tmp_path / "editor")
    code = main(["eval", str(tmp_path / "editor"), dump, "--split", "all", "--baseline", "--n-swap", "10",
                 "--n-select10", "8", "--n-select100", "4", "--n-writer", "6", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "bi-encoder" in printed and "tf-idf" in printed and "R@1 vs 99 writer lines" in printed
    metrics = json.loads((tmp_path / "editor" / "eval-dump.json").read_text())
    assert metrics["split"] == "all" and metrics["documents"] == 6
    for name in ("model", "bi-encoder", "tf-idf"):
        s = metrics["scorers"][name]
        assert s["select10"]["n"] == 8 and s["writer99"]["n"] == 6 and s["swap"]["n"] == 10, name


def test_eval_with_too_few_documents_says_what_to_do(tiny_bert, tmp_path, capsys):
    from reranker.editor import Editor

    dump = write_dump(tmp_path / "dump", n_files=1)
    Editor.from_backbone(tiny_bert).save(tmp_path / "editor")
    assert main(["eval", str(tmp_path / "editor"), dump, "--no-progress"]) == 2
    assert "--split all" in capsys.readouterr().err


def test_train_flags_take_their_defaults_from_train_config():
    import argparse

    from reranker.__main__ import TRAIN_FLAGS, add_config_flags, config_from_args
    from reranker.train import TrainConfig

    parser = argparse.ArgumentParser()
    add_config_flags(parser, TrainConfig, TRAIN_FLAGS)
    args = parser.parse_args([])
    defaults = TrainConfig()
    for name in TRAIN_FLAGS:
        assert getattr(args, name) == getattr(defaults, name), name
    assert config_from_args(TrainConfig, args) == defaults
    args = parser.parse_args(["--lr", "1e-4", "--max-minutes", "2.5", "--checkpoint-dir", "ck"])
    assert config_from_args(TrainConfig, args, pooling="cls") == TrainConfig(lr=1e-4, max_minutes=2.5,
                                                                            checkpoint_dir="ck", pooling="cls")


@pytest.mark.slow
def test_train_an_editor_on_a_dump_against_its_own_writer(tiny_bert, tmp_path, capsys):
    from reranker.editor import Editor
    from reranker.recipes import DefaultRecipe, train_editor

    dump = write_dump(tmp_path / "dump", n_files=80)
    names = [f"film{f:03d}.srt" for f in range(80)]
    assert sum(split_of(n) == "test" for n in names) >= 2 and any(split_of(n) == "val" for n in names)
    from reranker.__main__ import read_split

    splits = {name: read_split(dump, name)[0] for name in ("train", "val", "test")}
    recipe = DefaultRecipe(max_minutes=2, max_train_lines=400, mix_cases=20, mix_negatives=4, eval_cases=6,
                           base_model=tiny_bert, sense_share=0.05, sense_mine_at=(0.3,), relevance_around=True,
                           sense_lr=2e-4, sense_splice_weight=1.0)
    out = train_editor(splits, tmp_path / "editor", recipe=recipe, data_name="tiny dump", progress=False)
    editor = Reranker.load(out, warmup=False)
    assert isinstance(editor, Editor)
    train = json.loads((out / "train.json").read_text())
    assert train["fluency"]["n_train"] + train["fluency"]["n_val"] == 400 and train["mix_cases"] == 20
    assert train["mix_switch_share"] == DefaultRecipe.switch_share  # some of its cases change the subject
    assert train["weights"]["asks_back"] == pytest.approx(ASKS_BACK)
    assert editor.config.weights[FEATURES.index("asks_back")] == pytest.approx(ASKS_BACK)
    metrics = json.loads((out / "eval.json").read_text())
    assert set(metrics["scorers"]) == {"model", "bi-encoder", "tf-idf"}
    assert metrics["scorers"]["model"]["writer99"]["n"] == 6
    card = (out / "README.md").read_text()
    assert "Against the zero-shot bi-encoder" in card and "tiny dump" in card and "first stage" in card
    assert f"({DefaultRecipe.switch_share:.0%} of them changing the subject at the last line)" in card
    from reranker.first_stage import FirstStage
    from reranker.recipes import first_stage_source

    stage = FirstStage.load(out / "first_stage")  # distilled from the encoder that carries the editor's relevance
    assert stage.config.weights == pytest.approx(first_stage_source(editor)[1]) and train["first_stage"]["words"] > 0
    assert min(stage.config.weights) >= 0.0
    source = "bi-encoder" if first_stage_source(editor)[0] is editor.biencoder else "sense"
    assert train["first_stage"]["distilled_from"] == source
    assert stage.score(["a line"], ["one", "two"]).shape == (2,)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"sense", "fluency", "first_stage"} and "history" not in train["fluency"]
    assert editor.sense is not None and train["sense"]["steps"] > 0 and 0.0 <= train["sense"]["held_out_auc"] <= 1.0
    assert train["sense"]["lr"] == 2e-4  # the recipe's rate is the one it trained at
    # half its writer lines were begun at topic words, fragments begun mid-sentence, and it is judged against those too
    assert train["sense"]["seeded_lines"] > 0 and 0.0 <= train["sense"]["held_out_auc_seeded"] <= 1.0
    # ... and against lines written around context words, as a turn writes them
    assert 0.0 <= train["sense"]["held_out_auc_around"] <= 1.0 and train["sense"]["held_out_pairs_around"] > 0
    # hard negatives were mined once, 30% into the stage, from fresh writer lines, and the card says so
    [mined] = train["sense"]["mined"]
    assert mined["read"] > 0 and 0 < mined["kept"] <= mined["read"] and "mined in 1 round(s)" in card
    # its relevance also learned against lines written around each context's words, and the card says so
    assert train["sense"]["around_negatives"] > 0 and "written around its context's own words" in card
    # and it was taught where the writer's lines are spliced, found in the writer's own corpus
    assert train["sense"]["splice_weight"] == 1.0 and train["sense"]["splices_per_writer_line"] > 0
    assert "where the writer's lines are spliced" in card
    # ... and the token head that learned them is kept, its verdict the mix's seventh feature
    assert editor.has_splice and 0.0 <= train["sense"]["held_out_auc_splice"] <= 1.0
    assert "token_head.safetensors" in card and (out / "sense" / "token_head.safetensors").is_file()
    with pytest.raises(ValueError, match="test split has"):
        train_editor({"train": splits["train"], "val": splits["val"], "test": []}, tmp_path / "x", recipe=recipe,
                     data_name="tiny dump", progress=False)
    # Too few lines for the fluency head (50 of each kind): the editor ranks as the bi-encoder plus its sense logit
    starved = dataclasses.replace(recipe, max_train_lines=100)
    out = train_editor(splits, tmp_path / "starved", recipe=starved, data_name="tiny dump", progress=False)
    weights = json.loads((out / "train.json").read_text())["weights"]
    assert weights == {"context": 20.0, "last_line": 0.0, "fluency": 0.0, "sense": 1.0, "sense_context": 0.0,
                       "asks_back": 0.0, "splice": 0.0}


def test_hold_out_patterns_make_the_test_split_and_nothing_else_is_tested():
    from reranker.__main__ import split_by

    hold = ("s09e*.txt", "s10e*.txt", "test.txt")
    assert split_by("data/friends/s09e01.txt#scene-3", hold) == "test"
    assert split_by("data/dailydialog/test.txt@17", hold) == "test"
    others = [split_by(f"data/friends/s0{s}e{e:02d}.txt#scene-0", hold) for s in range(1, 9) for e in range(1, 25)]
    assert "test" not in others and {"train", "val"} == set(others)
    # the scenes of one episode land together, whatever their scene number
    assert len({split_by(f"data/friends/s03e07.txt#scene-{k}", hold) for k in range(30)}) == 1
