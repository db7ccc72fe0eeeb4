"""Chat in the terminal: `[you] ...` / `[bot] ... (812 ms)`, with a few slash commands; works piped too.

On a terminal, readline gives line editing, Tab completion of the commands and persona names, and a history kept
across chats in `history_path()`. Piped, the chat reads plain lines and echoes them, and touches no history.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TextIO

from corpus.modeldir import write_file_atomically
from server.engine import DEFAULT_PERSONA, Engine, Reply, Turn, UnknownPersonaError, topic_terms
from server.group import Conversation
from server.limits import (
    BUDGET_RANGE,
    MAX_BUDGET_MS,
    MAX_NAME,
    MAX_SIMULATED_TURNS,
    MAX_TEXT,
    MAX_TURNS,
    MIN_BUDGET_MS,
    budget_in_range,
)

KEEP_ALTERNATIVES = 50
COMMANDS = ("/reset", "/top", "/budget", "/as", "/persona", "/auto", "/topic", "/help", "/quit", "/exit")
PERSONA_COMMANDS = ("/as", "/persona")  # their one argument is a persona name
HISTORY_LENGTH = 1000  # lines kept in the history file, the newest

HELP = """commands:
  /reset          forget the conversation
  /top N          the last turn's N best candidates with their scores
  /budget MS      time budget per reply, {budget_range} ms
  /as NAME        speak as this persona ({personas}); /persona NAME is the same
  /auto N [NAME...] [--follows]
                  let personas talk for N turns (1-{max_auto}; default: {speakers}), taking turns
                  round-robin, or with --follows as in the export (who most often answers whom)
  /topic WORDS    steer replies toward a topic (seeds candidates with the words); /topic alone clears it
  /help           this text
  /quit           leave (Ctrl-D and Ctrl-C work too)"""


class Chat:
    """The REPL's state: the history, the budget, the persona and the last turn."""

    def __init__(self, engine: Engine, out: TextIO, *, budget_ms: int | None = None, seed: int | None = None):
        self.engine = engine
        self.out = out
        self.budget_ms = budget_ms or engine.config.budget_ms
        self.persona = DEFAULT_PERSONA
        self.seed = seed
        self.turn = 0
        self.history: list[Turn] = []
        self.last: Reply | None = None
        self.topic: str | None = None

    def say(self, text: str) -> None:
        """Print one line and flush, so a pipe reader sees it at once."""
        print(text, file=self.out, flush=True)

    def handle(self, line: str) -> bool:
        """Process one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        self.history = (self.history + [Turn("user", line[:MAX_TEXT])])[-MAX_TURNS:]
        result = self.engine.reply(
            self.history, budget_ms=self.budget_ms, persona=self.persona, seed=self.next_seed(),
            n_alternatives=KEEP_ALTERNATIVES, topic=self.topic,
        )
        self.last = result
        ms = round(result.stats["elapsed_ms"])
        if result.reply is None:
            self.say(f"[bot] (no reply: {result.stats.get('reason', 'nothing to say')}) ({ms} ms)")
            return True
        note = ", timed out: ranked by prior" if result.stats["timed_out"] else ""
        self.say(f"[bot] {result.reply} ({ms} ms{note})")
        self.history = (self.history + [Turn("bot", result.reply)])[-MAX_TURNS:]
        return True

    def next_seed(self) -> int | None:
        """A fresh seed per turn, reproducible when the chat was seeded."""
        seed = None if self.seed is None else self.seed + self.turn
        self.turn += 1
        return seed

    def command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(HELP.format(personas=", ".join(self.engine.persona_names),
                                 speakers=", ".join(self.engine.speaking_personas),
                                 budget_range=f"{MIN_BUDGET_MS}-{MAX_BUDGET_MS}",
                                 max_auto=MAX_SIMULATED_TURNS))
        elif name == "/reset":
            self.history, self.last = [], None
            self.say("(conversation reset)")
        elif name == "/top":
            self.top(arg)
        elif name == "/budget":
            if not arg.isdigit() or not budget_in_range(int(arg)):
                self.say(f"(usage: /budget MS, with MS {BUDGET_RANGE})")
            else:
                self.budget_ms = int(arg)
                self.say(f"(budget: {self.budget_ms} ms)")
        elif name == "/auto":
            self.auto(arg)
        elif name == "/topic":
            self.set_topic(arg)
        elif name in ("/persona", "/as"):
            if arg not in self.engine.personas:
                self.say(f"(unknown persona {arg!r}; known: {', '.join(self.engine.persona_names)})")
            else:
                self.persona = arg
                self.say(f"(persona: {arg})")
        else:
            self.say(f"(unknown command {name}; /help lists them)")
        return True

    def set_topic(self, arg: str) -> None:
        """Set the topic (and say which personas cannot be seeded with it), or clear it."""
        if not arg:
            self.topic = None
            self.say("(topic cleared)")
            return
        self.topic = arg[:MAX_NAME]
        terms = topic_terms(self.topic)
        deaf = [p for p in self.engine.speaking_personas
                if hasattr(self.engine.personas[p], "knows") and not any(self.engine.personas[p].knows(w) for w in terms)]
        note = f"; unknown to {', '.join(deaf)}: their replies are only nudged, not seeded" if deaf else ""
        self.say(f"(topic: {' '.join(terms)}{note})")

    def auto(self, arg: str) -> None:
        """`/auto N [NAME...] [--follows]`: the personas converse for N turns, each printed as it comes."""
        parts = arg.split()
        mode = "follows" if "--follows" in parts else "round_robin"
        parts = [p for p in parts if p != "--follows"]
        if not parts or not parts[0].isdigit() or not 1 <= int(parts[0]) <= MAX_SIMULATED_TURNS:
            self.say(f"(usage: /auto N [NAME...] [--follows], with N between 1 and {MAX_SIMULATED_TURNS})")
            return
        try:
            convo = Conversation(self.engine, parts[1:] or None, mode=mode, history=self.history)
        except UnknownPersonaError as exc:
            self.say(f"({exc})")
            return
        for _ in range(int(parts[0])):
            persona = convo.next()
            result = self.engine.reply(
                convo.history, budget_ms=self.budget_ms, persona=persona,
                seed=self.next_seed(), n_alternatives=KEEP_ALTERNATIVES, topic=self.topic,
                speaker=convo.speaker(persona),
            )
            self.last = result
            ms = round(result.stats["elapsed_ms"])
            shown = result.reply if result.reply is not None else f"(no reply: {result.stats.get('reason')})"
            self.say(f"[{persona}] {shown} ({ms} ms)")
            convo.record(persona, result.reply)
        self.history = convo.history

    def top(self, arg: str) -> None:
        """Print the last turn's best candidates, the reply first."""
        n = int(arg) if arg.isdigit() and int(arg) > 0 else 5
        if self.last is None or self.last.reply is None:
            self.say("(no reply yet)")
            return
        rows = [(self.last.reply, self.last.score)] + [(a.text, a.score) for a in self.last.alternatives]
        for i, (text, score) in enumerate(rows[:n], 1):
            shown = "unscored" if score is None else f"{score:+.3f}"
            self.say(f"{i:>3}. {shown:>9}  {text}")


