"""The OpenAI surface through the real `openai` SDK (over the app in-process), plus /v1/rerank and the API key."""

from __future__ import annotations

import json
import math

import openai
import pytest
from fastapi.testclient import TestClient

from server.api.openai import fit, system_settings
from server.api.rerank import relevance
from server.api.tokens import TokenCounter
from server.app import Settings, create_app
from server.engine import Engine, EngineConfig
from tests.server.conftest import OverlapScorer

USER = [{"role": "user", "content": "do you like dogs?"}]


@pytest.fixture
def client(engine):
    with TestClient(create_app(Settings(budget_ms=2000), engine=engine)) as c:
        yield c


@pytest.fixture
def sdk(client):
    """The official client, talking to the app through the TestClient (an httpx.Client)."""
    return openai.OpenAI(base_url=f"{client.base_url}/v1", api_key="unused", http_client=client, max_retries=0)


class WordTokenizer:
    """A tokenizer with HF's call signature: every word and punctuation mark is a token, offsets included."""

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        import re

        if isinstance(text, list):  # a batch, as HF tokenizers take one
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        spans = [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]
        out = {"input_ids": list(range(len(spans)))}
        if return_offsets_mapping:
            out["offset_mapping"] = spans
        return out


class TokenizedScorer(OverlapScorer):
    tokenizer = WordTokenizer()


# ---------------------------------------------------------------------------------------------------- chat


def test_sdk_chat_completion_with_n_seed_and_usage(sdk, engine):
    messages = [{"role": "system", "content": "be nice"}, *USER]
    first = sdk.chat.completions.create(model="default", messages=messages, n=3, seed=11, top_p=0.5, user="x")
    assert first.object == "chat.completion" and first.model == "default"
    texts = [c.message.content for c in first.choices]
    assert len(texts) == 3 and len(set(texts)) == 3 and all(texts)
    assert [c.index for c in first.choices] == [0, 1, 2] and {c.finish_reason for c in first.choices} == {"stop"}
    again = sdk.chat.completions.create(model="default", messages=messages, n=3, seed=11)
    assert [c.message.content for c in again.choices] == texts  # the seed is honoured
    tokens = TokenCounter(engine)
    assert first.usage.prompt_tokens == tokens.count("be nice") + tokens.count(USER[0]["content"])
    assert first.usage.completion_tokens == sum(tokens.count(t) for t in texts)
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    parts = [{"role": "user", "content": [{"type": "text", "text": "dogs?"}]}]
    assert sdk.chat.completions.create(model="default", messages=parts).choices[0].message.content


def test_usage_is_counted_in_the_editors_tokenizer(tiny_markov):
    engine = Engine({"default": tiny_markov}, TokenizedScorer(), EngineConfig())
    try:
        with TestClient(create_app(Settings(), engine=engine)) as c:
            body = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi, you?"}],
                                                         "seed": 1}).json()
        assert body["usage"]["prompt_tokens"] == 4  # hi , you ?  (words alone would say 2)
        assert TokenCounter(engine).unit == "tokens"
    finally:
        engine.close()


