"""Text rules every floor shares: words, URLs, normalizing, line identity, and the filter a line must pass.

A line's words are its lower-cased `[\\w']+` runs: the engine's filters, the prior, the first stage and evaluation
all split the same way, so "Hi there!" and "hi there" are one reply everywhere. `LineFilter` holds the rules that
need no conversation (URLs out, length, blocklists); the engine adds the ones that do (no echo, no repeat, no
parroting: `word_runs`, `holds_run`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

# A link with a scheme or "www.": chat exports and subtitle ads strip these (corpus.clean).
LINK = r"(?:https?://|www\.)\S+"
# What a reply must not carry: links, ftp, and bare domains such as "example.com/page".
URL = re.compile(rf"{LINK}|ftp://\S+|\b[\w.-]+\.(?:com|org|net|io|gov|edu|co|ly|me)(?:/\S*)?\b", re.I)
# A cheap test first: the full URL pattern backtracks on every word.
_URL_HINT = re.compile(r"://|www\.|\.(?:com|org|net|io|gov|edu|co|ly|me)\b", re.I)
_WORD = re.compile(r"[\w']+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.!?;:])")
# Words too common to count as a candidate picking up on the context.
STOPWORDS = frozenset(
    "a an the i you he she it we they me him her us them my your his its our their is are was were be been am "
    "do does did to of in on at for and or but so that this what not no yes i'm it's don't just".split()
)


# Contractions typed without their apostrophe that can be nothing else: "its", "ill", "were", "well", "lets",
# "hes", "shes", "id" and "whos" (often "whose") are words of their own, so they are not here. Chat types these in
# 5.0% of chitchat's lines. `words` reads them with their apostrophe, so "i dont think so" and "I don't think so" are
# the same words to every text rule, whichever of the two the user or the writer typed; chat cleaning can also write
# them back (`corpus.clean.restore_apostrophes`, off by default).
APOSTROPHE_LESS = {
    **{w + "nt": w + "n't" for w in ("do", "did", "was", "is", "does", "would", "could", "have", "has", "are",
                                      "should", "were", "had", "must", "need")},
    **{w + "ve": w + "'ve" for w in ("would", "could", "should", "you", "they")},
    "cant": "can't", "wont": "won't", "aint": "ain't", "im": "i'm", "ive": "i've", "youre": "you're",
    "youll": "you'll", "youd": "you'd", "theyre": "they're", "thats": "that's", "whats": "what's",
    "theres": "there's", "wheres": "where's", "hows": "how's", "heres": "here's", "itll": "it'll",
}


def words(text: str) -> list[str]:
    """Lower-case word tokens; a typographic apostrophe (as phones type it: "I’m") is read as "'", and a contraction
    typed without one ("dont", `APOSTROPHE_LESS`) as if it had it."""
    found = _WORD.findall(text.casefold().replace("\u2019", "'"))
    return list(map(APOSTROPHE_LESS.get, found, found))  # C-speed: a word not in the table is itself


# A question typed without its "?" ("what's your dream job", "do you like hiking"): the last sentence opens as a
# question does, a question word before an auxiliary, or an auxiliary before its subject, and nothing ends it. On
# DailyDialog's train lines with their end stripped, it finds 70% of the questions and calls 0.4% of the other lines
# (those without a "?") questions; it finds 3,004 more in chitchat's 258k lines beside their 42,742 with a "?"
# (benchmarks/RESULTS.md, "Seventeenth pass").
# Typed without apostrophes ("dont you like it", "whats up") they ask the same: 208 more of chitchat's 256,046
# lines, and 40 read were all questions in form (benchmarks/RESULTS.md, "Nineteenth pass").
_AUX_WORDS = ("do does did are is was were can could would will have has had should shall may might am don't doesn't "
              "didn't aren't isn't wasn't weren't can't couldn't won't wouldn't haven't hasn't shouldn't").split()
_AUX = "|".join(_AUX_WORDS + [typed for typed, meant in APOSTROPHE_LESS.items() if meant in _AUX_WORDS])
_ASKS_UNMARKED = re.compile(
    rf"\W*(?:(?:so|and|but|ok|okay|oh|well|hey|hi|hello|haha|lol)\W+)?"
    rf"(?:(?:what|how|where|who)'?s|(?:what|why|how|where|when|who)\s+(?:{_AUX}|about|many|much|long|old|come|often|far)"
    rf"|what\s+if|(?:{_AUX})\s+(?:you|i|we|they|he|she|there|your|anyone|anybody|u|ya)|(?!do\b)(?:{_AUX})\s+(?:it|that|this))"
    r"\b[^.!?]*$", re.I)
_FIRST_WORD = re.compile(r"\W*(\w+)")
_AGREES = re.compile(rf"\W*so\W+(?:{_AUX})\s+\w+\W*$", re.I)  # "so do i", "so am i": agreeing, not asking
# The words such a sentence can open with (up to an apostrophe): most lines open with none, and this one set lookup
# spares them the regex above (a third of the cost over 4,096 writer lines).
_ASK_OPENERS = frozenset(
    "so and but ok okay oh well hey hi hello haha lol what why how where when who do does did are is was were can "
    "could would will have has had should shall may might am don doesn didn aren isn wasn weren couldn won wouldn "
    "haven hasn shouldn".split())
_ASK_OPENERS |= {typed for typed, meant in APOSTROPHE_LESS.items() if meant.split("'")[0] in _ASK_OPENERS} | {"whos"}


def asks(text: str) -> bool:
    """True for a line that asks something: it holds a question mark, or its last sentence opens as a question and
    has no end (the mirror rule, the editor's `asks_back`)."""
    if "?" in text:
        return True
    text = text.rstrip().replace("\u2019", "'")  # "don’t you" is "don't you", as `words` reads it
    start = max(text.rfind(". "), text.rfind("! ")) + 1  # where the last sentence starts
    first = _FIRST_WORD.match(text, start)
    return (first is not None and first.group(1).casefold() in _ASK_OPENERS
            and _ASKS_UNMARKED.match(text, start) is not None and _AGREES.match(text, start) is None)


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")


def sentence_spans(text: str, most: int = 4) -> list[str]:
    """Every run of whole sentences of a text of 2 to `most` sentences, but the whole text ("Oh nice! What was
    good? Pizza." -> "Oh nice!", "Oh nice! What was good?", "What was good?", ...); none for one sentence or more
    than `most`."""
    parts = [p for p in _SENTENCE_BREAK.split(text.strip()) if p]
    if not 2 <= len(parts) <= most:
        return []
    return [" ".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
            if j - i < len(parts)]


def mirrors(text: str, text_words: list[str], question_words: frozenset[str] | None, share: float) -> bool:
    """True for a reply with a sentence that asks back taking `share` or more of its own content words from the
    question it answers (`question_words`: the question's words, None when the line answered asks nothing; share 0:
    never). Sentence by sentence: "Great! How about you? What was your favorite movie?" mirrors "what is your favorite
    movie?" in its last sentence, where the whole reply's words dilute it; "My favorite movie is Jaws. What about
    you?" answers in the question's words and asks back in its own, as people do."""
    if question_words is None or share <= 0 or not asks(text):
        return False
    parts = _SENTENCE_BREAK.split(text)
    if len(parts) == 1:  # the reply is its one sentence: its words are read already
        return overlap(text_words, question_words) >= share
    return any(asks(p) and overlap(words(p), question_words) >= share for p in parts)


def dedupe_key(text: str) -> str:
    """Case- and punctuation-insensitive identity of a line: 'Hi there!' and 'hi there' are the same reply."""
    return " ".join(words(text))


# Runs compare words with their contractions spelled out, so "So what's your favorite movie?" re-says "what is your
# favorite movie?". One spelling per suffix ("'s" is "is", "'d" is "would"): a contraction meets itself and its
# common spelling, not a rarer one ("he's been" does not meet "he has been"). Spelled out, "I'm not sure" is 4 words:
# chitchat's people share a run of 4 with the line they answer in 1.14% of replies, 1.05% counting surface words
# (benchmarks/RESULTS.md, "Sixteenth pass"). `words` reads a typographic apostrophe as "'", so "what’s" is spelled
# out too.
_CONTRACTIONS = (("n't", "not"), ("'re", "are"), ("'ve", "have"), ("'ll", "will"), ("'d", "would"), ("'m", "am"),
                 ("'s", "is"))
_IRREGULAR = {"won't": ("will", "not"), "can't": ("can", "not"), "shan't": ("shall", "not")}


@functools.lru_cache(maxsize=4096)  # a few hundred contractions come back turn after turn
def _spelled_out(word: str) -> tuple[str, ...]:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    for suffix, full in _CONTRACTIONS:
        if word.endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)], full
    return (word,)


