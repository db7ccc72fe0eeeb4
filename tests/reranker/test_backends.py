"""Inference backends of the bi-encoder: exported graphs agree with torch, the cache is reused and rebuilt, fallbacks."""

from __future__ import annotations

import logging
import math
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from reranker import backends  # noqa: E402
from reranker.backends import CACHE_DIR, resolve_backend  # noqa: E402
from reranker.biencoder import BiEncoder  # noqa: E402
from reranker.editor import Editor  # noqa: E402

TEXTS = ["hello", "how are you", "i like to eat pizza and tea today", "what is your name ?", "ok", "bye see you later"]


@pytest.fixture()
def saved(tmp_path, tiny_bert):
    """A saved tiny bi-encoder directory (its own copy: tests write caches into it)."""
    return BiEncoder.from_backbone(tiny_bert, dtype=torch.float32).save(tmp_path / "bi")


@pytest.fixture()
def exports(monkeypatch):
    """Counts the graph exports."""
    calls = []
    real = backends.export

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "export", counting)
    return calls


def entries(directory) -> list[str]:
    return sorted(p.name for p in (directory / CACHE_DIR).iterdir() if not p.name.startswith("."))


def test_onnx_embeddings_match_torch(saved, exports):
    ref, _ = BiEncoder.load(saved, backend="torch", dtype=torch.float32).embed(TEXTS)
    fast = BiEncoder.load(saved, backend="onnx")
    assert fast.backend == "onnx" and not fast.approximate
    vecs, tokens = fast.embed(TEXTS)
    assert len(exports) == 1 and (saved / CACHE_DIR).is_dir()
    np.testing.assert_allclose(vecs, ref, atol=1e-4, rtol=1e-4)
    assert tokens.tolist() == [len(t.split()) for t in TEXTS]


def test_openvino_embeddings_match_torch(saved):
    pytest.importorskip("openvino")
    ref, _ = BiEncoder.load(saved, backend="torch", dtype=torch.float32).embed(TEXTS)
    fast = BiEncoder.load(saved, backend="openvino")
    assert fast.backend == "openvino"
    np.testing.assert_allclose(fast.embed(TEXTS)[0], ref, atol=1e-4, rtol=1e-4)


def test_int8_is_close_and_marked_approximate(saved):
    ref, _ = BiEncoder.load(saved, backend="torch", dtype=torch.float32).embed(TEXTS)
    fast = BiEncoder.load(saved, backend="onnx-int8")
    assert fast.backend == "onnx-int8" and fast.approximate
    vecs, _ = fast.embed(TEXTS)
    cos = (vecs * ref).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.98, cos
    assert not np.allclose(vecs, ref, atol=1e-6)  # it really runs int8
    np.testing.assert_allclose(fast.embed(TEXTS, exact=True)[0], ref, atol=1e-5)  # and exact=True really is fp32