def completions(line: str, personas: Sequence[str]) -> list[str]:
    """What Tab may turn the last word of `line` (the text before the cursor) into: a command, or a persona name."""
    head, _, word = line.rpartition(" ")
    words = head.split()
    if not words:  # the first word: a command, never chat text
        return [c for c in COMMANDS if c.startswith(word)] if word.startswith("/") or not word else []
    command, position = words[0], len(words)  # position: 1 for the command's first argument
    if command in PERSONA_COMMANDS and position == 1:
        options = list(personas)
    elif command == "/auto" and position >= 2:  # /auto N [NAME...] [--follows]
        options = [*personas, *(["--follows"] if "--follows" not in words else [])]
    else:
        return []
    return [o for o in options if o.startswith(word)]


class Completer:
    """readline's completer over `completions`; `before_cursor` gives the line typed so far, up to the cursor."""

    def __init__(self, personas: Sequence[str], before_cursor: Callable[[], str]) -> None:
        self.personas = list(personas)
        self.before_cursor = before_cursor
        self.matches: list[str] = []

    def complete(self, text: str, state: int) -> str | None:
        """The state-th completion of the word under the cursor, None past the last (readline's protocol)."""
        if state == 0:
            self.matches = completions(self.before_cursor(), self.personas)
        return self.matches[state] if state < len(self.matches) else None


