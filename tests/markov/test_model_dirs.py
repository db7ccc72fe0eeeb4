"""Damaged model directories: a clear error at load, and a server that says it is unhealthy instead of serving garbage.

tests/markov/test_chain.py already covers a missing dir, a tables.npz cut at 200 bytes, format version 99 and a
config.json that is not JSON; this file covers the rest of the ways a Markov dir breaks, persona folders, the
reranker dir, and what the HTTP service does with each.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from markov import MarkovConfig, MarkovModel
from markov.chain import FORMAT_VERSION
from tests.server.conftest import tiny_lines

LINES = tiny_lines()  # templates whose order-2 chain recombines into many new lines


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A saved Markov dir, never modified (each test copies it)."""
    path = tmp_path_factory.mktemp("markov") / "m"
    MarkovModel.build([(t, 1.0) for t in LINES], MarkovConfig(order=2, min_tokens=1)).save(path)
    return path


def copy_of(good: Path, tmp_path: Path, name: str = "m") -> Path:
    target = tmp_path / name
    shutil.copytree(good, target)
    return target


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def edit_tables(path: Path, change: Callable[[dict], None]) -> None:
    with np.load(path / "tables.npz") as npz:
        arrays = dict(npz)
    change(arrays)
    np.savez(path / "tables.npz", **arrays)


def cut(path: Path, keep: Callable[[int], int]) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_section(directory: Path, change: Callable[[dict], dict]) -> None:
    """Change the riposte section of a model directory's config.json (where every kind keeps its settings)."""
    edit_json(directory / "config.json", lambda c: {**c, "riposte": change(dict(c["riposte"]))})


