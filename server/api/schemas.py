"""Every request and response body of the API, as pydantic models: the OpenAPI schema is what the routes send."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from server.engine import DEFAULT_PERSONA
from server.limits import (
    MAX_BUDGET_MS,
    MAX_CANDIDATES,
    MAX_NAME,
    MAX_SIMULATED_TURNS,
    MAX_TEXT,
    MAX_TURNS,
    MIN_BUDGET_MS,
)

# ---------------------------------------------------------------------------------------------------- shared


def _valid_unicode(text: Any) -> Any:
    """Lone surrogates (JSON allows "\\ud800", e.g. from a client that cut an emoji in half) cannot be encoded
    or tokenized: they become U+FFFD, before pydantic would refuse the whole string."""
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


Text = Annotated[str, Field(max_length=MAX_TEXT), BeforeValidator(_valid_unicode)]
Name = Annotated[str, Field(max_length=MAX_NAME), BeforeValidator(_valid_unicode)]


def _alternate_speakers(value: Any) -> Any:
    """Bare strings in a history alternate speakers, the last one being the user's."""
    if not isinstance(value, list):
        return value
    n = len(value)
    return [
        {"speaker": "user" if (n - 1 - i) % 2 == 0 else "bot", "text": item} if isinstance(item, str) else item
        for i, item in enumerate(value)
    ]


class HistoryTurn(BaseModel):
    """One line of the conversation."""

    model_config = ConfigDict(extra="forbid")
    speaker: Annotated[str, Field(max_length=100), BeforeValidator(_valid_unicode)] = "user"
    text: Text


History = Annotated[
    list[HistoryTurn], BeforeValidator(_alternate_speakers), Field(min_length=1, max_length=MAX_TURNS)
]
BudgetMs = Annotated[
    int, Field(ge=MIN_BUDGET_MS, le=MAX_BUDGET_MS, description="wall-clock budget for the whole request")
]


class ReplyRequest(BaseModel):
    """POST /reply."""

    model_config = ConfigDict(extra="forbid")
    history: History
    budget_ms: BudgetMs | None = None
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    seed: int | None = None
    persona: Name = DEFAULT_PERSONA
    topic: Name | None = Field(None, description="steer the reply toward these words")
    top_k: int | None = Field(None, ge=1, le=1000)
    temperature: float | None = Field(None, gt=0, le=100)
    n_alternatives: int = Field(5, ge=0, le=100)


class SimulateRequest(BaseModel):
    """POST /simulate: personas talk among themselves for a number of turns."""

    model_config = ConfigDict(extra="forbid")
    personas: list[Name] | None = Field(
        None, min_length=1, max_length=50, description="who takes part; default: every persona except 'all'")
    turns: int = Field(10, ge=1, le=MAX_SIMULATED_TURNS)
    history: Annotated[list[HistoryTurn], BeforeValidator(_alternate_speakers), Field(max_length=MAX_TURNS)] = []
    topic: Name | None = None
    order: Literal["round_robin", "follows"] = Field(
        "round_robin", description="next speaker: in turn, or who most often followed whom in the export")
    budget_ms: BudgetMs | None = Field(None, description="per turn; the whole run is also capped by the server")
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)
    seed: int | None = None


class SimulatedTurn(BaseModel):
    """One generated line of a simulation."""

    persona: str
    speaker: str
    text: str | None
    score: float | None
    elapsed_ms: float
    scored: int
    timed_out: bool


class SimulateResponse(BaseModel):
    """The generated turns, in order; `stopped` says why there are fewer than asked (else null)."""

    turns: list[SimulatedTurn]
    elapsed_ms: float
    budget_ms: float
    time_bound_ms: float
    stopped: str | None


class ScoredText(BaseModel):
    """A candidate and its score (null when the budget ran out before it was scored)."""

    text: str
    score: float | None


class RankedText(ScoredText):
    """A candidate, its score, and its index in the request's `candidates`."""

    index: int


class FirstStageStats(BaseModel):
    """What the first stage did: candidates it scored, and its time."""

    scored: int
    ms: float


class IndexStats(BaseModel):
    """What the persona's reply index gave the turn: the lines found nearest the context, and its time."""

    hits: int
    ms: float
    error: str | None = Field(None, description="the search failed (this kind of error): the turn used live lines")


