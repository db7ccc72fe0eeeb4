"""The pair-encoding contract: `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]`, what the cross-encoder consumes.

The editor owns this format; `reranker.windows` and `reranker.prepare` write training samples with it in the
same layout the model scores at inference. Kept free of torch and transformers (a tokenizer is passed in), so
prepare's worker processes pay no torch import for it.
"""

from __future__ import annotations

from corpus.tokens import encode_lines  # noqa: F401  (the pair encoding's tokenization, re-exported)

# Encoded overhead of a sample: [CLS] ... [SEP] ... [SEP].
SPECIALS = 3


def delimiter_id(tokenizer, delimiter: str = "|") -> tuple[int, bool]:
    """Id of the context delimiter; adds it as a token only if the tokenizer lacks it (True: resize embeddings)."""
    ids = tokenizer(delimiter, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    if len(ids) == 1 and ids[0] != unk:
        return int(ids[0]), False
    token_id = tokenizer.convert_tokens_to_ids(delimiter)
    if token_id is not None and token_id != unk:
        return int(token_id), False
    tokenizer.add_tokens([delimiter], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(delimiter)
    if token_id is None or token_id == unk:
        raise ValueError(f"could not add the delimiter {delimiter!r} to the tokenizer")
    return int(token_id), True


def encode_pair(
    context_ids: list[list[int]],
    candidate_ids: list[int],
    *,
    cls_id: int,
    sep_id: int,
    delim_id: int,
    max_length: int,
) -> list[int]:
    """Encode `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]`, dropping the oldest context first to fit max_length.

    The candidate is never shortened while any context is left to drop. Only a candidate longer than
    max_length - 3 on its own is cut, at its end, as a last resort (the context is then empty). When the
    single newest context line is too long by itself, its oldest tokens are cut and its newest kept.
    """
    if max_length < SPECIALS + 1:
        raise ValueError(f"max_length must be at least {SPECIALS + 1}, got {max_length}")
    candidate = list(candidate_ids)[: max_length - SPECIALS]
    budget = max_length - SPECIALS - len(candidate)
    kept: list[list[int]] = []
    used = 0
    for line in reversed(context_ids):  # newest first
        cost = len(line) + (1 if kept else 0)
        if used + cost <= budget:
            kept.append(list(line))
            used += cost
            continue
        if not kept and budget > 0:
            kept.append(list(line)[len(line) - budget :])
        break
    kept.reverse()
    ids = [cls_id]
    for i, line in enumerate(kept):
        if i:
            ids.append(delim_id)
        ids.extend(line)
    ids.append(sep_id)
    ids.extend(candidate)
    ids.append(sep_id)
    return ids