def test_sdk_stream_with_usage_matches_the_whole_reply(sdk, client):
    stream = sdk.chat.completions.create(model="default", messages=USER, seed=11, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the usage chunk comes last
    assert all(c.usage is None for c in chunks[:-1])
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    whole = sdk.chat.completions.create(model="default", messages=USER, seed=11)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_without_include_usage_sends_no_usage_key(client):
    req = {"messages": USER, "seed": 11, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)


def test_max_tokens_picks_a_reply_that_fits_or_cuts_one(sdk, engine):
    tokens = TokenCounter(engine)
    free = sdk.chat.completions.create(model="default", messages=USER, seed=3, n=1)
    longest = tokens.count(free.choices[0].message.content)
    assert longest > 2
    short = sdk.chat.completions.create(model="default", messages=USER, seed=3, max_tokens=longest - 1)
    assert tokens.count(short.choices[0].message.content) <= longest - 1
    one = sdk.chat.completions.create(model="default", messages=USER, seed=3, max_completion_tokens=1)
    assert tokens.count(one.choices[0].message.content) == 1 and one.choices[0].finish_reason == "length"


def test_stop_ends_the_reply_before_the_stop_string(sdk):
    free = sdk.chat.completions.create(model="default", messages=USER, seed=5).choices[0].message.content
    word = free.split()[1]
    cut = sdk.chat.completions.create(model="default", messages=USER, seed=5, stop=[" " + word, "zzz"])
    text = cut.choices[0].message.content
    assert " " + word not in text and free.startswith(text) and cut.choices[0].finish_reason == "stop"


def test_fit_by_hand():
    tokens = TokenCounter.__new__(TokenCounter)
    tokens.tokenizer, tokens.unit = None, "words"
    texts = ["one two three four", "one two", "a b c"]
    assert fit(texts, 2, tokens, 3, []) == [("one two", "stop"), ("a b c", "stop")]
    assert fit(texts, 1, tokens, 1, []) == [("one", "length")]
    assert fit(texts[1:], 2, tokens, None, ["two"]) == [("one ", "stop"), ("a b c", "stop")]
    assert fit([], 2, tokens, None, []) == [("", "stop"), ("", "stop")]
    # stop first, then max_tokens: the best reply fits once cut at its stop string
    assert fit(["do you like dogs? i do.", "pizza is fine ok"], 1, tokens, 4, ["?"]) == [("do you like dogs", "stop")]
    # cut replies stay distinct, and one cut to nothing makes way for the next
    assert fit(["i like dogs a lot", "i like pizza a lot", "we do"], 2, tokens, 2, []) == [("we do", "stop"),
                                                                                            ("i like", "length")]
    assert fit(["?why", "fine"], 1, tokens, None, ["?"]) == [("fine", "stop")]


def test_long_openai_inputs_are_cut_not_refused(sdk, engine):
    long_chat = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"line {i}"} for i in range(150)]
    long_chat[-1] = {"role": "user", "content": "x " * 3000 + "do you like dogs?"}  # a RAG-sized prompt
    reply = sdk.chat.completions.create(model="default", messages=long_chat, seed=1)
    assert reply.choices[0].message.content and reply.usage.prompt_tokens > 0


def test_a_system_message_sets_the_persona_or_the_topic(client, engine):
    assert system_settings("pirate", engine) == ("pirate", None)
    assert system_settings("persona: pirate\ntopic: old movies", engine) == ("pirate", "old movies")
    assert system_settings("Talk about pizza.", engine) == (None, "Talk about pizza.")
    assert system_settings("persona: Pirate", engine) == ("pirate", None)  # names match ignoring case
    req = {"messages": [{"role": "system", "content": "persona: pirate\ntopic: pizza"}, *USER], "seed": 2}
    body = client.post("/v1/chat/completions", json=req).json()
    assert body["riposte"]["persona"] == "pirate" and body["riposte"]["seeded"]["words"] == ["pizza"]
    bad = {"messages": [{"role": "system", "content": "persona: zork"}, *USER]}
    r = client.post("/v1/chat/completions", json=bad)
    assert r.status_code == 400 and "zork" in r.json()["error"]["message"]


def test_sdk_errors_are_the_sdks_own_exceptions(sdk):
    with pytest.raises(openai.NotFoundError) as err:
        sdk.chat.completions.create(model="gpt-4", messages=USER)
    assert "gpt-4" in err.value.message and err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="default", messages=[])
    assert err.value.param == "messages"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="default", messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="default", messages=[{"role": "robot", "content": "hi"}])
    assert err.value.param == "messages.0.role" and "function-before" not in err.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="default", messages=USER, n=0)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="default", messages=USER, stop=["a", "b", "c", "d", "e"])


