"""`python -m reranker train|eval` end to end on a tiny dump and a tiny model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from reranker import Reranker
from reranker.__main__ import main

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
                 "--workers", "1", "--no-progress"])
    assert code == 0
    rr = Reranker.load(out, warmup=False)
    assert rr.config.max_length == 32 and rr.config.pooling == "cls"
    card = (out / "README.md").read_text()
    assert "Optimizer steps:** 4" in card and "Evaluation" in card
    metrics = json.loads((out / "eval.json").read_text())
    assert 0.0 <= metrics["test_samples"]["auc"] <= 1.0
    assert (tmp_path / "models" / ".reranker-train" / "train_log.jsonl").is_file()
    capsys.readouterr()
    code = main(["eval", str(out), dump, "--no-markov", "--n-swap", "20", "--n-select10", "5", "--n-select100", "3",
                 "--json", str(tmp_path / "eval.json"), "--no-progress"])
    printed = capsys.readouterr().out
    if code == 0:
        assert "swap-pair accuracy" in printed
        assert json.loads((tmp_path / "eval.json").read_text())["select10"]["n"] == 5
    else:  # the hash split left fewer than 2 held-out films
        assert code == 2


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
