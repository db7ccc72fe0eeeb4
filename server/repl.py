"""Chat in the terminal: `[you] ...` / `[bot] ... (812 ms)`, with a few slash commands; works piped too."""

from __future__ import annotations

import sys
from typing import TextIO

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


def run_repl(engine: Engine, *, stdin: TextIO | None = None, out: TextIO | None = None,
             budget_ms: int | None = None, seed: int | None = None) -> int:
    """Read lines until /quit or end of input; returns the exit status."""
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    chat = Chat(engine, out, budget_ms=budget_ms, seed=seed)
    interactive = stdin.isatty() and out.isatty()
    print(f"riposte chat: persona {chat.persona}, budget {chat.budget_ms} ms; /help for commands",
          file=sys.stderr, flush=True)
    try:
        while True:
            if interactive:
                line = input("[you] ")  # input() gives line editing on a terminal
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
