"""Dialogue as plain text, in the two shapes TV scripts and dialogue datasets come in.

- **Speaker script**: one `Speaker: text` line per utterance, a blank line between scenes (a Friends episode).
  Each scene is a Document `SOURCE#scene-N`, so the scenes of one episode share its train/val/test split and no
  context runs across a scene break. Stage directions (the speaker `Scene`, and whole lines in brackets or
  parentheses) are dropped and counted; the speakers are kept, so `markov build --by-speaker` can make personas.
- **Dialogue blocks**: one utterance a line, a blank line between dialogues (DailyDialog). Each dialogue is a
  Document `SOURCE@N`: dialogues are independent, so each takes its own split. Tokenized text ("Let ' s see ,
  you ' re ...") is joined back into ordinary text.

Both are told apart from OPUS mono text (one sentence a line, no blank lines) and from prose (paragraphs of
hard-wrapped lines, which mostly end mid-sentence) by `text_shape`, from the first lines of a file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from corpus.documents import Document, Line
from corpus.report import Report

SCRIPT, BLOCKS, MONO = "script", "blocks", "mono"
SHAPES = (SCRIPT, BLOCKS, MONO)
SAMPLE_LINES = 400  # lines read to tell a file's shape

_SPEAKER = re.compile(r"^\s*([^\s:(\[][^:]{0,39}?)\s*:\s+(\S.*)$")
_STAGE_SPEAKERS = frozenset({"scene", "stage", "setting", "note", "narrator"})
_DIRECTION = re.compile(r"^\s*[(\[].*[)\]]\s*$")  # a whole line in (parentheses) or [brackets]
_ENDS_SENTENCE = re.compile(r"""[.!?…"'”’)\]*~:;-]\s*$""")
# Tokenized dialogue: a space before punctuation, or a lone apostrophe between word pieces ("it ' s", "don ' t").
_TOKENIZED = re.compile(r"\w ' \w| [,.?!;:](?: |$)")
_APOSTROPHE = re.compile(r"(\w) ' (\w)")
_SPACE_BEFORE = re.compile(r" (?=[.,!?;:%)\]}…])")
_SPACE_AFTER = re.compile(r"(?<=[(\[{$]) ")
_SPACED_DOTS = re.compile(r"\.(?: \.)+")
_QUOTED = re.compile(r'" ([^"]*?) "')


def text_shape(text: str) -> str:
    """SCRIPT, BLOCKS or MONO, from the first SAMPLE_LINES lines of a text file."""
    lines = text.split("\n", SAMPLE_LINES)[:SAMPLE_LINES]
    filled = [line for line in lines if line.strip()]
    if len(filled) < 3:
        return MONO
    if sum(bool(_SPEAKER.match(line)) for line in filled) >= 0.7 * len(filled):
        return SCRIPT
    blanks = [line for line in lines if not line.strip()]
    sentences = sum(bool(_ENDS_SENTENCE.search(line)) for line in filled) / len(filled)
    # Dialogue blocks are short runs of whole utterances between clean blank lines. Prose paragraphs are
    # hard-wrapped mid-sentence; scraped mono text carries whitespace-only junk lines between its sentences.
    clean_breaks = all(line in ("", "\r") for line in blanks)
    if len(blanks) >= 2 and clean_breaks and len(filled) / (len(blanks) + 1) <= 60 and sentences >= 0.8:
        return BLOCKS
    return MONO


def detokenize(line: str) -> str:
    """`Let ' s see . . . you ' re a " Capricorn " .` -> `Let's see... you're a "Capricorn".`"""
    line = " ".join(line.split())
    line = _APOSTROPHE.sub(r"\1'\2", line)
    line = _SPACED_DOTS.sub("...", line)
    line = _QUOTED.sub(r'"\1"', line)
    line = _SPACE_BEFORE.sub("", line)
    return _SPACE_AFTER.sub("", line)


def parse_script(text: str, source_id: str, report: Report) -> Iterator[Document]:
    """One Document per scene of a `Speaker: text` script; stage directions dropped and counted."""
    scene: list[Line] = []
    n = 0
    for raw in [*text.split("\n"), ""]:
        if not raw.strip():
            if scene:
                yield Document(f"{source_id}#scene-{n}", scene, "script")
                n += 1
                scene = []
            continue
        match = _SPEAKER.match(raw)
        if match is None:
            report.count("script_lines_without_speaker")
            continue
        speaker, said = match.group(1).strip(), match.group(2).strip()
        if speaker.casefold() in _STAGE_SPEAKERS or _DIRECTION.match(said):
            report.count("stage_directions")
            continue
        scene.append(Line(said, speaker=speaker.strip("#").title() if speaker.startswith("#") else speaker))
    if n == 0:
        report.problem(source_id, "no `Speaker: text` lines found")
        return
    report.count("script_files")


def parse_blocks(text: str, source_id: str, report: Report) -> Iterator[Document]:
    """One Document per blank-line-separated dialogue; tokenized text is joined back."""
    filled = [line for line in text.split("\n", SAMPLE_LINES)[:SAMPLE_LINES] if line.strip()]
    tokenized = sum(bool(_TOKENIZED.search(line)) for line in filled) >= 0.3 * max(len(filled), 1)
    block: list[Line] = []
    n = 0
    for raw in [*text.split("\n"), ""]:
        if raw.strip():
            block.append(Line(detokenize(raw) if tokenized else " ".join(raw.split())))
            continue
        if block:
            yield Document(f"{source_id}@{n}", block, "dialogue")
            n += 1
            block = []
    if n == 0:
        report.problem(source_id, "no dialogue lines found")
        return
    report.count("dialogue_files")
    if tokenized:
        report.count("detokenized_files")
