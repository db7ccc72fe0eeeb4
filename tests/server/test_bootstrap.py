"""The embedded default: build what a model dir lacks, and only that."""

from __future__ import annotations

import sys
import types

import server.bootstrap as bootstrap
from server.bootstrap import ensure_models, has_markov, has_reranker


def test_has_markov_and_reranker(tmp_path, tiny_markov, tiny_model_dir):
    assert not has_markov(tmp_path) and not has_reranker(tmp_path)
    tiny_markov.save(tmp_path / "markov")
    assert has_markov(tmp_path)
    assert has_markov(tiny_model_dir)  # persona subdirs count too
    (tmp_path / "reranker").mkdir()
    assert not has_reranker(tmp_path)  # an empty dir is not a model
    (tmp_path / "reranker" / "config.json").write_text("{}")
    assert has_reranker(tmp_path)


def test_ensure_models_builds_only_what_is_missing(tmp_path, monkeypatch, tiny_markov):
    built, trained = [], []

    def fake_markov(out_dir, progress=True):
        built.append(out_dir)
        tiny_markov.save(out_dir)
        return out_dir

    def fake_train(out_dir, *, max_minutes=10, seed=0, progress=True):
        trained.append((out_dir, max_minutes))
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        return out_dir

    monkeypatch.setattr(bootstrap, "build_default_markov", fake_markov)
    monkeypatch.setitem(sys.modules, "reranker.recipes", types.SimpleNamespace(train_default=fake_train))

    assert ensure_models(tmp_path, build=False) == tmp_path and not built and not trained
    ensure_models(tmp_path)
    assert built == [tmp_path / "markov"]
    assert trained[0][0] == tmp_path / "reranker" and trained[0][1] <= 9.5  # the first run fits in 10 minutes
    ensure_models(tmp_path)  # a second run finds everything and builds nothing
    assert len(built) == 1 and len(trained) == 1


def test_ensure_models_without_training_code_still_returns(tmp_path, monkeypatch, tiny_markov, caplog):
    tiny_markov.save(tmp_path / "markov")
    monkeypatch.setitem(sys.modules, "reranker.recipes", None)  # import raises ImportError
    assert ensure_models(tmp_path) == tmp_path
    assert "ranked by prior" in caplog.text


def test_an_editor_without_a_first_stage_gets_one_and_only_once(tmp_path, monkeypatch, tiny_markov):
    tiny_markov.save(tmp_path / "markov")
    reranker = tmp_path / "reranker"
    reranker.mkdir()
    (reranker / "config.json").write_text('{"riposte": {"kind": "cross-encoder"}}')
    assert not bootstrap.needs_first_stage(tmp_path)  # only editors carry one
    (reranker / "config.json").write_text('{"riposte": {"kind": "editor"}}')
    assert bootstrap.needs_first_stage(tmp_path)
    built = []

    def fake_build(editor_dir, progress=True):
        built.append(editor_dir)
        (editor_dir / "first_stage").mkdir()
        (editor_dir / "first_stage" / "config.json").write_text("{}")

    monkeypatch.setitem(sys.modules, "reranker.recipes", types.SimpleNamespace(build_first_stage=fake_build))
    ensure_models(tmp_path)
    ensure_models(tmp_path)
    assert built == [reranker] and not bootstrap.needs_first_stage(tmp_path)
    (reranker / "config.json").write_text("not json")
    assert not bootstrap.needs_first_stage(tmp_path)