class SourceStats(BaseModel):
    """Where the turn's candidates came from, past the filters, and how many of each the editor read."""

    index: int = Field(description="found in the persona's reply index (written, judged and embedded before the turn)")
    live: int = Field(description="written in this turn")
    index_read: int = Field(description="index lines the editor scored: read in the turn, or from kept readings")
    live_read: int
    index_kept: int = Field(0, description="of index_read, those scored from the index's kept readings of the "
                            "editor (no forward pass in the turn)")


class SeededStats(BaseModel):
    """The words a turn's seeded candidates were written around, where they came from, and how many there were."""

    source: Literal["topic", "context", "replies"] = Field(
        description="the topic's words, the context's, or the words people name in reply to the context's")
    words: list[str]
    candidates: int
    unknown: list[str] = Field(default_factory=list, description="topic words the persona's writer does not know")
    answering: list[str] = Field(default_factory=list,
                                 description="with source `replies`: the context words the seed words answer")


class ReplyStats(BaseModel):
    """The funnel of one turn: made, unique, past the filters, read by the editor; and its time."""

    generated: int = Field(description="candidates the writer made")
    unique: int = Field(description="distinct candidates")
    filtered: int = Field(description="candidates past every text rule: those written in this turn (generated, "
                          "unique) and those found in the persona's reply index (sources.index)")
    scored: int = Field(description="candidates the editor scored within the budget (read in the turn, or from "
                        "a reply index's kept readings: sources.index_kept)")
    elapsed_ms: float
    budget_ms: float
    timed_out: bool = Field(description="the editor had candidates but the budget ran out before the first")
    scorer: Literal["reranker", "prior"] = Field(description="what ranked the candidates")
    persona: str
    stage_ms: dict[str, float] = Field(description="time per stage: queued, generate, index, filter, first_stage, "
                                       "kept (the index's hits scored from their kept readings), editor (of which "
                                       "editor_wait: before the scorer's first round with the turn)")
    editor_rounds: int | None = Field(None, description="the scorer's rounds that read some of this turn's candidates")
    load_scaled: dict[str, int] | None = Field(None, description="under load the turn wrote fewer candidates than "
                                               "requested (about 8 per one the editor had time to read)")
    first_stage: FirstStageStats | None = None
    index: IndexStats | None = None
    sources: SourceStats | None = None
    source: Literal["index", "live"] | None = Field(None, description="where the reply came from")
    seeded: SeededStats | None = None
    generation: dict[str, int] | None = Field(None, description="the writer's own counts (novelty test and more)")
    yielded: bool | None = Field(None, description="generation stopped early to let another turn use the CPU")
    spans: int | None = Field(None, description="runs of a written line's sentences offered on their own "
                                                "(`sentence_spans`, off by default), beside the unique lines written")
    plain_retry: bool | None = Field(None, description="the turn wrote only lines around the seed words and kept "
                                     "none (none written, or none past the text rules), so it wrote plain lines")
    reason: str | None = Field(None, description="why there is no reply, when there is none")


class ReplyResponse(BaseModel):
    """The reply, its score, the runners-up and the stats."""

    reply: str | None
    score: float | None
    alternatives: list[ScoredText]
    stats: ReplyStats


class RankRequest(BaseModel):
    """POST /rank."""

    model_config = ConfigDict(extra="forbid")
    history: History
    candidates: list[Text] = Field(min_length=1, max_length=MAX_CANDIDATES)
    budget_ms: BudgetMs | None = None


class RankResponse(BaseModel):
    """The candidates, best first."""

    ranked: list[RankedText]
    scored: int
    elapsed_ms: float


# ---------------------------------------------------------------------------------------------------- OpenAI


# OpenAI's clients send what they have (RAG prompts, long chats, long documents): /v1 takes texts of any length and
# cuts them to what the engine reads, where riposte's own routes refuse them with a 422 naming the field.
AnyText = Annotated[str, BeforeValidator(_valid_unicode)]


def _default_if_null(default: Any) -> Any:
    """A validator turning JSON null into the field's default, as OpenAI's and vLLM's servers accept it."""
    return BeforeValidator(lambda value: default if value is None else value)


class ContentPart(BaseModel):
    """One part of an OpenAI message content array; only text parts carry meaning here."""

    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: AnyText = ""


class ChatMessage(BaseModel):
    """An OpenAI chat message."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: AnyText | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (text parts joined), cut to the newest MAX_TEXT characters the engine reads."""
        if isinstance(self.content, list):
            text = " ".join(part.text for part in self.content if part.type == "text")
        else:
            text = self.content or ""
        return text[-MAX_TEXT:]


