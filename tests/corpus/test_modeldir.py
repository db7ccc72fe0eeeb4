"""The model-directory format: one config.json layout for every kind, read once, older layouts still read."""

from __future__ import annotations

import json
import os

import pytest

from corpus import modeldir
from corpus.modeldir import editor_dir, write_file_atomically


def test_write_then_read_gives_the_section_with_kind_and_version(tmp_path):
    modeldir.write(tmp_path, "editor", 1, {"weights": {"a": 1.0}}, extra={"model_type": "riposte-editor: ..."})
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "riposte-editor: ..."  # other libraries' keys stay at the top
    assert modeldir.read(tmp_path) == {"kind": "editor", "format_version": 1, "weights": {"a": 1.0}}
    assert modeldir.read(tmp_path, kind="editor")["weights"] == {"a": 1.0}


def test_a_directory_of_another_kind_is_refused_naming_both(tmp_path):
    modeldir.write(tmp_path, "biencoder", 1, {})
    with pytest.raises(ValueError, match="not a riposte editor: its config.json says kind 'biencoder'"):
        modeldir.read(tmp_path, "editor", kind="editor")


def test_older_layouts_still_read(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"format_version": 2, "kind": "riposte.markov", "config": {"order": 2}, "stats": {}}))
    assert modeldir.read(tmp_path / "m")["kind"] == "markov"  # Markov format 2: settings at the top level
    assert modeldir.read(tmp_path / "m")["format_version"] == 2
    (tmp_path / "ce").mkdir()
    (tmp_path / "ce" / "config.json").write_text(json.dumps({"model_type": "bert", "riposte": {"format_version": 1}}))
    assert modeldir.read(tmp_path / "ce")["kind"] == "cross-encoder"  # a cross-encoder's section had no kind


@pytest.mark.parametrize(("content", "message"), [
    (None, "no config.json"), ("{oops", "corrupt"), ("[1]", "not a JSON object"), ('{"model_type": "bert"}', "plain Hugging Face"),
])
def test_what_is_not_a_riposte_model_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        modeldir.read(tmp_path, "editor")


def test_the_editor_lives_in_editor_or_in_an_older_dirs_reranker(tmp_path):
    assert editor_dir(tmp_path) == tmp_path / "editor"  # where a new one is built
    (tmp_path / "reranker").mkdir()
    assert editor_dir(tmp_path) == tmp_path / "reranker"  # a dir made before the rename
    (tmp_path / "editor").mkdir()
    assert editor_dir(tmp_path) == tmp_path / "editor"  # both: the new one wins


def test_a_file_written_atomically_is_whole_has_the_umask_mode_or_is_private(tmp_path):
    path = tmp_path / "eval.json"
    old = os.umask(0o022)
    try:
        write_file_atomically(path, "first")
        assert path.read_text() == "first" and path.stat().st_mode & 0o777 == 0o644  # shared as any new file
        write_file_atomically(path, "second", private=True)
        assert path.read_text() == "second" and path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    with pytest.raises(TypeError):
        write_file_atomically(path, None)  # fails mid-write: the old file stays whole, no temporary is left
    assert path.read_text() == "second" and [p.name for p in tmp_path.iterdir()] == ["eval.json"]
