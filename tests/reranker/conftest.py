"""Tiny models built in the test: a 2-layer BERT with a word-level vocabulary written here."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

WORDS = (
    "hello hi how are you fine thanks good bad what is your name my the a movie cat dog yes no maybe "
    "where do live in city town ok sure why not because it was great terrible i like to eat pizza "
    "and tea coffee today tomorrow see later bye night morning"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "|", "?", ".", ","]


def write_tiny_bert(directory, *, seed: int = 0, hidden: int = 32) -> str:
    """Save a tiny random BERT classifier (num_labels=1) plus a word-level tokenizer into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    assert len(tokenizer) == len(vocab)
    config = BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        num_labels=1,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """Path of a tiny BERT backbone directory."""
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def write_tiny_deberta(directory, *, seed: int = 0) -> str:
    """A tiny DeBERTa-v2 classifier plus a sentencepiece model trained here, laid out like a hub DeBERTa-v3 copy.

    The pieces are pinned to DeBERTa-v3's ids ([PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3) by training sentencepiece
    with those as its pad/bos/eos/unk pieces; user-defined [CLS]/[SEP] on top of default ids is what turns
    every word into [UNK].
    """
    import json
    import random

    import sentencepiece as spm
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(400)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(directory / "spm"), vocab_size=150, model_type="unigram",
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]",
        unk_id=3, unk_piece="[UNK]", user_defined_symbols=["[MASK]"], hard_vocab_limit=False, minloglevel=2,
    )
    (directory / "spm.vocab").unlink()
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "DebertaV2Tokenizer",
                                                                 "do_lower_case": False}))
    sp = spm.SentencePieceProcessor(model_file=str(directory / "spm.model"))
    config = DebertaV2Config(
        vocab_size=sp.get_piece_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, relative_attention=True, position_buckets=16,
        pos_att_type=["p2c", "c2p"], type_vocab_size=0, position_biased_input=False, num_labels=1,
    )
    torch.manual_seed(seed)
    DebertaV2ForSequenceClassification(config).save_pretrained(directory)
    return str(directory)