def history_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The chat's history file: $XDG_STATE_HOME/riposte/chat_history, else ~/.local/state/riposte/chat_history."""
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"  # the spec ignores relative ones
    return base / "riposte" / "chat_history"


class History:
    """The chat's input lines on disk, one per line, the newest last, at most `length`; trouble is a warning."""

    def __init__(self, path: str | os.PathLike, length: int = HISTORY_LENGTH, warn: TextIO | None = None) -> None:
        self.path = Path(path)
        self.length = length
        self.warn_to = warn

    def warn(self, action: str, exc: OSError) -> None:
        """Say that the history could not be read or written, and carry on without it."""
        print(f"riposte: could not {action} the chat history {self.path} ({exc.strerror or exc}); "
              "the chat goes on without it", file=self.warn_to or sys.stderr, flush=True)

    def load(self) -> list[str]:
        """The saved lines, oldest first; none when there is no file yet or it cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            self.warn("read", exc)
            return []
        return [line for line in text.splitlines() if line.strip()][-self.length:]

    def save(self, lines: Sequence[str]) -> None:
        """Keep the newest `length` lines, written whole (a temporary file, then a rename) and readable by the user only."""
        kept = [line for line in lines if line.strip() and "\n" not in line and "\r" not in line][-self.length:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_file_atomically(self.path, "".join(line + "\n" for line in kept), private=True)
        except OSError as exc:
            self.warn("write", exc)


@contextmanager
def line_editing(personas: Sequence[str], history: History | None) -> Iterator[None]:
    """For an interactive chat: readline's editing, Tab completion and the saved history, restored on the way out."""
    try:
        import readline
    except ImportError:  # no readline on this platform: input() still reads lines, without editing
        yield
        return
    completer = Completer(personas, lambda: readline.get_line_buffer()[: readline.get_endidx()])
    saved = readline.get_completer(), readline.get_completer_delims()
    readline.set_completer(completer.complete)
    readline.set_completer_delims(" \t\n")  # "/top" and "some-persona" are one word each
    # macOS Python links libedit, whose binding syntax differs
    readline.parse_and_bind("bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") else "tab: complete")
    if history is not None:
        readline.clear_history()
        for line in history.load():
            readline.add_history(line)
    try:
        yield
    finally:
        if history is not None:  # input() added each line typed
            n = readline.get_current_history_length()
            history.save([readline.get_history_item(i) or "" for i in range(1, n + 1)])
        readline.set_completer(saved[0])
        readline.set_completer_delims(saved[1])


def run_repl(engine: Engine, *, stdin: TextIO | None = None, out: TextIO | None = None,
             budget_ms: int | None = None, seed: int | None = None,
             history_file: str | os.PathLike | None = None) -> int:
    """Read lines until /quit or end of input; returns the exit status.

    On a terminal the typed lines are kept in `history_file` (default `history_path()`); piped, nothing is kept.
    """
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    chat = Chat(engine, out, budget_ms=budget_ms, seed=seed)
    interactive = stdin.isatty() and out.isatty()
    print(f"riposte chat: persona {chat.persona}, budget {chat.budget_ms} ms; /help for commands",
          file=sys.stderr, flush=True)
    editing = line_editing(engine.persona_names, History(history_file or history_path())) if interactive else nullcontext()
    with editing:
        try:
            while True:
                if interactive:
                    line = input("[you] ")  # through readline: editing, completion, history
                else:
                    line = stdin.readline()
                    if not line:
                        break
                    if line.strip() and not line.lstrip().startswith("/"):
                        chat.say(f"[you] {line.strip()}")  # so a piped transcript reads like a chat
                if not chat.handle(line):
                    break
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print(file=out)
    return 0