def test_raw_errors_under_v1_have_openais_shape(client):
    r = client.post("/v1/chat/completions", json={"messages": USER, "n": "two"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "detail" not in r.json()
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"] == "body: invalid JSON at character 1" and r.json()["error"]["param"] == "body"
    r = client.post("/v1/chat/completions", content=b"x" * 1_100_000, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]  # the body limit speaks OpenAI too
    r = client.post("/v1/chat/completions", json={"messages": USER, "n": None, "stream": None})
    assert r.status_code == 200 and len(r.json()["choices"]) == 1  # null means the default, as in vLLM
    r = client.get("/v1/nope")
    assert r.status_code == 404 and "error" in r.json()
    assert client.post("/reply", json={"history": []}).status_code == 422  # riposte's own routes keep 422


def test_sdk_lists_the_personas(sdk):
    assert [m.id for m in sdk.models.list()] == ["default", "pirate"]


# ---------------------------------------------------------------------------------------------------- rerank


def test_rerank_in_cohere_and_jina_shape(client, engine):
    docs = ["pizza is great", "do you like dogs? i like dogs", "dogs", "nothing here"]
    query = "hello there\ndo you like dogs?"
    r = client.post("/v1/rerank", json={"model": "any", "query": query, "documents": docs, "top_n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "any" and len(body["results"]) == 3 and body["usage"]["total_tokens"] > 0
    context = ["hello there", "do you like dogs?"]
    expected = sorted(range(4), key=lambda i: -engine.scorer.one(context, docs[i]))[:3]
    assert [x["index"] for x in body["results"]] == expected
    for x in body["results"]:
        assert x["document"]["text"] == docs[x["index"]]
        assert x["relevance_score"] == pytest.approx(relevance(engine.scorer.one(context, docs[x["index"]])), abs=1e-5)
        assert 0 < x["relevance_score"] < 1
    objects = client.post("/v2/rerank", json={"query": query, "documents": [{"text": d} for d in docs],
                                              "return_documents": False}).json()
    assert [x["index"] for x in objects["results"]][:3] == expected and objects["results"][0]["document"] is None


def test_rerank_errors(client):
    for body, field in [({"query": "", "documents": ["a"]}, "query"), ({"query": "q", "documents": []}, "documents"),
                        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"), ({"documents": ["a"]}, "query")]:
        r = client.post("/v1/rerank", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (body, r.text)
    r = client.post("/v1/rerank", json={"query": "\n \n", "documents": ["a"]})
    assert r.status_code == 400 and "query" in r.json()["error"]["message"]
    long = client.post("/v1/rerank", json={"query": "q" * 5000, "documents": ["d" * 5000, "dogs"]})
    assert long.status_code == 200 and len(long.json()["results"][0]["document"]["text"]) == 2000


def test_relevance_is_a_stable_sigmoid():
    assert relevance(0.0) == 0.5 and relevance(None) is None
    assert relevance(1000.0) == 1.0 and relevance(-1000.0) == 0.0
    assert relevance(2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_rank_results_carry_their_index(client):
    candidates = ["pizza", "dogs dogs", "dogs", "pizza"]
    ranked = client.post("/rank", json={"history": ["do you like dogs?"], "candidates": candidates}).json()["ranked"]
    assert sorted(x["index"] for x in ranked) == [0, 1, 2, 3]
    assert all(candidates[x["index"]] == x["text"] for x in ranked)


# ---------------------------------------------------------------------------------------------------- key, CORS


@pytest.fixture
def keyed(engine):
    with TestClient(create_app(Settings(api_key="s3cret"), engine=engine)) as c:
        yield c


def test_api_key_guards_every_api_route_but_not_health_or_the_page(keyed):
    for method, path, body in [("POST", "/reply", {"history": ["hi"]}), ("POST", "/rank", {"history": ["hi"], "candidates": ["a"]}),
                               ("GET", "/v1/models", None), ("POST", "/v1/rerank", {"query": "q", "documents": ["a"]}),
                               ("GET", "/metrics", None)]:
        r = keyed.request(method, path, json=body)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        wrong = keyed.request(method, path, json=body, headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401 and "invalid API key" in wrong.text
        right = keyed.request(method, path, json=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200, (path, right.text)
    assert keyed.get("/health").status_code == 200 and keyed.get("/").status_code == 200


def test_sdk_sees_authentication_error(keyed):
    sdk = openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key="wrong", http_client=keyed, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        sdk.models.list()
    assert err.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key="s3cret", http_client=keyed, max_retries=0)
    assert good.chat.completions.create(model="default", messages=USER).choices[0].message.content


def test_cors_is_off_by_default_and_follows_the_setting(client, engine):
    preflight = {"Origin": "http://ui.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/chat/completions", headers=preflight).headers
    with TestClient(create_app(Settings(cors_origins=["http://ui.example"]), engine=engine)) as c:
        r = c.options("/v1/chat/completions", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://ui.example"
        other = c.options("/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
        assert other.status_code == 400
        sdk_headers = {**preflight, "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"}
        assert c.options("/v1/chat/completions", headers=sdk_headers).status_code == 200  # the JS SDK's preflight


def test_openapi_schema_declares_every_stat_the_api_sends(client):
    schema = client.get("/openapi.json").json()
    declared = set(schema["components"]["schemas"]["ReplyStats"]["properties"])
    sent = set(client.post("/reply", json={"history": ["do you like dogs?"], "topic": "dogs"}).json()["stats"])
    assert sent <= declared, sent - declared
    assert "/v1/rerank" in schema["paths"] and "/v1/chat/completions" in schema["paths"]
