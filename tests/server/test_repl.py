"""The REPL: in-process through StringIO, and `python -m server chat` driven through a pipe."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.engine import Engine, EngineConfig
from server.repl import run_repl
from tests.server.conftest import OverlapScorer

ROOT = Path(__file__).resolve().parents[2]
BOT = re.compile(r"^\[bot\] (.+) \((\d+) ms(, timed out: ranked by prior)?\)$")


def chat(engine, text: str) -> list[str]:
    out = io.StringIO()
    assert run_repl(engine, stdin=io.StringIO(text), out=out, seed=1) == 0
    return out.getvalue().splitlines()


def test_repl_commands_in_process(tiny_markov):
    engine = Engine({"default": tiny_markov, "pirate": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=256))
    try:
        lines = chat(engine, "do you like dogs?\n/top 3\n/budget 5\n/budget 300\n/persona zork\n/persona pirate\n"
                             "\n/nope\npizza?\n/reset\n/top\n/help\n/quit\nnever read\n")
    finally:
        engine.close()
    assert lines[0] == "[you] do you like dogs?"
    first = BOT.match(lines[1])
    assert first, lines[1]
    top = lines[2:5]
    assert all(re.match(r"^\s+\d\.\s+[+-]\d+\.\d{3}\s+\S", t) for t in top), top
    assert top[0].endswith(first.group(1))  # the reply is the best of the ranking
    scores = [float(t.split()[1]) for t in top]
    assert scores == sorted(scores, reverse=True)
    assert lines[5].startswith("(usage: /budget")
    assert lines[6] == "(budget: 300 ms)"
    assert lines[7].startswith("(unknown persona 'zork'")
    assert lines[8] == "(persona: pirate)"
    assert lines[9].startswith("(unknown command /nope")
    assert lines[10] == "[you] pizza?" and BOT.match(lines[11])
    assert lines[12] == "(conversation reset)"
    assert lines[13] == "(no reply yet)"
    assert lines[14] == "commands:" and any("/persona NAME" in x for x in lines)
    assert not any("never read" in x for x in lines)


def test_repl_keeps_history_and_never_repeats_itself(tiny_markov):
    engine = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=256))
    try:
        lines = chat(engine, "do you like dogs?\n" * 4)
    finally:
        engine.close()
    replies = [BOT.match(x).group(1) for x in lines if x.startswith("[bot]")]
    assert len(replies) == 4 and len(set(replies)) == 4  # the bot's last lines are never repeated


@pytest.mark.slow
def test_chat_through_a_pipe(tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "server", "chat", "--model", str(tiny_model_dir), "--no-build", "--seed", "3"],
        input="hello there\ndo you like music?\n/top 2\n/persona pirate\nwhy?\n",  # ends without /quit: EOF exits
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "[you] hello there" and BOT.match(out[1])
    assert out[2] == "[you] do you like music?" and BOT.match(out[3])
    assert re.match(r"^\s+1\.\s+unscored\s+\S", out[4])  # no reranker in this model dir: ranked by prior
    assert out[6] == "(persona: pirate)"
    assert out[7] == "[you] why?" and BOT.match(out[8])
    assert "no reranker" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_chat_with_a_missing_model_dir_and_no_build_fails_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "server", "chat", "--model", str(tmp_path / "none"), "--no-build"],
        input="hi\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2 and "markov" in proc.stderr.lower() and "Traceback" not in proc.stderr
