"""The REPL: in-process through StringIO, `python -m server chat` driven through a pipe and through a terminal
(a pty: line editing, Tab completion, the history file), and the completion and history pieces on their own."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.engine import Engine, EngineConfig
from server.repl import COMMANDS, Chat, Completer, History, completions, history_path, line_editing, run_repl
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


PERSONAS = ["all", "default", "pirate", "pirate-king", "poet"]


def test_completions_of_commands_and_persona_names():
    assert completions("", PERSONAS) == list(COMMANDS)
    assert completions("/to", PERSONAS) == ["/top", "/topic"]
    assert completions("/pe", PERSONAS) == ["/persona"]
    assert completions("/nope", PERSONAS) == []
    assert completions("hello th", PERSONAS) == [] and completions("hello", PERSONAS) == []  # chat text
    assert completions("/as ", PERSONAS) == PERSONAS
    assert completions("/as pi", PERSONAS) == ["pirate", "pirate-king"]
    assert completions("/persona  po", PERSONAS) == ["poet"]
    assert completions("/as pirate p", PERSONAS) == []  # one name only
    assert completions("/auto ", PERSONAS) == []  # N comes first
    assert completions("/auto 5 p", PERSONAS) == ["pirate", "pirate-king", "poet"]
    assert completions("/auto 5 poet -", PERSONAS) == ["--follows"]
    assert completions("/auto 5 --follows -", PERSONAS) == []
    assert completions("/top ", PERSONAS) == [] and completions("/topic po", PERSONAS) == []


def test_completer_follows_readlines_protocol():
    line = ["/as pi"]
    completer = Completer(PERSONAS, lambda: line[0])
    assert [completer.complete("pi", i) for i in range(3)] == ["pirate", "pirate-king", None]
    line[0] = "/he"
    assert completer.complete("/he", 0) == "/help" and completer.complete("/he", 1) is None


def test_every_command_completed_is_one_the_chat_knows(engine):
    out = io.StringIO()
    chat = Chat(engine, out)
    for name in COMMANDS:
        chat.command(name)
    assert "unknown command" not in out.getvalue()


def test_history_path_follows_xdg_state_home(tmp_path):
    assert history_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "riposte" / "chat_history"
    default = Path.home() / ".local" / "state" / "riposte" / "chat_history"
    assert history_path({}) == default
    assert history_path({"XDG_STATE_HOME": "relative/dir"}) == default  # the spec says to ignore relative paths


def test_history_saves_the_newest_lines_and_loads_them_back(tmp_path):
    path = tmp_path / "state" / "riposte" / "chat_history"
    history = History(path, length=5)
    assert history.load() == []  # no file yet
    history.save([f"line {i}" for i in range(8)] + ["", "  ", "two\nlines"])
    assert path.read_text() == "".join(f"line {i}\n" for i in range(3, 8))
    assert path.stat().st_mode & 0o777 == 0o600  # what a user typed is theirs alone
    assert History(path, length=5).load() == [f"line {i}" for i in range(3, 8)]
    assert History(path, length=2).load() == ["line 6", "line 7"]
    assert [p.name for p in path.parent.iterdir()] == ["chat_history"]  # no temporary file left behind


def test_history_trouble_is_a_warning_never_an_error(tmp_path):
    (tmp_path / "file").write_text("x")
    warnings = io.StringIO()
    blocked = History(tmp_path / "file" / "riposte" / "chat_history", warn=warnings)  # its parent is a file
    blocked.save(["hello"])
    assert blocked.load() == []
    (tmp_path / "a-dir").mkdir()
    History(tmp_path / "a-dir", warn=warnings).load()
    said = warnings.getvalue().splitlines()
    assert len(said) == 3 and all("chat goes on without it" in x for x in said), said
    assert said[0].startswith("riposte: could not write") and said[2].startswith("riposte: could not read")


def test_line_editing_installs_completion_and_keeps_the_history(tmp_path):
    readline = pytest.importorskip("readline")
    history = History(tmp_path / "chat_history")
    history.save(["/as pirate", "hello"])
    before = readline.get_completer()
    try:
        with line_editing(PERSONAS, history):
            assert [readline.get_history_item(i) for i in (1, 2)] == ["/as pirate", "hello"]
            assert readline.get_completer_delims() == " \t\n"
            assert readline.get_completer().__self__.personas == PERSONAS
            readline.add_history("/auto 3 poet")  # what input() does with each line typed
        assert history.load() == ["/as pirate", "hello", "/auto 3 poet"]
        assert readline.get_completer() is before
    finally:
        readline.clear_history()


@pytest.mark.slow
def test_chat_on_a_terminal_completes_with_tab_and_keeps_a_history(tiny_model_dir, tmp_path):
    pytest.importorskip("readline")
    import pty
    import select

    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path), "TERM": "dumb"}
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "chat", "--model", str(tiny_model_dir), "--no-build", "--seed", "3"],
        stdin=follower, stdout=follower, stderr=subprocess.DEVNULL, cwd=ROOT, env=env, close_fds=True,
    )
    os.close(follower)
    seen = b""

    def until(text: bytes, timeout: float = 30) -> None:
        nonlocal seen
        while text not in seen:
            ready, _, _ = select.select([leader], [], [], timeout)
            assert ready, f"no {text!r} within {timeout} s; the terminal showed {seen[-500:]!r}"
            seen += os.read(leader, 4096)

    try:
        until(b"[you] ")
        os.write(leader, b"/he\t\n")  # Tab completes the command
        until(b"commands:")
        until(b"[you] ")
        os.write(leader, b"/as pi\t\n")  # and a persona name
        until(b"(persona: pirate)")
        until(b"[you] ")
        os.write(leader, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(leader)
    saved = History(tmp_path / "riposte" / "chat_history").load()
    assert [line.strip() for line in saved] == ["/help", "/as pirate", "/quit"]
