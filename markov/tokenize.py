"""Word tokens that carry their own leading space, so detokenizing is a plain join.

A token is the surface text plus a leading space when whitespace preceded it (or when it starts
the line). "hey, you?" becomes [" hey", ",", " you", "?"] and "".join(tokens).lstrip() gives the
text back. Case, punctuation, emoji and contractions ("don't") are kept as they are; runs of
whitespace collapse to one space. Quotes and brackets need no guessing: "(hi)" is [" (", "hi", ")"].
"""

from __future__ import annotations

import re

import numpy as np

from corpus.text import LINK

_WORD = rf"""
        {LINK}                              # URLs stay whole
      | [@#]?\w+(?:['’.\-]\w+)*             # words, numbers, contractions, don't, e-mail, 3.5, U.S
      | [.!?…]+                             # sentence punctuation runs: "?!", "..."
      | [^\w\s]                             # any other single symbol or emoji code point
"""
_TOKEN = re.compile(rf"(\s*)({_WORD})", re.VERBOSE)
_RAW = re.compile(rf"\s*(?:{_WORD})", re.VERBOSE)  # the same tokens, leading whitespace included, no groups


def tokenize(text: str) -> list[str]:
    """Split text into tokens that keep their leading space; the first token always gets one."""
    tokens = [(" " if space or i == 0 else "") + word for i, (space, word) in enumerate(_TOKEN.findall(text))]
    return tokens


def word_starts(text: str) -> list[int]:
    """The character offset in `text` where each of its tokens' words begins (after its leading space)."""
    return [m.start(2) for m in _TOKEN.finditer(text)]


def tokenize_many(texts: list[str], index: dict[str, int], first_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tokenize many non-blank lines at once into ids, adding new pieces to `index`: (ids, tokens per line).

    Equal to `tokenize` line by line, but one regex pass over the joined text and one dict lookup per
    distinct raw token make it several times faster on a corpus.
    """
    joined = "\n" + "\n".join(t.replace("\n", " ") for t in texts)  # every line opens with "\n"
    raw = _RAW.findall(joined)
    codes = dict.fromkeys(raw)
    ids, opens = [], []
    for i, r in enumerate(codes):
        codes[r] = i
        piece = " " + r.lstrip() if r[0].isspace() else r
        ids.append(index.setdefault(piece, len(index) + first_id))
        opens.append("\n" in r)
    code = np.fromiter(map(codes.__getitem__, raw), dtype=np.int64, count=len(raw))
    starts = np.flatnonzero(np.asarray(opens, dtype=bool)[code])
    if len(starts) != len(texts):
        raise ValueError("tokenize_many needs non-blank lines")
    return np.asarray(ids, dtype=np.int64)[code], np.diff(np.append(starts, len(raw)))


def detokenize(tokens: list[str]) -> str:
    """Join tokens back into natural text."""
    return "".join(tokens).lstrip(" ")


def normalize(text: str) -> str:
    """The text as the tokenizer sees it: whitespace collapsed, nothing else changed."""
    return detokenize(tokenize(text))
