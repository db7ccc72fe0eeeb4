"""Personas from chat exports: one Markov model per speaker plus `all`, weighted by reactions.

Data flow: exports → messages (speaker, text, reactions) → chat cleaning → reaction weights →
one MarkovModel per speaker with enough messages, and `all` → OUT/markov/<persona>/ plus
OUT/markov/personas.json (display names, counts, who follows whom, the weighting report).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from corpus.clean import strip_chat_markup
from corpus.documents import Document, Line
from corpus.modeldir import DEFAULT_PERSONA, MARKOV_DIR, atomic_directory
from corpus.report import Report
from markov.chain import MarkovConfig, MarkovModel
from markov.replies import ReplyWords, turn_pairs

PERSONAS_FILE = "personas.json"  # display names, counts and who follows whom, beside the persona writers

ALL = "all"
_SPEAKER_LINE = re.compile(r"^\s*(?:\[[^\]]*\]\s*)?([^:\n]{1,40}?):\s+(.+)$")  # "name: text", optional [time] first


@dataclass(frozen=True)
class PersonaConfig:
    """How chat messages become weighted persona corpora."""

    min_messages: int = 50  # speakers with fewer are folded into `all` only
    weighting: str = "log"  # "log": 1 + log1p(r); "linear": 1 + r; "none": 1
    min_reactions: int = 0  # hard filter ("bangers only") applied before weighting
    include_bots: bool = False
    remove_mentions: bool = True
    remove_urls: bool = True

    def __post_init__(self) -> None:
        if self.weighting not in ("log", "linear", "none"):
            raise ValueError(f"weighting must be 'log', 'linear' or 'none', got {self.weighting!r}")
        if self.min_messages < 1 or self.min_reactions < 0:
            raise ValueError("min_messages must be >= 1 and min_reactions >= 0")


def reaction_weight(reactions: int, weighting: str = "log") -> float:
    """A message's weight from its reaction count: a soft curve, so one or two reactions still count."""
    if weighting == "log":
        return 1.0 + math.log1p(max(reactions, 0))
    if weighting == "linear":
        return 1.0 + max(reactions, 0)
    return 1.0


def clean_chat_text(text: str, config: PersonaConfig, report: Report | None = None) -> str:
    """Drop markdown marks and, as configured, mentions and URLs; collapse whitespace."""
    text = strip_chat_markup(text, report or Report(), mentions=config.remove_mentions, links=config.remove_urls)
    return " ".join(text.split())


