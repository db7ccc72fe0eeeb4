"""Word tokens that carry their own leading space, so detokenizing is a plain join.

A token is the surface text plus a leading space when whitespace preceded it (or when it starts
the line). "hey, you?" becomes [" hey", ",", " you", "?"] and "".join(tokens).lstrip() gives the
text back. Case, punctuation, emoji and contractions ("don't") are kept as they are; runs of
whitespace collapse to one space. Quotes and brackets need no guessing: "(hi)" is [" (", "hi", ")"].
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""(\s*)(
        (?:https?://|www\.)\S+              # URLs stay whole
      | [@#]?\w+(?:['’.\-]\w+)*             # words, numbers, contractions, don't, e-mail, 3.5, U.S
      | [.!?…]+                             # sentence punctuation runs: "?!", "..."
      | [^\w\s]                             # any other single symbol or emoji code point
    )""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[str]:
    """Split text into tokens that keep their leading space; the first token always gets one."""
    tokens = [(" " if space or i == 0 else "") + word for i, (space, word) in enumerate(_TOKEN.findall(text))]
    return tokens


def detokenize(tokens: list[str]) -> str:
    """Join tokens back into natural text."""
    return "".join(tokens).lstrip(" ")


def normalize(text: str) -> str:
    """The text as the tokenizer sees it: whitespace collapsed, nothing else changed."""
    return detokenize(tokenize(text))
