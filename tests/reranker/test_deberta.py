"""The DeBERTa-v3 path offline: a tiny DebertaV2 model and a sentencepiece tokenizer trained in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reranker import Reranker, RerankerConfig

from .conftest import WORDS, write_tiny_deberta


@pytest.fixture(scope="module")
def deberta_dir(tmp_path_factory) -> str:
    return write_tiny_deberta(tmp_path_factory.mktemp("tiny-deberta"))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_deberta_loads_encodes_and_round_trips(deberta_dir, tmp_path, pooling):
    rr = Reranker.from_backbone(deberta_dir, RerankerConfig(pooling=pooling, max_length=48))
    tok = rr.tokenizer
    assert (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    # In-vocabulary words round-trip, none of them as [UNK].
    text = " ".join(WORDS[:12])
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids).strip() == text
    # "|" is not a piece of this vocabulary: it was added as one token, and the embeddings grew to match.
    assert tok.convert_ids_to_tokens(rr.delim_id) == "|"
    assert rr.model.get_input_embeddings().num_embeddings >= len(tok) > rr.delim_id
    # [CLS] hello how | are you [SEP] fine thanks [SEP]
    (encoded,) = rr.encode(["hello how", "are you"], ["fine thanks"])
    piece = {w: tok(w, add_special_tokens=False)["input_ids"] for w in ("hello how", "are you", "fine thanks")}
    expected = [1, *piece["hello how"], rr.delim_id, *piece["are you"], 2, *piece["fine thanks"], 2]
    assert encoded == expected
    assert tok.convert_ids_to_tokens(encoded)[:1] == ["[CLS]"] and encoded.count(2) == 2
    # Save/load keeps the added delimiter and gives equal scores.
    context, candidates = ["hello how are you", "fine thanks"], ["my name is cat", "yes", "the movie"]
    before = rr.score(context, candidates)
    rr.save(tmp_path / "m")
    loaded = Reranker.load(tmp_path / "m", dtype=torch.float32)
    assert loaded.delim_id == rr.delim_id
    np.testing.assert_allclose(loaded.score(context, candidates), before, rtol=1e-5, atol=1e-6)
