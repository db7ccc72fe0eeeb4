"""The pair encoding `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]`: encode_pair, delimiter handling, encode_lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reranker.pairs import delimiter_id, encode_lines, encode_pair
from reranker.windows import encoded_length

CLS, SEP, DELIM = 101, 102, 1064


@settings(max_examples=200, deadline=None)
@given(
    context=st.lists(st.lists(st.integers(1, 99), min_size=0, max_size=30), max_size=8),
    candidate=st.lists(st.integers(1, 99), min_size=1, max_size=60),
    max_length=st.integers(4, 64),
)
def test_encode_pair_drops_oldest_context_first(context, candidate, max_length):
    ids = encode_pair(context, candidate, cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=max_length)
    assert len(ids) <= max_length and ids[0] == CLS and ids[-1] == SEP
    first_sep = ids.index(SEP)
    kept_candidate = ids[first_sep + 1 : -1]
    if len(candidate) <= max_length - 3:
        assert kept_candidate == candidate
    else:  # the last resort: cut at its end, no context
        assert kept_candidate == candidate[: max_length - 3] and first_sep == 1
    body = ids[1:first_sep]
    if encoded_length(map(len, context), len(candidate)) <= max_length:
        assert ids == encode_pair(
            context, candidate, cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=10**6
        )
    # What is kept of the context is its end: the newest lines, the oldest kept one possibly cut at its start.
    flat_full = [tok for i, line in enumerate(context) for tok in ([DELIM] if i else []) + line]
    assert body == flat_full[len(flat_full) - len(body) :]


def test_encode_pair_hand_checked():
    ids = encode_pair([[1, 2], [3], [4, 5]], [6, 7], cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=11)
    assert ids == [CLS, 3, DELIM, 4, 5, SEP, 6, 7, SEP]  # [1, 2] and its delimiter did not fit
    ids = encode_pair([[1, 2], [3], [4, 5]], [6, 7], cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=12)
    assert ids == [CLS, 1, 2, DELIM, 3, DELIM, 4, 5, SEP, 6, 7, SEP]
    # The newest line alone is too long: its newest tokens are kept.
    ids = encode_pair([[1, 2, 3, 4, 5]], [6], cls_id=CLS, sep_id=SEP, delim_id=DELIM, max_length=6)
    assert ids == [CLS, 4, 5, SEP, 6, SEP]


def test_encode_pair_with_the_real_minilm_tokenizer(minilm_tokenizer):
    tok = minilm_tokenizer
    delim, added = delimiter_id(tok)
    assert (delim, added) == (tok.convert_tokens_to_ids("|"), False)
    context = tok(["Hi there.", "How are you?"], add_special_tokens=False)["input_ids"]
    candidate = tok("Fine, thanks.", add_special_tokens=False)["input_ids"]
    ids = encode_pair(
        context, candidate, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, delim_id=delim, max_length=64
    )
    assert tok.decode(ids) == "[CLS] hi there. | how are you? [SEP] fine, thanks. [SEP]"
    # The same text through the tokenizer's own pair encoding gives the same ids.
    assert ids == tok("hi there. | how are you?", "fine, thanks.")["input_ids"]


def test_delimiter_is_added_only_when_missing():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hello": 3, "world": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    delim, added = delimiter_id(tok, "|")
    assert added and delim == 5
    assert tok("hello | world", add_special_tokens=False)["input_ids"] == [3, 5, 4]
    assert delimiter_id(tok, "|") == (5, False)  # a second call finds it


def test_encode_lines_equals_the_tokenizer_call(minilm_path):
    from transformers import AutoTokenizer

    texts = ["Hello there!", "", "Naïve café — “quoted”…", "ALL CAPS LINE", "word " * 300, "emoji 👏 here"]
    # A freshly loaded tokenizer: its backend still carries tokenizer.json's padding and truncation to 128.
    fresh = AutoTokenizer.from_pretrained(minilm_path)
    got = encode_lines(fresh, texts, batch_size=4)
    assert [len(ids) for ids in got[:2]] == [3, 0] and len(got[4]) == 300
    assert got == AutoTokenizer.from_pretrained(minilm_path)(texts, add_special_tokens=False)["input_ids"]
