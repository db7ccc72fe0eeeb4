"""Token counts for `usage` and `max_tokens`, in the editor's own tokenizer (words where there is none)."""

from __future__ import annotations

import re
from typing import Any

from server.engine import Engine

_WORDS = re.compile(r"\w+|[^\w\s]")


def tokenizer_of(engine: Engine) -> Any | None:
    """The tokenizer the editor reads with (the cross-encoder's, or the default editor's bi-encoder's); else None."""
    return None if engine.traits is None else engine.traits.tokenizer


class TokenCounter:
    """Counts and cuts texts in tokens; one per engine."""

    def __init__(self, engine: Engine):
        self.tokenizer = tokenizer_of(engine)
        self.unit = "tokens" if self.tokenizer is not None else "words"

    def count(self, text: str) -> int:
        """Tokens in `text`, without special tokens."""
        if not text:
            return 0
        if self.tokenizer is None:
            return len(_WORDS.findall(text))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def total(self, texts: list[str]) -> int:
        """Tokens in all of `texts`, tokenized in one batch."""
        texts = [t for t in texts if t]
        if not texts:
            return 0
        if self.tokenizer is None:
            return sum(len(_WORDS.findall(t)) for t in texts)
        return sum(len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """The longest prefix of `text` with at most `max_tokens` tokens, cut at a token's end; and whether it cut."""
        if self.tokenizer is None:
            ends = [m.end() for m in _WORDS.finditer(text)]
        else:
            # The offsets map tokens back onto the text: the cut keeps the text's own case and spacing, which
            # decoding an uncased wordpiece tokenizer's ids would not.
            ends = [end for _, end in self.tokenizer(text, add_special_tokens=False,
                                                     return_offsets_mapping=True)["offset_mapping"]]
        if len(ends) <= max_tokens:
            return text, False
        return text[: ends[max_tokens - 1]].rstrip(), True