def _runs(text_words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    """The runs of n consecutive words, contractions spelled out, in order (none for a shorter line)."""
    if "'" in "".join(text_words):  # one C-speed scan: most lines hold no apostrophe
        text_words = [part for w in text_words for part in (_spelled_out(w) if "'" in w else (w,))]
    return zip(*(text_words[i:] for i in range(n)), strict=False)  # the shortest slice ends it


# British and American spellings of the same chat words. Where a line is compared with the line it answers (runs,
# a question's words), one meets the other: "What is your favorite food?" re-says "what's your favourite food?", and
# both escaped the rules on one letter (the chitchat writer spells American, people write both). The words
# themselves stay as typed: the writer's vocabulary, dedupe keys and the first stage are unchanged.
_BRITISH_AMERICAN = dict(pair.split(":") for pair in (
    "favourite:favorite favourites:favorites favour:favor favours:favors colour:color colours:colors "
    "coloured:colored flavour:flavor flavours:flavors neighbour:neighbor neighbours:neighbors "
    "neighbourhood:neighborhood honour:honor humour:humor behaviour:behavior labour:labor rumour:rumor "
    "harbour:harbor mould:mold centre:center centres:centers theatre:theater theatres:theaters metre:meter "
    "metres:meters litre:liter fibre:fiber organise:organize organised:organized realise:realize "
    "realised:realized recognise:recognize recognised:recognized apologise:apologize apologised:apologized "
    "travelled:traveled travelling:traveling traveller:traveler cancelled:canceled cancelling:canceling "
    "jewellery:jewelry grey:gray programme:program catalogue:catalog analyse:analyze defence:defense "
    "offence:offense licence:license pyjamas:pajamas aeroplane:airplane mum:mom practise:practice "
    "yoghurt:yogurt moustache:mustache sceptical:skeptical judgement:judgment ageing:aging "
    "learnt:learned dreamt:dreamed spelt:spelled burnt:burned").split())
_OTHER_SPELLING = {**_BRITISH_AMERICAN, **{american: british for british, american in _BRITISH_AMERICAN.items()}}
MIXED_SPELLINGS = 4  # a run with more words of two spellings than this gets its one other spelling, not every mix


def also_spelled(text_words: Iterable[str]) -> frozenset[str]:
    """The words and their other spellings (British or American), as a set: what a question's words are to a reply
    that may spell them the other way (`mirrors`)."""
    found = frozenset(text_words)
    return found | {_OTHER_SPELLING[w] for w in found if w in _OTHER_SPELLING}


def word_runs(text_words: list[str], n: int) -> set[tuple[str, ...]]:
    """Every run of n consecutive words, contractions spelled out, and each again with its words' other spellings
    (British or American; none for n < 1 or a shorter line). Built for a turn's few forbidden lines, so a candidate's
    own runs (`holds_run`) are read as written."""
    runs = set(_runs(text_words, n)) if n >= 1 else set()
    for run in [run for run in runs if not _OTHER_SPELLING.keys().isdisjoint(run)]:
        if sum(w in _OTHER_SPELLING for w in run) <= MIXED_SPELLINGS:  # every mix of the two spellings
            runs.update(itertools.product(*((w, _OTHER_SPELLING[w]) if w in _OTHER_SPELLING else (w,) for w in run)))
        else:  # 2^k runs would grow without bound with echo_run: the run with every word spelled the other way
            runs.add(tuple(_OTHER_SPELLING.get(w, w) for w in run))
    return runs


def holds_run(text_words: list[str], runs: set[tuple[str, ...]]) -> bool:
    """Whether the words hold one of `runs` (`word_runs`, all of one length): one set probe per run of the words,
    so the cost does not grow with how many runs there are."""
    return bool(runs) and not runs.isdisjoint(_runs(text_words, len(next(iter(runs)))))


def normalize(text: str) -> str:
    """Collapse whitespace and tidy spaces before punctuation."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def content_words(text_words: list[str]) -> list[str]:
    """The words that can carry a topic: those not in STOPWORDS, in order."""
    return [w for w in text_words if w not in STOPWORDS]


def overlap(candidate_words: list[str], context_words: frozenset[str]) -> float:
    """Share of the candidate's content words that also occur in the context (0 when it has none)."""
    content = content_words(candidate_words)
    if not content:
        return 0.0
    return sum(w in context_words for w in content) / len(content)


@dataclass(frozen=True)
class LineRules:
    """What a line must be to be said, whoever asks: the engine's config extends these with the turn's rules."""

    min_words: int = 1
    max_words: int = 40
    max_chars: int = 300
    max_sentences: int = 0  # 0: any number; a break is ".", "!" or "?" then a space (so "Wait... what?" is two)
    blocklist_words: tuple[str, ...] = ()
    blocklist_regexes: tuple[str, ...] = ()
    remove_urls: bool = True

    def __post_init__(self) -> None:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is above max_words ({self.max_words})")
        if self.max_sentences < 0:
            raise ValueError(f"max_sentences must be >= 0 (0: any), got {self.max_sentences}")
        for pattern in self.blocklist_regexes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"blocklist regex {pattern!r} does not compile: {exc}") from exc

    def record(self) -> dict:
        """These rules alone (not a subclass's other fields) as JSON values, to keep with what they built."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(LineRules)}


class LineFilter:
    """The rules one line must pass on its own: URLs removed (and the text tidied), min_words..max_words words, at
    most max_chars characters and max_sentences sentences (0: any), no blocklisted word, no blocklist regex match."""

    def __init__(self, rules: LineRules | None = None):
        self.rules = rules or LineRules()
        blocked = [re.escape(w.casefold()) for w in self.rules.blocklist_words if w.strip()]
        self._words = re.compile(r"\b(?:" + "|".join(blocked) + r")\b", re.I) if blocked else None
        self._regexes = [re.compile(p, re.I) for p in self.rules.blocklist_regexes]

    def __call__(self, text: str) -> str | None:
        """The cleaned text, or None when it must not be said."""
        text, text_words = self.clean(text, words(text))
        return text if self.allows(text, text_words) else None

    def clean(self, text: str, text_words: list[str]) -> tuple[str, list[str]]:
        """The text with URLs removed and spacing tidied, and its words (split again only when the text changed)."""
        if self.rules.remove_urls and _URL_HINT.search(text):
            text = normalize(URL.sub(" ", text))
            return text, words(text)
        if "  " in text or text != text.strip():
            text = normalize(text)
        return text, text_words

    def allows(self, text: str, text_words: list[str]) -> bool:
        """Length bounds (words, characters, sentences) and blocklists, given the text's words."""
        rules = self.rules
        if not rules.min_words <= len(text_words) <= rules.max_words or len(text) > rules.max_chars:
            return False
        # maxsplit: a line of many sentences is refused after max_sentences + 1 of them, not split whole
        if rules.max_sentences and len(_SENTENCE_BREAK.split(text, rules.max_sentences)) > rules.max_sentences:
            return False
        if self._words is not None and self._words.search(text):
            return False
        return not any(r.search(text) for r in self._regexes)