def read_speaker_log(path: Path, report: Report) -> Document:
    """A plain `speaker: text` log, one message per line; lines without a speaker are counted and skipped."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            m = _SPEAKER_LINE.match(raw.rstrip("\r\n"))
            if m:
                lines.append(Line(text=m.group(2), speaker=m.group(1).strip()))
            elif raw.strip():
                report.count("log_lines_without_speaker")
    return Document(source_id=str(path), lines=lines, format="log")


def read_chat_inputs(inputs: Iterable[str], report: Report, include_bots: bool = False) -> Iterator[Document]:
    """Documents from DiscordChatExporter JSON (files, folders, archives) and `speaker: text` logs (.txt, .log)."""
    from corpus.dump import ReadConfig, read_path

    for name in inputs:
        path = Path(name)
        if not path.exists():
            raise FileNotFoundError(f"input {name!r} does not exist")
        if path.is_file() and path.suffix.lower() in (".txt", ".log"):
            yield read_speaker_log(path, report)
        else:
            yield from read_path(path, report, ReadConfig(include_bots=include_bots))


def slug(name: str) -> str:
    """A persona name safe as a directory name and URL part: lowercase letters, digits, '-' and '_'."""
    s = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")
    return s or "speaker"


@dataclass
class PersonaCorpus:
    """Weighted messages per persona, who follows whom, and what the weighting did."""

    messages: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # persona -> display name
    folded: dict[str, int] = field(default_factory=dict)  # display name -> messages, for speakers folded into `all`
    follows: dict[str, dict[str, int]] = field(default_factory=dict)  # persona -> next persona -> count
    # persona -> (the line a turn answered, the turn) for the turns it spoke (`all`: every turn): its reply words
    replies: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def collect(documents: Iterable[Document], config: PersonaConfig) -> PersonaCorpus:
    """Group cleaned, weighted messages by speaker; fold small speakers into `all`; count turn-taking."""
    by_speaker: dict[str, list[tuple[str, float, int]]] = defaultdict(list)
    order: list[list[tuple[str, str]]] = []  # each conversation's (speaker, cleaned text), in turn order
    dropped = Counter()
    channel = None
    for doc in documents:
        # a channel exported in parts (discord/ID#part) is one conversation: keep its turn order across files
        if doc.source_id.split("#")[0] != channel or not order:
            order.append([])
        channel = doc.source_id.split("#")[0]
        seq = order[-1]
        for line in doc.lines:
            # A line left out still stood between its neighbours: it breaks the chain of who answered whom.
            if not line.speaker:
                dropped["no_speaker"] += 1
                seq.append(("", ""))
                continue
            if line.reactions < config.min_reactions:
                dropped["below_min_reactions"] += 1
                seq.append(("", ""))
                continue
            text = clean_chat_text(line.text, config)
            if not text:
                dropped["empty_after_cleaning"] += 1
                seq.append(("", ""))
                continue
            by_speaker[line.speaker].append((text, reaction_weight(line.reactions, config.weighting), line.reactions))
            seq.append((line.speaker, text))
    if not by_speaker:
        raise ValueError("no messages with a speaker were found in the inputs")

    out = PersonaCorpus()
    kept = {s for s, msgs in by_speaker.items() if len(msgs) >= config.min_messages}
    persona_of: dict[str, str] = {}
    for speaker in sorted(kept, key=lambda s: -len(by_speaker[s])):
        p = slug(speaker)
        while p in out.messages or p == ALL:  # two display names, one slug: keep both apart
            p += "_"
        persona_of[speaker] = p
        out.names[p] = speaker
        out.messages[p] = [(t, w) for t, w, _ in by_speaker[speaker]]
    out.folded = {s: len(m) for s, m in by_speaker.items() if s not in kept}
    everything = [m for msgs in by_speaker.values() for m in msgs]
    out.messages[ALL] = [(t, w) for t, w, _ in everything]
    out.names[ALL] = "everyone"

    follows: dict[str, Counter] = defaultdict(Counter)
    replies: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for seq in order:
        speakers = [who for who, _ in seq if who]
        for a, b in zip(speakers, speakers[1:], strict=False):
            if a != b and a in persona_of and b in persona_of:
                follows[persona_of[a]][persona_of[b]] += 1
        for said, reply, who in turn_pairs(seq):
            replies[ALL].append((said, reply))
            if who in persona_of:
                replies[persona_of[who]].append((said, reply))
    out.follows = {a: dict(c) for a, c in follows.items()}
    out.replies = dict(replies)

    weights = [w for _, w, _ in everything]
    total, squares = sum(weights), sum(w * w for w in weights)
    top = sorted(everything, key=lambda m: -m[1])[:5]
    out.report = {
        "messages": len(everything),
        "speakers": len(by_speaker),
        "personas": sorted(p for p in out.messages if p != ALL),
        "folded_into_all": out.folded,
        "dropped": dict(dropped),
        "weighting": config.weighting,
        "total_weight": round(total, 3),
        # Kish's effective sample size: how many equally weighted messages the weighting is worth
        "effective_messages": round(total * total / squares, 1) if squares else 0.0,
        "top_weighted": [{"text": t, "reactions": r, "weight": round(w, 3)} for t, w, r in top],
    }
    return out


def build_personas(corpus: PersonaCorpus, markov: MarkovConfig,
                   progress: Callable[[list], Iterable] | None = None) -> dict[str, MarkovModel]:
    """One MarkovModel per persona, `all` included, each with the reply words of the turns it spoke (where it
    spoke any after someone else); `progress` wraps the personas (a tqdm-like callable)."""
    models = {}
    for p, msgs in (progress or (lambda items: items))(list(corpus.messages.items())):
        models[p] = MarkovModel.build(msgs, markov)
        if corpus.replies.get(p):
            models[p].replies = ReplyWords.build(corpus.replies[p])
    return models


def save_personas(models: dict[str, MarkovModel], corpus: PersonaCorpus, out: str | Path, config: PersonaConfig) -> Path:
    """Write OUT/markov/<persona>/ for every persona plus OUT/markov/personas.json, atomically as a whole."""
    target = Path(out) / MARKOV_DIR
    with atomic_directory(target) as tmp:
        for persona, model in models.items():
            model.save(tmp / persona)
        meta = {
            "personas": {p: {"name": corpus.names[p], "messages": len(corpus.messages[p])} for p in models},
            "follows": corpus.follows,
            "config": asdict(config),
            "report": corpus.report,
        }
        (tmp / PERSONAS_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def attribution_accuracy(corpus: PersonaCorpus, markov: MarkovConfig, holdout: float = 0.2, seed: int = 0) -> dict:
    """Hold out a share of each persona's messages, rebuild on the rest, and attribute each held-out
    message to the persona whose model gives it the highest mean log-likelihood. Returns accuracy vs chance."""
    rng = np.random.default_rng(seed)
    personas = [p for p in corpus.messages if p != ALL]
    if len(personas) < 2:
        raise ValueError(f"attribution needs at least 2 personas, found {len(personas)}")
    train, test = {}, []
    for p in personas:
        msgs = corpus.messages[p]
        order = rng.permutation(len(msgs))
        n_test = max(1, int(len(msgs) * holdout))
        test += [(msgs[i][0], p) for i in order[:n_test]]
        train[p] = [msgs[i] for i in order[n_test:]]
    models = {p: MarkovModel.build(train[p], markov) for p in personas}
    per = {p: [0, 0] for p in personas}
    for text, truth in test:
        scores = {p: m.log_likelihood(text) for p, m in models.items()}
        guess = max(scores, key=scores.get)
        per[truth][0] += guess == truth
        per[truth][1] += 1
    correct = sum(c for c, _ in per.values())
    return {
        "personas": len(personas),
        "held_out": len(test),
        "accuracy": correct / len(test),
        "chance": 1 / len(personas),
        "majority": max(n for _, n in per.values()) / len(test),
        "per_persona": {p: {"correct": c, "of": n} for p, (c, n) in per.items()},
    }


# ---- reading a persona folder -------------------------------------------------------------------------------


def persona_dirs(markov_dir: str | Path) -> dict[str, Path]:
    """The writers a `markov/` folder holds: {"default": it} when it is one model, else one per persona subdir."""
    markov_dir = Path(markov_dir)
    if (markov_dir / "config.json").is_file():
        return {DEFAULT_PERSONA: markov_dir}
    if not markov_dir.is_dir():
        return {}
    return {sub.name: sub for sub in sorted(markov_dir.iterdir())
            if sub.is_dir() and not sub.name.startswith(".") and (sub / "config.json").is_file()}


def load_personas(markov_dir: str | Path) -> dict[str, MarkovModel]:
    """Load `markov/`: one MarkovModel dir (persona 'default') or a folder of persona subdirs."""
    markov_dir = Path(markov_dir)
    if not markov_dir.is_dir():
        raise FileNotFoundError(f"no Markov models at {markov_dir}: build them with `python -m markov build`")
    personas = {name: MarkovModel.load(path) for name, path in persona_dirs(markov_dir).items()}
    if not personas:
        raise FileNotFoundError(f"{markov_dir} holds neither a Markov model nor persona subdirectories")
    if DEFAULT_PERSONA not in personas:
        # A group-chat folder (one per speaker plus 'all') still needs a default: prefer 'all'.
        personas[DEFAULT_PERSONA] = personas.get("all", next(iter(personas.values())))
    return personas


def load_persona_meta(markov_dir: str | Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Display names and who-follows-whom counts from `markov/personas.json` (empty when there is none)."""
    path = Path(markov_dir) / PERSONAS_FILE
    if not path.is_file():
        return {}, {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rebuild the personas with `python -m markov build`") from exc
    names = {p: str(info.get("name", p)) for p, info in (meta.get("personas") or {}).items() if isinstance(info, dict)}
    follows = {
        a: {b: int(n) for b, n in nexts.items() if isinstance(n, int | float)}
        for a, nexts in (meta.get("follows") or {}).items()
        if isinstance(nexts, dict)
    }
    return names, follows