MARKOV_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "tables missing": (lambda d: (d / "tables.npz").unlink(), "incomplete"),
    "vocab missing": (lambda d: (d / "vocab.txt").unlink(), "incomplete"),
    "tables empty": (lambda d: cut(d / "tables.npz", lambda n: 0), "corrupt"),
    "tables cut in half": (lambda d: cut(d / "tables.npz", lambda n: n // 2), "corrupt"),
    "tables missing their last byte": (lambda d: cut(d / "tables.npz", lambda n: n - 1), "corrupt"),
    "tables with a flipped byte": (lambda d: flip_middle(d / "tables.npz"), "corrupt"),
    "tables is a folder": (lambda d: ((d / "tables.npz").unlink(), (d / "tables.npz").mkdir()), "corrupt"),
    "an array missing": (lambda d: edit_tables(d, lambda a: a.pop("cum_in_row")), "corrupt"),
    "row_ptr scrambled": (lambda d: edit_tables(d, lambda a: a.update(row_ptr=a["row_ptr"][::-1].copy())), "corrupt"),
    "token ids out of range": (lambda d: edit_tables(d, lambda a: a["next_tok"].__iadd__(10_000)), "corrupt"),
    "next states out of range": (lambda d: edit_tables(d, lambda a: a["next_state"].__iadd__(10_000)), "corrupt"),
    "weights not finite": (lambda d: edit_tables(d, lambda a: a["cum_in_row"].__setitem__(0, np.nan)), "corrupt"),
    "vocab cut short": (lambda d: cut(d / "vocab.txt", lambda n: n // 3), "do not match"),
    "vocab not text": (lambda d: (d / "vocab.txt").write_bytes(b"\xff\xfe\xfa" * 10), "corrupt"),
    "format version missing": (lambda d: edit_section(d, lambda c: c.pop("format_version") and c), "format version None"),
    "future format version": (lambda d: edit_section(d, lambda c: {**c, "format_version": 99}), "format version 99"),
    "format version as text": (lambda d: edit_section(d, lambda c: {**c, "format_version": "3"}),
                               "format version '3'"),
    "another kind of dir": (lambda d: edit_section(d, lambda c: {**c, "kind": "editor"}),
                            "not a riposte Markov model: its config.json says kind 'editor'"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[2]"), "corrupt"),
    "config.json without riposte settings": (lambda d: (d / "config.json").write_text("{}"), "no 'riposte' settings"),
    "config.json empty": (lambda d: (d / "config.json").write_text(""), "corrupt"),
    "config.json not UTF-8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{"), "corrupt"),
    "settings missing": (lambda d: edit_section(d, lambda c: c.pop("config") and c), "corrupt"),
    "stats missing": (lambda d: edit_section(d, lambda c: c.pop("stats") and c), "corrupt"),
    "settings not an object": (lambda d: edit_section(d, lambda c: {**c, "config": [1]}), "corrupt"),
    "order out of range": (lambda d: edit_section(d, lambda c: {**c, "config": {**c["config"], "order": 9}}),
                           "order must be between"),
    "order as text": (lambda d: edit_section(d, lambda c: {**c, "config": {**c["config"], "order": "2"}}),
                      "corrupt"),
}


@pytest.mark.parametrize("damage", sorted(MARKOV_DAMAGE))
def test_damaged_markov_dirs_fail_at_load_with_a_clear_error(good, tmp_path, damage):
    mutate, message = MARKOV_DAMAGE[damage]
    path = copy_of(good, tmp_path)
    mutate(path)
    with pytest.raises(ValueError, match=message) as info:
        MarkovModel.load(path)
    assert str(path) in str(info.value)  # the message names the directory to rebuild


def test_a_markov_dir_in_format_2_still_loads_and_is_saved_back_in_the_current_format(good, tmp_path):
    path = copy_of(good, tmp_path)
    edit_json(path / "config.json", lambda c: {**c["riposte"], "format_version": 2, "kind": "riposte.markov"})
    assert "riposte" not in json.loads((path / "config.json").read_text())  # the old layout: all at the top
    with np.load(path / "tables.npz") as npz:  # and its tables, without the backward table of format 4
        np.savez(path / "tables.npz", **{k: npz[k] for k in npz.files if not k.startswith("backward_")})
    model, fresh = MarkovModel.load(path), MarkovModel.load(good)
    assert model.backward is None and fresh.backward is not None
    model.backward = fresh.backward
    assert model == fresh  # the same tables otherwise
    model.backward = None
    model.save(path)
    assert json.loads((path / "config.json").read_text())["riposte"]["format_version"] == FORMAT_VERSION == 5
    assert MarkovModel.load(path).backward is None  # saved back as it was: it writes around words once rebuilt


def test_the_undamaged_copy_loads_and_equals_the_original(good, tmp_path):
    assert MarkovModel.load(copy_of(good, tmp_path)) == MarkovModel.load(good)


def test_a_partial_save_never_replaces_a_good_model(good, tmp_path, monkeypatch):
    path = copy_of(good, tmp_path)
    model = MarkovModel.load(path)
    bigger = MarkovModel.build([(t, 1.0) for t in [*LINES, "they love cake."]], MarkovConfig(order=2, min_tokens=1))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        bigger.save(path)
    assert MarkovModel.load(path) == model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary dir left behind


# ---------------------------------------------------------------------------------------------- the server


def write_markov(model_dir: Path, good: Path, personas: tuple[str, ...] = ()) -> None:
    """model_dir/markov as one model dir, or as persona subdirs."""
    if personas:
        for name in personas:
            shutil.copytree(good, model_dir / "markov" / name)
    else:
        shutil.copytree(good, model_dir / "markov")


def health_after_load(client: TestClient, timeout: float = 60.0):
    """GET /health once loading has finished (or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/health")
        if response.json().get("status") != "loading" or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def error_message(response) -> str:
    """The message of an error response, in riposte's shape or OpenAI's (under /v1)."""
    from tests.server.conftest import error_message as message

    return message(response)


def serve(model_dir: Path, require_reranker: bool):
    from server.app import Settings, create_app

    return TestClient(create_app(Settings(model_dir=model_dir, require_reranker=require_reranker, budget_ms=300)))


def assert_unhealthy(model_dir: Path, *needles: str, require_reranker: bool = False) -> None:
    """/health is 503 naming the problem, and /reply, /rank and /v1/models are 503s with that message (not 500s)."""
    with serve(model_dir, require_reranker) as client:
        health = health_after_load(client)
        assert health.status_code == 503, health.text
        assert health.json()["status"] == "error"
        detail = health.json()["detail"]
        for needle in needles:
            assert needle in detail, (needle, detail)
        for method, url, body in [
            ("POST", "/reply", {"history": ["hello there"]}),
            ("POST", "/rank", {"history": ["hello there"], "candidates": ["hi", "dogs"]}),
            ("GET", "/v1/models", None),
        ]:
            response = client.request(method, url, json=body)
            assert response.status_code == 503, (url, response.text)
            assert error_message(response) == detail


def test_a_healthy_dir_serves(good, tmp_path):
    write_markov(tmp_path, good)
    with serve(tmp_path, require_reranker=False) as client:
        assert health_after_load(client).status_code == 200
        response = client.post("/reply", json={"history": ["do you like coffee?"], "seed": 1})
        assert response.status_code == 200 and response.json()["reply"]


@pytest.mark.parametrize("damage", ["tables cut in half", "future format version", "vocab cut short", "settings missing"])
def test_server_with_a_damaged_markov_dir_is_unhealthy(good, tmp_path, damage):
    write_markov(tmp_path, good)
    MARKOV_DAMAGE[damage][0](tmp_path / "markov")
    assert_unhealthy(tmp_path, "ValueError", str(tmp_path / "markov"))


def test_one_damaged_persona_makes_the_server_unhealthy(good, tmp_path):
    write_markov(tmp_path, good, personas=("all", "sam", "alex"))
    cut(tmp_path / "markov" / "sam" / "tables.npz", lambda n: n // 2)
    assert_unhealthy(tmp_path, str(tmp_path / "markov" / "sam"))


def test_server_without_markov_models_is_unhealthy(tmp_path):
    (tmp_path / "markov" / "empty_persona").mkdir(parents=True)
    assert_unhealthy(tmp_path, "FileNotFoundError", "neither a Markov model nor persona")
    assert_unhealthy(tmp_path / "nowhere", "FileNotFoundError", "python -m markov build")


def test_a_required_but_missing_reranker_is_unhealthy(good, tmp_path):
    write_markov(tmp_path, good)
    assert_unhealthy(tmp_path, "no reranker", require_reranker=True)


# ---------------------------------------------------------------------------------------------- reranker dirs


@pytest.fixture(scope="module")
def good_reranker(tmp_path_factory) -> Path:
    """A tiny saved Reranker dir (2-layer BERT built in the test)."""
    from reranker import Reranker, RerankerConfig
    from tests.reranker.conftest import write_tiny_bert

    root = tmp_path_factory.mktemp("reranker")
    Reranker.from_backbone(write_tiny_bert(root / "bert"), RerankerConfig(max_length=32)).save(root / "rr")
    shutil.rmtree(root / "bert")  # the saved dir must stand alone
    return root / "rr"


def with_reranker(tmp_path: Path, good: Path, good_reranker: Path) -> Path:
    write_markov(tmp_path, good)
    shutil.copytree(good_reranker, tmp_path / "reranker")
    return tmp_path / "reranker"


def future_reranker_version(directory: Path) -> None:
    from reranker.cross_encoder import CONFIG_KEY

    edit_json(directory / "config.json", lambda c: {**c, CONFIG_KEY: {**c[CONFIG_KEY], "format_version": 99}})


RERANKER_DAMAGE: dict[str, tuple[Callable[[Path], None], type[Exception] | tuple, str]] = {
    "model.safetensors cut in half": (lambda d: cut(d / "model.safetensors", lambda n: n // 2), Exception,
                                      "deserializ"),
    "model.safetensors header only": (lambda d: cut(d / "model.safetensors", lambda n: 4), Exception, "deserializ"),
    "model.safetensors missing": (lambda d: (d / "model.safetensors").unlink(), OSError, "model.safetensors"),
    "config.json missing": (lambda d: (d / "config.json").unlink(), FileNotFoundError, "no config.json"),
    "future format version": (future_reranker_version, ValueError, "format_version 99"),
}


@pytest.mark.slow
def test_a_healthy_reranker_dir_serves(good, good_reranker, tmp_path):
    with_reranker(tmp_path, good, good_reranker)
    with serve(tmp_path, require_reranker=True) as client:
        assert health_after_load(client).status_code == 200
        response = client.post("/rank", json={"history": ["hello there"], "candidates": ["hi", "dogs"]})
        assert response.status_code == 200 and response.json()["scored"] == 2


@pytest.mark.parametrize("damage", sorted(RERANKER_DAMAGE))
def test_damaged_reranker_dirs_fail_at_load(good_reranker, tmp_path, damage):
    from reranker import Reranker

    mutate, error, message = RERANKER_DAMAGE[damage]
    shutil.copytree(good_reranker, tmp_path / "rr")
    mutate(tmp_path / "rr")
    with pytest.raises(error, match=message):
        Reranker.load(tmp_path / "rr", warmup=False)


@pytest.mark.parametrize("damage", sorted(RERANKER_DAMAGE))
def test_server_with_a_damaged_reranker_dir_is_unhealthy(good, good_reranker, tmp_path, damage):
    mutate, _error, message = RERANKER_DAMAGE[damage]
    mutate(with_reranker(tmp_path, good, good_reranker))
    assert_unhealthy(tmp_path, message, require_reranker=True)


def test_a_reranker_dir_without_its_tokenizer_fails_at_load(good_reranker, tmp_path):
    from reranker import Reranker

    shutil.copytree(good_reranker, tmp_path / "rr")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / "rr" / name).unlink(missing_ok=True)
    with pytest.raises((OSError, ValueError)):
        Reranker.load(tmp_path / "rr", warmup=False)
