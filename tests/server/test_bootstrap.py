"""The embedded default: build what a model dir lacks, and only that."""

from __future__ import annotations

import sys
import types

import server.models as bootstrap
from server.models import ensure_models, has_editor, has_markov


def test_has_markov_and_reranker(tmp_path, tiny_markov, tiny_model_dir):
    assert not has_markov(tmp_path) and not has_editor(tmp_path)
    tiny_markov.save(tmp_path / "markov")
    assert has_markov(tmp_path)
    assert has_markov(tiny_model_dir)  # persona subdirs count too
    (tmp_path / "reranker").mkdir()
    assert not has_editor(tmp_path)  # an empty dir is not a model
    (tmp_path / "reranker" / "config.json").write_text("{}")
    assert has_editor(tmp_path)


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
    monkeypatch.setitem(sys.modules, "reranker.recipes", types.SimpleNamespace(build_default=fake_train))

    assert ensure_models(tmp_path, build=False) == tmp_path and not built and not trained
    ensure_models(tmp_path)
    assert built == [tmp_path / "markov"]
    assert trained[0][0] == tmp_path / "editor" and trained[0][1] <= 9.5  # the first run fits in 10 minutes
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


def test_build_status_counts_stages_and_missing_lists_them(tmp_path, monkeypatch, tiny_markov):
    assert bootstrap.missing(tmp_path) == ["markov", "editor"]
    seen = []

    def fake_markov(out_dir, progress=True):
        seen.append(status.as_dict())
        tiny_markov.save(out_dir)
        return out_dir

    def fake_train(out_dir, *, max_minutes=10, seed=0, progress=True):
        seen.append(status.as_dict())
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text('{"riposte": {"kind": "cross-encoder"}}')
        return out_dir

    monkeypatch.setattr(bootstrap, "build_default_markov", fake_markov)
    monkeypatch.setitem(sys.modules, "reranker.recipes", types.SimpleNamespace(build_default=fake_train))
    status = bootstrap.BuildStatus()
    ensure_models(tmp_path, status=status)
    assert [(s["done"], s["total"]) for s in seen] == [(0, 2), (1, 2)]
    assert "Markov" in seen[0]["stage"] and "editor" in seen[1]["stage"] and seen[1]["expected_s"] <= 9.5 * 60
    assert status.as_dict()["done"] == 2 and bootstrap.missing(tmp_path) == []


def test_a_second_process_waits_for_the_build_instead_of_racing_it(tmp_path, monkeypatch, tiny_markov):
    import subprocess
    import threading
    import time

    script = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
              "print('locked', flush=True); time.sleep(1.0); sys.argv[2:] and open(sys.argv[2], 'w').write('{}')")
    tmp_path.joinpath("markov").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / ".build.lock"),
                               str(tmp_path / "markov" / "config.json")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    built = []
    monkeypatch.setattr(bootstrap, "build_default_markov", lambda out_dir, progress=True: built.append(out_dir))
    monkeypatch.setitem(sys.modules, "reranker.recipes", None)  # no training here: only the Markov stage
    status = bootstrap.BuildStatus()
    worker = threading.Thread(target=ensure_models, args=(tmp_path,), kwargs={"status": status})
    start = time.monotonic()
    worker.start()
    time.sleep(0.3)
    waiting = status.as_dict()
    worker.join(10)
    holder.wait(5)
    # While it waits, /health has a stage to show; the other process built the Markov model, so this one builds nothing.
    assert waiting["total"] == 1 and "waiting for another process" in waiting["stage"]
    assert time.monotonic() - start > 0.5 and built == []