class StreamOptions(BaseModel):
    """OpenAI's stream_options: `include_usage` adds a last chunk with the usage."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions; unknown OpenAI fields (top_p, user, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str = DEFAULT_PERSONA
    messages: list[ChatMessage] = Field(min_length=1, description="the newest 100 user and assistant turns are read")
    n: Annotated[int, _default_if_null(1), Field(ge=1, le=100)] = 1
    stream: Annotated[bool, _default_if_null(False)] = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, description="most tokens (the editor's tokenizer) in a reply")
    max_completion_tokens: int | None = Field(None, ge=1, description="OpenAI's newer name for max_tokens")
    stop: (Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)]
           | None) = Field(None, description="a reply ends before the first of these")
    # riposte's own fields (OpenAI clients pass them through `extra_body`).
    budget_ms: BudgetMs | None = None
    n_candidates: int | None = Field(None, ge=1, le=MAX_CANDIDATES)

    def stops(self) -> list[str]:
        """The stop strings, as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class AssistantMessage(BaseModel):
    """The reply as an OpenAI message."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """One reply; `finish_reason` is "length" when max_tokens cut it."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    """Tokens in, tokens out, counted with the editor's tokenizer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """POST /v1/chat/completions, not streamed."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    riposte: ReplyStats = Field(description="riposte's own stats for the turn")


class Delta(BaseModel):
    """A streamed piece of a reply."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """One choice's piece in a streamed chunk."""

    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed completion; the last one (with include_usage) has no choices."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    """A persona, as an OpenAI model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "riposte"


class ModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIError(BaseModel):
    """Every error under /v1, as OpenAI sends it (its SDKs read `error.message`)."""

    error: ErrorBody


# ---------------------------------------------------------------------------------------------------- rerank


class RerankDocument(BaseModel):
    """A document as Cohere's and Jina's APIs also accept it."""

    model_config = ConfigDict(extra="ignore")
    text: AnyText


class RerankRequest(BaseModel):
    """POST /v1/rerank, as Cohere, Jina and vLLM define it; the query is the context (one line per line)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    query: Annotated[AnyText, Field(min_length=1)] = Field(
        description="the context, one line per line, newest last; the newest 100 lines are read")
    documents: list[AnyText | RerankDocument] = Field(
        min_length=1, max_length=MAX_CANDIDATES, description="the candidates; each is read up to 2,000 characters")
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    return_documents: bool = True
    budget_ms: BudgetMs | None = None


class RerankResult(BaseModel):
    """One document's place: its index in the request, its relevance in (0, 1), and the document."""

    index: int
    relevance_score: float | None = Field(description="sigmoid of the editor's score; null if the budget ran out")
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    """Tokens read, counted with the editor's tokenizer."""

    total_tokens: int


class RerankResponse(BaseModel):
    """The documents, best first."""

    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage


# ---------------------------------------------------------------------------------------------------- service


class BuildProgress(BaseModel):
    """Where the first-run build stands."""

    stage: str
    done: int = Field(description="stages finished")
    total: int = Field(description="stages in all")
    elapsed_s: float
    expected_s: float | None = Field(None, description="how long this stage is expected to take, when known")


class Health(BaseModel):
    """GET /health: 200 when ready; 503 while the models load or build, or when they failed to."""

    status: Literal["ok", "loading", "building", "error"]
    detail: str | None = None
    build: BuildProgress | None = None


class Limits(BaseModel):
    """What a request may ask for."""

    min_budget_ms: int = MIN_BUDGET_MS
    max_budget_ms: int = MAX_BUDGET_MS
    max_candidates: int = MAX_CANDIDATES
    max_turns: int = MAX_TURNS
    max_text: int = MAX_TEXT
    max_simulated_turns: int = MAX_SIMULATED_TURNS


class ServerConfig(BaseModel):
    """GET /config: the defaults a request gets when it names none, the personas, and the limits."""

    budget_ms: int
    n_candidates: int
    personas: list[str] = Field(description="every name a request may use as `persona` or `model`")
    speaking_personas: list[str] = Field(description="who takes part in a simulation that names nobody")
    scorer: Literal["reranker", "prior"]
    limits: Limits = Limits()


class FieldError(BaseModel):
    """One bad field of a request."""

    field: str
    msg: str
    type: str | None = None


class ValidationDetail(BaseModel):
    """What was wrong with a request, as one message and per field."""

    message: str
    errors: list[FieldError]


class ErrorResponse(BaseModel):
    """Every error outside /v1: a message, or for a bad request the message and the fields it names."""

    detail: str | ValidationDetail
