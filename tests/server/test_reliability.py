"""Reliability and security of the HTTP service: fuzzing, bad bytes, slow and vanishing clients, faults, overload."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from server.admission import Admission, AdmissionConfig, Overloaded
from server.app import Settings, create_app
from server.budget import Budget
from server.engine import Engine, EngineConfig
from tests.server.conftest import (
    FakeClock,
    FaultyScorer,
    OverlapScorer,
    error_message,
    metric,
    serve_in_thread,
)

HISTORY = ["hello there", "do you like dogs?"]


# ---------------------------------------------------------------------------------------------------- fuzzing


@pytest.fixture
def fuzz_app(tiny_markov):
    eng = Engine({"default": tiny_markov, "pirate": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=128))
    # Small bounds keep generated valid requests quick: a 30 s budget still ends once everything is scored.
    app = create_app(Settings(budget_ms=100, simulate_max_ms=300), engine=eng)
    with TestClient(app):  # runs the lifespan, so the app state exists for schemathesis' own client
        yield app
    eng.close()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_500_and_every_error_has_a_message(fuzz_app, mode):
    from hypothesis import given
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    strategy = schema.as_strategy(GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE)
    seen = set()

    def check(case):
        response = case.call()
        seen.add(case.path)
        assert response.status_code < 500 or (response.status_code == 503 and "retry-after" in response.headers), (
            case.method, case.path, case.body, response.text)
        if response.status_code >= 400:
            message = error_message(response)
            assert isinstance(message, str) and message.strip(), response.text

    def run(strategy, examples: int) -> None:
        hypothesis_settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))(
            given(case=strategy)(check))()

    run(strategy, 120)
    # Every route that takes a body gets its own share, whatever the draw over all of them gave it.
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    for path in ("/reply", "/rank", "/simulate", "/v1/chat/completions", "/v1/rerank"):
        if path not in seen:
            run(schema[path]["POST"].as_strategy(generation), 30)
    assert {"/reply", "/rank", "/simulate", "/v1/chat/completions", "/v1/rerank"} <= seen


@pytest.fixture
def client(engine):
    with TestClient(create_app(Settings(budget_ms=1000), engine=engine)) as c:
        yield c


UNICODE = [
    "مرحبا، هل تحب الكلاب؟",  # RTL
    "שלום \u202eevil\u202c text",  # RTL override marks
    "e\u0301\u0301\u0301 Z\u0351\u0352\u0353\u0354 combining",
    "👩‍👩‍👧‍👦 🏳️‍🌈 dogs? 🐕",
    "\u200b\u200d\ufeff zero width",
    "\x00 nul and \x07 bell",
]


@pytest.mark.parametrize("text", UNICODE)
def test_unicode_edge_cases_are_served(client, text):
    for body in ({"history": [text, "dogs?"], "seed": 1}, {"history": [{"speaker": text, "text": text}]}):
        r = client.post("/reply", json=body)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["reply"], str)
    r = client.post("/rank", json={"history": [text], "candidates": [text, "dogs"]})
    assert r.status_code == 200 and {x["text"] for x in r.json()["ranked"]} == {text, "dogs"}


def test_lone_surrogates_in_raw_json_become_replacement_characters(client):
    # JSON may escape a lone surrogate; Python decodes it to a str that cannot be encoded back to UTF-8.
    raw = b'{"history": ["dogs \\ud800 or \\udfff?"], "seed": 1}'
    r = client.post("/reply", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["reply"]
    raw = b'{"history": ["hi"], "candidates": ["a \\udc80 b", "c"]}'
    r = client.post("/rank", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200 and {x["text"] for x in r.json()["ranked"]} == {"a \ufffd b", "c"}
    raw = b'{"history": ["hi"], "persona": "\\ud800"}'
    r = client.post("/reply", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "unknown persona" in r.json()["detail"]["message"]
    raw = b'{"messages": [{"role": "user", "content": "\\ud83d dogs"}]}'
    assert client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"}).status_code == 200
    # A surrogate pair is a real emoji and stays one.
    raw = b'{"history": ["hi"], "candidates": ["\\ud83d\\udc15", "c"]}'
    assert "🐕" in {x["text"] for x in client.post("/rank", content=raw, headers={"content-type": "application/json"}).json()["ranked"]}


@pytest.mark.parametrize("path", ["/reply", "/rank", "/simulate", "/v1/chat/completions"])
def test_malformed_json_and_wrong_types_are_4xx_with_a_message(client, path):
    for raw in (b"{", b'{"history": [}', b"\xff\xfe\x00", b'{"history": "x", "turns": {"a": 1}}', b"1e999999",
                b"[" * 10_000 + b"]" * 10_000, b'{"history": ' + b"[" * 5000 + b"]" * 5000 + b"}"):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422), (path, raw[:20], r.status_code, r.text[:200])
        assert error_message(r).strip()


def test_huge_bodies_are_413_before_any_work(client, engine):
    calls = engine.scorer.calls
    for path in ("/reply", "/rank", "/simulate", "/v1/chat/completions"):
        r = client.post(path, content=b"[" + b"1," * 600_000 + b"1]", headers={"content-type": "application/json"})
        assert r.status_code == 413 and "bytes" in error_message(r)
    assert engine.scorer.calls == calls


# ---------------------------------------------------------------------------------------------------- security


def test_no_request_field_names_a_path_and_unknown_fields_are_refused(client):
    spec = client.get("/openapi.json").json()
    fields = set()
    for component in spec["components"]["schemas"].values():
        fields |= set(component.get("properties", {}))
    assert not {f for f in fields if any(k in f.lower() for k in ("path", "dir", "file", "url"))}, fields
    for path in ("/reply", "/simulate"):
        r = client.post(path, json={"history": HISTORY, "model_dir": "/etc"})
        assert r.status_code == 422 and "model_dir" in r.json()["detail"]["message"]


@pytest.mark.parametrize("name", ["../../etc", "/etc/passwd", "default/../pirate", "DEFAULT", "", "pirate\x00"])
def test_persona_names_are_checked_against_what_was_loaded(client, name):
    r = client.post("/reply", json={"history": HISTORY, "persona": name})
    assert r.status_code == 422 and "unknown persona" in r.json()["detail"]["message"]
    r = client.post("/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"  # OpenAI's model_not_found
    r = client.post("/simulate", json={"personas": [name]})
    assert r.status_code == 422 and "personas.0" in r.json()["detail"]["message"]


def test_turn_and_size_limits_hold_before_any_generation(tiny_markov):
    class CountingModel:
        def __init__(self):
            self.calls = 0

        def generate(self, *args, **kwargs):
            self.calls += 1
            return tiny_markov.generate(*args, **kwargs)

    model = CountingModel()
    eng = Engine({"default": model}, OverlapScorer(), EngineConfig(n_candidates=64))
    try:
        with TestClient(create_app(Settings(), engine=eng)) as c:
            assert c.post("/simulate", json={"turns": 101}).status_code == 422
            assert c.post("/simulate", json={"turns": 0}).status_code == 422
            assert c.post("/reply", json={"history": ["hi"] * 101}).status_code == 422
            assert c.post("/reply", json={"history": ["x" * 2001]}).status_code == 422
            assert c.post("/rank", json={"history": ["hi"], "candidates": ["y"] * 65_537}).status_code == 422
            assert model.calls == 0 and eng.scorer.calls == 0
            assert c.post("/simulate", json={"turns": 2}).status_code == 200 and model.calls > 0
    finally:
        eng.close()


def test_settings_bind_loopback_unless_told(monkeypatch):
    assert Settings().host == "127.0.0.1"
    monkeypatch.setenv("RIPOSTE_HOST", "0.0.0.0")
    assert Settings().host == "0.0.0.0"
    from server.__main__ import build_parser, settings_from

    assert settings_from(build_parser().parse_args(["serve"])).host == "0.0.0.0"  # the setting reaches the CLI
    assert settings_from(build_parser().parse_args(["serve", "--host", "::1"])).host == "::1"


# ---------------------------------------------------------------------------------------------------- faults


def test_an_exception_in_scoring_fails_that_request_alone(tiny_markov):
    eng = Engine({"default": tiny_markov}, FaultyScorer(delay_per_candidate=0.001), EngineConfig(n_candidates=128))
    try:
        with TestClient(create_app(Settings(), engine=eng)) as c:
            def rank(candidates):
                return c.post("/rank", json={"history": HISTORY, "candidates": candidates, "budget_ms": 2000})

            good = [f"dogs {i}" for i in range(40)]
            with ThreadPoolExecutor(4) as pool:
                bad = pool.submit(rank, ["fine", "BOOM", "also fine"])
                goods = [pool.submit(rank, good) for _ in range(3)]
                bad, goods = bad.result(), [g.result() for g in goods]
            assert bad.status_code == 500
            assert bad.json()["detail"] == "scoring failed: ValueError: cannot score the marker candidate 'BOOM'"
            assert all(g.status_code == 200 and g.json()["scored"] == 40 for g in goods)
            # The worker lives on.
            assert c.post("/reply", json={"history": HISTORY, "seed": 1}).status_code == 200
            assert rank(["fine"]).status_code == 200
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
            assert metric(c.get("/metrics").text, "riposte_requests_total", endpoint="/rank", status="500") == 1
    finally:
        eng.close()


@pytest.mark.realtime
def test_a_client_that_disconnects_frees_its_work(tiny_markov):
    scorer = OverlapScorer(delay_per_candidate=0.02)  # 256 candidates would take ~5 s
    eng = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=256, scoring_slice=4))
    app = create_app(Settings(), engine=eng)

    def freed(base: str, *paths: str) -> int:
        """The scorer's calls once the server has ended the abandoned requests (logged 499) and freed them.

        Polled, not slept: a busy machine may take a while to notice a closed connection.
        """
        deadline = time.monotonic() + 10
        while True:
            metrics = httpx.get(f"{base}/metrics").text
            ended = all(metric(metrics, "riposte_requests_total", endpoint=path, status="499") == 1 for path in paths)
            if ended and not app.state.riposte.admission.in_flight and not eng._scheduler.waiting:
                break
            assert time.monotonic() < deadline, f"the abandoned requests still hold the server after 10 s: {paths}"
            time.sleep(0.01)
        time.sleep(0.1)  # a slice already under way when the client left (4 x 20 ms) may still end
        return scorer.calls

    try:
        with serve_in_thread(app) as base:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/reply", json={"history": HISTORY, "budget_ms": 8000}, timeout=0.4)
            calls = freed(base, "/reply")
            time.sleep(0.3)
            assert scorer.calls == calls  # no slice was scored for it since
            assert eng._scheduler.waiting == 0 and app.state.riposte.admission.in_flight == 0
            # Same for /rank and /simulate, and the server keeps serving.
            for path, body in (("/rank", {"history": HISTORY, "candidates": ["a"] * 300}),
                               ("/simulate", {"turns": 3, "budget_ms": 5000})):
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(f"{base}{path}", json=body, timeout=0.4)
            calls = freed(base, "/rank", "/simulate")
            time.sleep(0.3)
            assert scorer.calls == calls and app.state.riposte.admission.in_flight == 0
            assert httpx.post(f"{base}/reply", json={"history": HISTORY, "budget_ms": 200}, timeout=5).status_code == 200
    finally:
        eng.close()


@pytest.mark.realtime
def test_a_client_trickling_its_body_gets_408_and_holds_nothing(tiny_markov):
    eng = Engine({"default": tiny_markov}, OverlapScorer(), EngineConfig(n_candidates=64))
    app = create_app(Settings(body_timeout_s=0.5), engine=eng)
    try:
        with serve_in_thread(app) as base:
            port = int(base.rsplit(":", 1)[1])
            body = json.dumps({"history": HISTORY}).encode()
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST /reply HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          b"content-length: %d\r\n\r\n" % len(body) + body[:10])
                start = time.monotonic()
                s.sendall(body[10:12])  # a trickle, then nothing
                answer = b""
                while b"within" not in answer and (chunk := s.recv(4096)):
                    answer += chunk
                waited = time.monotonic() - start
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"not received in whole within 0.5 s" in answer and 0.3 < waited < 2.0
            assert httpx.post(f"{base}/reply", json={"history": HISTORY}, timeout=5).status_code == 200
    finally:
        eng.close()


def test_many_parallel_connections(tiny_markov):
    eng = Engine({"default": tiny_markov}, OverlapScorer(delay_per_candidate=0.0002), EngineConfig(n_candidates=128))
    try:
        # No shedding here (no scored-candidate estimate, room for every connection): all must be served.
        with serve_in_thread(create_app(Settings(min_scored=0, max_in_flight=64), engine=eng)) as base:
            def one(i):
                with httpx.Client(base_url=base, timeout=10) as c:  # a connection each
                    return c.post("/reply", json={"history": HISTORY, "seed": i, "budget_ms": 500})

            with ThreadPoolExecutor(48) as pool:
                responses = list(pool.map(one, range(96)))
            assert [r.status_code for r in responses] == [200] * 96
            assert all(r.json()["reply"] for r in responses)
            assert httpx.get(f"{base}/health").json()["status"] == "ok"
    finally:
        eng.close()


# ---------------------------------------------------------------------------------------------------- overload


def test_admission_rules():
    clock = FakeClock()
    spc = [None]
    adm = Admission(AdmissionConfig(max_in_flight=3, min_scored=10), lambda: spc[0])

    def budget(ms: float) -> Budget:
        # With no generation share and no margin, all of the budget is scoring's.
        return Budget(started=clock(), budget_ms=ms, generation_share=0.0, filter_share=0.0, finish_margin_ms=0,
                      clock=clock)

    with adm.admit(budget(2500)), adm.admit(budget(5000)), adm.admit(budget(100), until=clock() + 5):
        assert adm.in_flight == 3
        with pytest.raises(Overloaded, match="3 requests in flight, the limit is 3") as exc:
            with adm.admit(budget(1000)):
                pass
        assert exc.value.retry_after == 3  # the earliest request in flight ends in 2.5 s
    assert adm.in_flight == 0 and adm.shed == 1
    spc[0] = 0.004  # 4 ms a candidate: 10 candidates take 40 ms per request sharing the scorer
    with adm.admit(budget(1)):  # alone, even a budget too small for the rule is served
        pass
    with adm.admit(budget(100)), adm.admit(budget(100)):  # 2 x 40 ms, then 3 x 40 = 120 ms > 100 ms
        with pytest.raises(Overloaded, match="about 120 ms, over the 100 ms"):
            with adm.admit(budget(100)):
                pass
        with adm.admit(budget(200)):  # a longer budget leaves scoring the time
            pass
    with adm.admit(budget(math.inf)):  # no budget: no deadline to wait for, and no estimate refuses it
        with pytest.raises(Overloaded) as exc:
            with adm.admit(budget(100)), adm.admit(budget(100)), adm.admit(budget(100)):
                pass
        assert exc.value.retry_after == 1
    with pytest.raises(RuntimeError):  # a failing request frees its slot too
        with adm.admit(budget(100)):
            raise RuntimeError("boom")
    assert adm.in_flight == 0


@pytest.mark.realtime
def test_overload_sheds_with_503_and_retry_after_instead_of_blowing_deadlines(tiny_markov):
    scorer = OverlapScorer(delay_per_candidate=0.004)  # ~250 candidates/s: a few requests' worth
    eng = Engine({"default": tiny_markov}, scorer, EngineConfig(n_candidates=256))
    # 2 s, not a few hundred ms: on a busy 2-core box the 64-thread burst alone can eat the 60% of a 600 ms
    # budget that generation and filtering may use, leaving the few admitted requests nothing to score.
    budget = 2000
    try:
        with TestClient(create_app(Settings(min_scored=16), engine=eng)) as c:
            assert c.post("/reply", json={"history": HISTORY, "budget_ms": budget}).status_code == 200  # measures

            def one(i):
                start = time.monotonic()
                r = c.post("/reply", json={"history": HISTORY, "seed": i, "budget_ms": budget})
                return r, (time.monotonic() - start) * 1000

            barrier = threading.Barrier(64)

            def together(i):
                barrier.wait()
                return one(i)

            with ThreadPoolExecutor(64) as pool:
                results = list(pool.map(together, range(64)))
        served = [(r.json(), ms) for r, ms in results if r.status_code == 200]
        shed = [r for r, _ in results if r.status_code == 503]
        assert len(served) + len(shed) == 64 and shed and served, [r.status_code for r, _ in results]
        for r in shed:
            assert int(r.headers["retry-after"]) >= 1 and "server overloaded" in r.json()["detail"]
        # Those admitted keep their budget and get real scoring, not a prior-only fallback.
        # Measured by the server from the request's arrival (the test client's own queueing is not the server's).
        assert all(body["stats"]["elapsed_ms"] <= budget + 100 for body, _ in served), [b["stats"] for b, _ in served]
        assert sum(body["stats"]["scored"] > 0 for body, _ in served) >= 0.5 * len(served), served
    finally:
        eng.close()