@pytest.mark.parametrize("backend", ["onnx", "openvino", "onnx-int8"])
def test_a_token_heads_largest_logit_comes_from_every_backend_as_from_torch(tmp_path, tiny_bert, exports, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    torch.manual_seed(3)
    bi = BiEncoder.from_backbone(tiny_bert, dtype=torch.float32)
    bi.save(tmp_path / "plain")
    bi.set_token_head(torch.nn.Linear(bi.hidden_size, 1))
    bi.save(tmp_path / "bi")
    assert (tmp_path / "bi" / "token_head.safetensors").is_file()
    ref = BiEncoder.load(tmp_path / "bi", backend="torch", dtype=torch.float32).read_until(TEXTS, math.inf)
    assert ref.done.all() and np.ptp(ref.token_max) > 0
    np.testing.assert_allclose(ref.vecs, BiEncoder.load(tmp_path / "plain", backend="torch", dtype=torch.float32)
                               .embed(TEXTS)[0], atol=1e-6)  # the head adds a column; the vectors are as without it
    fast = BiEncoder.load(tmp_path / "bi", backend=backend)
    assert fast.backend == backend and fast.token_head is not None
    out = fast.read_until(TEXTS, math.inf)
    tol = 0.05 if fast.approximate else 1e-4
    np.testing.assert_allclose(out.token_max, ref.token_max, atol=tol, rtol=tol)
    np.testing.assert_allclose(out.vecs, ref.vecs, atol=tol, rtol=tol)
    if fast.approximate:  # and the exact forward behind it carries the head too
        np.testing.assert_allclose(fast.read_until(TEXTS, math.inf, exact=True).token_max, ref.token_max, atol=1e-4)
    # the graph of the same weights with another head, or none, has another cache key
    config = backends.ExportConfig()
    keys = {backends.fingerprint(tmp_path / "bi", config, head) for head in
            (fast.token_head, None, torch.nn.Linear(bi.hidden_size, 1))}
    assert len(keys) == 3 and len(exports) == (2 if fast.approximate else 1)
    with pytest.raises(ValueError, match="only be set on a torch"):
        fast.set_token_head(None)


def test_cache_is_reused(saved, exports):
    BiEncoder.load(saved, backend="onnx")
    [entry] = entries(saved)
    graph = saved / CACHE_DIR / entry / "model.onnx"
    mtime = graph.stat().st_mtime_ns
    BiEncoder.load(saved, backend="onnx")
    assert len(exports) == 1
    assert graph.stat().st_mtime_ns == mtime and entries(saved) == [entry]


def test_changed_weights_rebuild_the_graph(saved, exports):
    from safetensors.torch import load_file, save_file

    BiEncoder.load(saved, backend="onnx")
    [old] = entries(saved)
    weights = load_file(str(saved / "model.safetensors"))
    name = next(k for k in weights if k.endswith("word_embeddings.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, str(saved / "model.safetensors"), metadata={"format": "pt"})
    ref, _ = BiEncoder.load(saved, backend="torch", dtype=torch.float32).embed(TEXTS)
    fast = BiEncoder.load(saved, backend="onnx")
    assert len(exports) == 2
    assert entries(saved) != [old] and len(entries(saved)) == 1  # the stale entry is gone
    np.testing.assert_allclose(fast.embed(TEXTS)[0], ref, atol=1e-4, rtol=1e-4)


def test_variants_have_their_own_entries(saved, exports):
    BiEncoder.load(saved, backend="onnx")
    BiEncoder.load(saved, backend="onnx-int8")
    BiEncoder.load(saved, backend="onnx")
    assert len(exports) == 2 and len(entries(saved)) == 2


def test_falls_back_to_torch_without_onnxruntime(saved, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with caplog.at_level(logging.WARNING, logger="reranker.backends"):
        bi = BiEncoder.load(saved, backend="onnx")
    assert bi.backend == "torch" and bi._runner is None
    assert "unavailable" in caplog.text and "onnx" in caplog.text
    assert bi.embed(TEXTS)[0].shape == (len(TEXTS), bi.hidden_size)


def test_falls_back_to_torch_when_the_cache_cannot_be_written(saved, caplog):
    (saved / CACHE_DIR).write_text("not a directory")  # as a read-only model directory would: nowhere to export to
    with caplog.at_level(logging.WARNING, logger="reranker.backends"):
        bi = BiEncoder.load(saved, backend="onnx")
    assert bi.backend == "torch"
    assert "could not be prepared" in caplog.text


def test_read_only_directory_falls_back(saved, caplog):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions; the not-a-directory test covers the path")
    saved.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="reranker.backends"):
            assert BiEncoder.load(saved, backend="onnx").backend == "torch"
    finally:
        saved.chmod(0o755)


def test_failed_export_falls_back_and_leaves_no_entry(saved, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(backends, "export", broken)
    with caplog.at_level(logging.WARNING, logger="reranker.backends"):
        assert BiEncoder.load(saved, backend="onnx").backend == "torch"
    assert "exporter exploded" in caplog.text
    assert list((saved / CACHE_DIR).iterdir()) == []  # the temporary directory is cleaned up


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    monkeypatch.setattr("reranker.backends.cpu_has_bf16", lambda: True)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.setattr("reranker.backends.cpu_has_bf16", lambda: False)
    assert resolve_backend(None, torch.device("cpu"), approximate_ok=True) == backends.AUTO_CPU
    assert resolve_backend(None, torch.device("cpu")) not in backends.APPROXIMATE  # a bare bi-encoder stays exact
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("onnx", torch.device("cpu")) == "onnx"  # an explicit argument beats the variable
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tensorrt", torch.device("cpu"))


def test_vnni_check():
    assert backends.has_vnni({"avx2", "avx512_vnni"}) and backends.has_vnni({"avx_vnni"})
    assert not backends.has_vnni({"avx2", "fma", "avx512f"})


def test_auto_editor_on_this_machine(saved_editor, monkeypatch):
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    from reranker.runtime import cpu_has_bf16

    editor = Editor.load(saved_editor, warmup=False)
    assert editor.biencoder.backend == ("torch" if cpu_has_bf16() else backends.AUTO_CPU)
    monkeypatch.setenv(backends.ENV_VAR, "torch")
    assert Editor.load(saved_editor, warmup=False).biencoder.backend == "torch"


def test_from_backbone_stays_on_torch(tiny_bert):
    assert BiEncoder.from_backbone(tiny_bert).backend == "torch"  # the training path


# ---- the editor on a fast backend --------------------------------------------------------------------------------


@pytest.fixture()
def saved_editor(tmp_path, tiny_bert):
    return Editor.from_backbone(tiny_bert, dtype=torch.float32).save(tmp_path / "editor")


CONTEXT = ["hello", "how are you ?"]
CANDIDATES = [" ".join(TEXTS[i % len(TEXTS)].split()[: 1 + i % 5] + ["ok"] * (i % 3)) + f" {'yes ' * (i % 4)}"
              for i in range(40)]


def test_editor_refines_its_best_with_exact_scores(saved_editor):
    ref = Editor.load(saved_editor, backend="torch", dtype=torch.float32).score(CONTEXT, CANDIDATES)
    editor = Editor.load(saved_editor, backend="onnx-int8")
    assert editor.biencoder.approximate
    editor.refine_top = 5
    raw, scored = editor.score_until(CONTEXT, CANDIDATES, math.inf)
    assert scored.all()
    refined = editor.score(CONTEXT, CANDIDATES)
    changed = np.flatnonzero(refined != raw)
    assert 0 < len(changed) <= 5
    top = np.argsort(-raw, kind="stable")[:5]
    np.testing.assert_allclose(refined[top], ref[top], atol=1e-5)  # the best are exactly the fp32 scores
    np.testing.assert_array_equal(np.delete(refined, top), np.delete(raw, top))


def test_editor_on_exact_backend_needs_no_refine(saved_editor):
    ref = Editor.load(saved_editor, backend="torch", dtype=torch.float32).score(CONTEXT, CANDIDATES)
    editor = Editor.load(saved_editor, backend="onnx")
    raw, _ = editor.score_until(CONTEXT, CANDIDATES, math.inf)
    np.testing.assert_array_equal(editor.refine(CONTEXT, CANDIDATES, raw), raw)
    np.testing.assert_allclose(raw, ref, atol=1e-3)


def test_budget_logic_works_on_a_fast_backend(saved_editor):
    editor = Editor.load(saved_editor, backend="onnx")
    cost = editor.biencoder.cost
    start = cost.per_token
    scores, scored = editor.score_until(CONTEXT, CANDIDATES, time.monotonic() - 1.0)  # already late
    assert not scored.any() and np.isnan(scores).all()
    scores, scored = editor.score_until(CONTEXT, CANDIDATES, time.monotonic() + 30.0)
    assert scored.all() and np.isfinite(scores).all()
    assert cost.per_token != start  # the cost model learned this backend's speed


def test_the_cache_keeps_exact_and_int8_vectors_apart(saved):
    fast = BiEncoder.load(saved, backend="onnx-int8")
    fast.cache = {}  # as evaluation sets it, shared with the zero-shot torch bi-encoder
    approximate, _ = fast.embed(TEXTS)
    assert sorted(fast.cache) == sorted((False, False, t) for t in TEXTS)
    exact, _ = fast.embed(TEXTS, exact=True)
    assert len(fast.cache) == 2 * len(TEXTS)
    np.testing.assert_array_equal(np.stack([fast.cache[(True, False, t)][0] for t in TEXTS]), exact)
    np.testing.assert_array_equal(np.stack([fast.cache[(False, False, t)][0] for t in TEXTS]), approximate)
    assert not np.array_equal(approximate, exact)  # int8 differs: one must never be served for the other
    calls = []
    real = fast._runner
    fast._runner = lambda *a: calls.append(a) or real(*a)
    again, _ = fast.embed(TEXTS)
    assert not calls
    np.testing.assert_array_equal(again, approximate)
