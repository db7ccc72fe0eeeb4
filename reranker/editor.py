"""The default editor: a bi-encoder for relevance, a "human or writer?" head for fluency, one learned verdict.

score(context, candidate) = w_context * cos(joined context, candidate) + w_last * cos(last line, candidate)
                          + w_fluency * fluency(candidate) + w_sense * sense(candidate)
                          + w_sense_context * cos_sense(joined context, candidate)
                          + w_asks_back * [the last line asks and so does the candidate]
                          + w_splice * splice(candidate) + bias

- Relevance is the zero-shot MiniLM bi-encoder (`reranker.biencoder`), untouched: on dialogue it never saw it
  beats every cross-encoder we could train in CPU minutes (benchmarks/RESULTS.md), and fine-tuning it on
  chitchat did not transfer to subtitles (8 CPU minutes of in-batch contrastive training: held-out subtitles
  R@1 of 10 went 0.437 -> 0.427, measured on a 2-core EPYC). The last line gets its own cosine because a reply
  answers the newest line most of all.
- Fluency is a small MLP over the candidate's own embedding (its direction, its norm and its length), trained
  against lines of the very Markov writer the editor will edit: it costs no extra forward pass.
- The mix is fitted listwise on held-out conversations (the true line against other people's lines and the
  writer's lines), so the weights say how much each signal is worth.
- `asks_back` reads the texts, not the vectors: people answer a question with a question less often than their
  lines hold one, and an editor that rewards closeness picks questions about the question ("Which university did
  you graduate from?" -> "what did you graduate the undergrad program?"). Its weight is held at the value a fit on
  800 validation cases gave (`reranker.recipes.ASKS_BACK`), the others fitted around it.
- `splice` is the sense encoder's token head, where it has one (trained with `SenseTraining.splice_weight`): its
  largest logit over the candidate's tokens, high where the line reads as the writer joining two lines. Read in
  the same forward as the sense vector; 0 without a token head.

With weights (20, 0, 0) and no training the editor ranks exactly as the zero-shot bi-encoder does.

A saved editor is a directory: config.json ("riposte": kind "editor", format version, weights),
`biencoder/` (a saved BiEncoder) and `fluency.safetensors`; `reranker.load(dir)` recognises it. Other libraries'
loaders refuse the directory with a message naming riposte (`FOREIGN_MODEL_TYPE`), rather than score it wrong.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from corpus import modeldir
from corpus.modeldir import atomic_directory, config_fields
from corpus.text import asks
from reranker.backends import resolve_backend
from reranker.biencoder import BiEncoder
from reranker.card import with_loading_note
from reranker.runtime import CostSum, check_inputs, load_head, pick_device, rank_by_score, save_head, unit
from reranker.sense import SenseModel

# 2: a fourth feature, "sense" (a fine-tuned "human or writer?" encoder, `sense/`). 3: a fifth, "sense_context",
# the sense encoder's own cosine with the context (it learns relevance in the same fine-tune). Older editors load
# with the weights they lack set to 0. 4: a sixth, "asks_back" (the last context line asks and the candidate asks
# back), read off the texts. 5: a seventh, "splice" (the sense encoder's token head: its largest logit over a line).
FORMAT_VERSION = 5
READS_VERSIONS = (1, 2, 3, 4, 5)
KIND = "editor"
FEATURES = ("context", "last_line", "fluency", "sense", "sense_context", "asks_back", "splice")
FEATURES_OF_VERSION = {1: 3, 2: 4, 3: 5, 4: 6, 5: 7}  # how many of FEATURES each format version names
FLUENCY_FILE = "fluency.safetensors"
SENSE_DIR = "sense"
# score_many embeds in pieces this size, front to back: one piece is about one efficient batch of short candidates
# (throughput is flat from 16 to 128 on CPU), and a deadline cuts the back of the order, not the longest texts.
MANY_PIECE = 16
# On an approximate (int8) backend, `score` rescores its best this many candidates with the fp32 forward: int8 moves
# cosines by a few hundredths, enough to swap near-ties at the top of 512 writer lines (top-1 agreement 82.5%),
# while fp32's best sat at int8's rank 0 or 1 on every one of 40 real turns; 16 (not 8) also keeps fp32's top 10
# (recall@10 99% against 91%) for about 4% of the turn (benchmarks/RESULTS.md).
REFINE_TOP = 16
# sentence-transformers' CrossEncoder, transformers' Auto classes and pipelines all begin at AutoConfig, which picks a
# model class by config.json's `model_type`. An editor is not one transformers model (a bi-encoder, a fluency head and
# a mix), so no stock class scores it as trained: its config.json names a type no library knows, worded as the fix,
# and their error ("...has model type `riposte-editor: ...`...") then says what to do. Without any model_type they
# refused too, but with a generic message; the riposte section is unchanged, so FORMAT_VERSION stays 1 and editors
# saved before this key load as ever.
FOREIGN_MODEL_TYPE = ("riposte-editor: not a transformers model (a bi-encoder plus a fluency head), so no "
                      "transformers or sentence-transformers class scores it as trained; load it with riposte: "
                      "reranker.Reranker.load(dir), python -m reranker eval, or a riposte server's /rank endpoint")


@dataclass(frozen=True)
class EditorConfig:
    """The mix and the fluency head's shape, saved with the editor."""

    weights: tuple[float, ...] = (20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # one per FEATURES entry; fewer: the rest 0
    bias: float = 0.0
    fluency_width: int = 256
    # The sense model's encoder is the bi-encoder itself (`sense/` holds its head alone): set by `Editor.save`.
    shared_encoder: bool = False
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.weights) in FEATURES_OF_VERSION.values():  # an older version's mix: the newer features get 0
            object.__setattr__(self, "weights", (*self.weights, *[0.0] * (len(FEATURES) - len(self.weights))))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"weights needs one value per feature {FEATURES}, got {len(self.weights)}")
        if not all(math.isfinite(w) for w in (*self.weights, self.bias)):
            raise ValueError(f"weights and bias must be finite, got {self.weights}, {self.bias}")
        if self.fluency_width < 1:
            raise ValueError(f"fluency_width must be positive, got {self.fluency_width}")

    def to_dict(self) -> dict:
        """The config.json section: weights named by feature, so the file reads on its own."""
        data = asdict(self)
        data["weights"] = dict(zip(FEATURES, self.weights, strict=True))
        return {"kind": KIND, **data}

    @classmethod
    def from_dict(cls, data: dict) -> EditorConfig:
        """Build from a config.json section, rejecting other format versions and unknown features."""
        if data.get("kind") != KIND:
            raise ValueError(f"not an editor's settings (kind {data.get('kind')!r}, expected {KIND!r})")
        values = config_fields(cls, data, "editor", reads=READS_VERSIONS)
        weights = data.get("weights", {})
        named = set(FEATURES[: FEATURES_OF_VERSION.get(data.get("format_version"), len(FEATURES))])
        if not isinstance(weights, dict) or set(weights) != named:
            raise ValueError(f"editor weights must name exactly the features {sorted(named)}, got {weights!r}")
        values["weights"] = tuple(float(weights.get(name, 0.0)) for name in FEATURES)
        return cls(**values)


class FluencyHead(nn.Module):
    """"Human or writer?" from a candidate's embedding: (N, H + 2) inputs -> (N,) logits (higher = more human)."""

    def __init__(self, hidden_size: int, width: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size + 2, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for inputs (N, H + 2)."""
        return self.net(x)[:, 0]


def fluency_inputs(vecs: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The head's inputs: the unit embedding, the log of its norm and the log token count, (N, H + 2) float32."""
    norm = np.linalg.norm(vecs, axis=1, keepdims=True)
    extra = np.hstack([np.log(np.maximum(norm, 1e-6)), np.log1p(tokens.reshape(-1, 1).astype(np.float32))])
    return np.hstack([vecs / np.maximum(norm, 1e-12), extra]).astype(np.float32)


def asks_of(texts: list[str]) -> np.ndarray:
    """(N,) float32: 1 where the text asks something (`corpus.text.asks`)."""
    return np.fromiter((asks(t) for t in texts), dtype=np.float32, count=len(texts))


class Reading(NamedTuple):
    """What the editor's models read off candidates, row by row: everything `Editor.features` needs."""

    vecs: np.ndarray  # (N, H) the bi-encoder's pooled vectors
    tokens: np.ndarray  # (N,) token counts
    sense: np.ndarray  # (N,) sense logits (0 without a sense model)
    sense_vecs: np.ndarray  # (N, H) the sense encoder's pooled vectors; (N, 0) without one
    done: np.ndarray  # (N,) read by every model before the deadline
    asks: np.ndarray  # (N,) float32: 1 where the text asks something (`corpus.text.asks`)
    splice: np.ndarray  # (N,) float32 the sense encoder's largest token-head logit (0 without a token head)

    def take(self, rows: np.ndarray) -> Reading:
        """The rows `rows` (indices or a mask) of every field."""
        return Reading(*(field[rows] for field in self))


class Editor:
    """Scores candidate replies to a context; the same API as the `CrossEncoder`."""

    def __init__(self, biencoder: BiEncoder, fluency: FluencyHead, config: EditorConfig | None = None,
                 sense: SenseModel | None = None) -> None:
        self.biencoder = biencoder
        self.fluency = fluency.float().eval()
        if sense is not None and sense.encoder.hidden_size != biencoder.hidden_size:
            raise ValueError(f"the sense encoder's width {sense.encoder.hidden_size} differs from the bi-encoder's "
                             f"{biencoder.hidden_size}")
        self.sense = sense  # the fine-tuned "human or writer?" encoder; None: the sense features are 0
        # One encoder for both (the sense model's fine-tuned encoder is the bi-encoder): each candidate is read once.
        self.shared = sense is not None and sense.encoder is biencoder
        self.config = config or EditorConfig()
        if self.config.weights[FEATURES.index("splice")] != 0.0 and not self.has_splice:
            raise ValueError("the mix weighs the splice logit, but the sense model has no token head to give it")
        self.weights = np.asarray(self.config.weights, dtype=np.float32)
        self.refine_top = REFINE_TOP
        # The engine scores a turn in slices with one context. The scheduler's thread reads it, and a turn's own
        # thread too when it scores a reply index's kept readings: the cache is shared under a lock.
        self._contexts: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._contexts_lock = threading.Lock()

    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike | None = None, config: EditorConfig | None = None,
                      **kwargs) -> Editor:
        """An untrained editor on a backbone: relevance only, ranking as the zero-shot bi-encoder."""
        config = config or EditorConfig()
        biencoder = BiEncoder.from_backbone(name_or_path, **kwargs)
        torch.manual_seed(0)
        return cls(biencoder, FluencyHead(biencoder.hidden_size, config.fluency_width), config)

    def with_config(self, config: EditorConfig) -> Editor:
        """The same models under another mix."""
        return Editor(self.biencoder, self.fluency, config, self.sense)

    def with_sense(self, sense: SenseModel | None) -> Editor:
        """The same models and mix with another sense model."""
        return Editor(self.biencoder, self.fluency, self.config, sense)

    @property
    def tokenizer(self):
        """The tokenizer the editor reads with: its bi-encoder's."""
        return self.biencoder.tokenizer

    @property
    def context_speakers(self) -> bool:
        """Always False: context lines are embedded as plain text."""
        return False

    # ---- saving, loading ----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike, *, model_card: str | None = None,
             extra_files: dict[str, str] | None = None) -> Path:
        """Write the editor directory (config.json, biencoder/, fluency head, card), atomically.

        The card gets the note on loading the editor with other libraries (`reranker.card.EDITOR_ELSEWHERE`).
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            config = replace(self.config, shared_encoder=self.shared)
            modeldir.write(tmp, KIND, config.format_version, config.to_dict(),
                           extra={"model_type": FOREIGN_MODEL_TYPE})
            (tmp / "biencoder").mkdir()
            self.biencoder.write(tmp / "biencoder")
            save_head(self.fluency, tmp / FLUENCY_FILE)
            if self.sense is not None:
                (tmp / SENSE_DIR).mkdir()
                if self.shared:  # the encoder is biencoder/ already: sense/ holds the head alone
                    self.sense.write_head(tmp / SENSE_DIR)
                else:
                    self.sense.write(tmp / SENSE_DIR)
            if model_card is not None:
                (tmp / "README.md").write_text(with_loading_note(model_card), encoding="utf-8")
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text, encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, **options) -> Editor:
        """Load a saved editor (`reranker.load` loads any kind); `from_saved`'s options."""
        return cls.from_saved(directory, modeldir.read(directory, "editor"), **options)  # from_dict checks the kind

    @classmethod
    def from_saved(cls, directory: str | os.PathLike, settings: dict, *, device=None, dtype="auto",
                   warmup: bool = True, backend: str = "auto") -> Editor:
        """The editor saved in `directory`, whose riposte settings are read already; `backend` as in
        `BiEncoder.load`."""
        directory = Path(directory)
        config = EditorConfig.from_dict(settings)
        if not (directory / FLUENCY_FILE).is_file():
            raise FileNotFoundError(f"{directory} has no {FLUENCY_FILE}: the editor is incomplete; rebuild it")
        # the editor rescores its best exactly (`refine`), so "auto" may pick an int8 backend here
        backend = resolve_backend(backend, pick_device(device), approximate_ok=True)
        biencoder = BiEncoder.load(directory / "biencoder", device=device, dtype=dtype, backend=backend)
        head = load_head(FluencyHead(biencoder.hidden_size, config.fluency_width), directory / FLUENCY_FILE,
                         "the editor's config")
        sense = None
        if (directory / SENSE_DIR).is_dir():
            sense = SenseModel.load(directory / SENSE_DIR, device=device, dtype=dtype, backend=backend,
                                    encoder=biencoder if config.shared_encoder else None)
        elif any(config.weights[FEATURES.index(name)] != 0.0 for name in ("sense", "sense_context", "splice")):
            raise FileNotFoundError(f"{directory} has no {SENSE_DIR}/ but its mix weighs sense: the editor is "
                                    "incomplete; rebuild it")
        if config.weights[FEATURES.index("splice")] != 0.0 and not (sense is not None and sense.has_splice):
            raise FileNotFoundError(f"{directory}: the mix weighs the splice logit but the sense encoder has no "
                                    "token head (token_head.safetensors): the editor is incomplete; rebuild it")
        editor = cls(biencoder, head, config, sense)
        if warmup:
            editor.warmup()
        return editor

    def warmup(self) -> None:
        """Score a small batch twice so first-call costs are paid and the cost model is calibrated."""
        context = ["hello there", "how are you doing today?"]
        candidates = [f"fine thanks {'and you ' * (i % 5)}" for i in range(32)]
        for _ in range(2):
            self.biencoder.embed(candidates)
            if self.sense is not None and not self.shared:
                self.sense.logits(candidates)
            with self._contexts_lock:
                self._contexts.clear()
            self.score(context, candidates)

    # ---- scoring ------------------------------------------------------------------------------------

    def context_vectors(self, context: list[str]) -> np.ndarray:
        """Unit vectors (3, H): the joined context and its last line as the bi-encoder reads them, and the joined
        context as the sense encoder reads it (zeros without one); zeros for an empty context."""
        return self.context_vectors_many([context])[0]

    def context_vectors_many(self, contexts: list[list[str]]) -> list[np.ndarray]:
        """`context_vectors` of several contexts; those not cached are embedded together, one batch per encoder.

        The scheduler's rounds meet many new contexts at once under load: one batched forward for all of them
        costs a fraction of one small forward each.
        """
        keys = [tuple(context[-self.biencoder.config.context_lines :]) for context in contexts]
        with self._contexts_lock:  # the forward runs outside the lock, so one thread's embedding blocks no other
            found = {key: self._contexts[key] for key in keys if key in self._contexts}
        todo = list(dict.fromkeys(key for key in keys if key not in found))
        if todo:
            new = np.zeros((len(todo), 3, self.biencoder.hidden_size), dtype=np.float32)
            rows = [i for i, key in enumerate(todo) if key]  # an empty context keeps its zeros
            if rows:
                # exact even on an int8 backend: a few texts per turn, and every candidate's cosine leans on them
                texts = [t for i in rows for t in (self.biencoder.context_text(list(todo[i])), todo[i][-1])]
                raw, _ = self.biencoder.embed(texts, keep_end=True, exact=True)
                new[rows, :2] = unit(raw).reshape(len(rows), 2, -1)
                if self.shared:  # the same encoder reads the same joined context the same way
                    new[rows, 2] = new[rows, 0]
                elif self.sense is not None:
                    new[rows, 2] = self.sense.context_vectors([list(todo[i]) for i in rows])
            found.update(zip(todo, new, strict=True))
        with self._contexts_lock:
            for key in keys:
                self._contexts[key] = found[key]
                self._contexts.move_to_end(key)
            while len(self._contexts) > max(256, len(set(keys))):
                self._contexts.popitem(last=False)
        return [found[key] for key in keys]

    def features(self, context_vectors: np.ndarray, reading: Reading, asked: float | np.ndarray) -> np.ndarray:
        """(N, 7) features of read candidates: cosine with the context, cosine with the last line, fluency logit,
        sense logit, the sense encoder's cosine with the context (both 0 without a sense model), asks_back and the
        splice logit (0 without a token head).

        `context_vectors` is one context's (3, H) for every row, or (N, 3, H): each row its own (evaluation);
        `asked` is 1 where the context's last line asks (`context_asks`), a float or one per row likewise.
        """
        if len(reading.vecs) == 0:
            return np.zeros((0, len(FEATURES)), dtype=np.float32)
        svecs = unit(reading.sense_vecs) if self.sense is not None else None
        return self._features(context_vectors, unit(reading.vecs), self._fluency(reading), reading.sense, svecs,
                              asked, reading.asks, reading.splice)

    @staticmethod
    def context_asks(context: list[str]) -> float:
        """1.0 where the context's last line asks something, else 0.0 (`features`' `asked`). The last line, whoever
        said it: the editor knows no speakers (the engine's mirror rule looks at the user's)."""
        return float(bool(context) and asks(context[-1]))

    def _fluency(self, reading: Reading) -> np.ndarray:
        """The fluency head's logits (N,) of read candidates."""
        with torch.inference_mode():
            return self.fluency(torch.from_numpy(fluency_inputs(reading.vecs, reading.tokens))).numpy()

    def _features(self, context_vectors: np.ndarray, vecs: np.ndarray, flu: np.ndarray, sense: np.ndarray,
                  svecs: np.ndarray | None, asked: float | np.ndarray, candidate_asks: np.ndarray,
                  splice: np.ndarray) -> np.ndarray:
        """The features from what a reading leaves: unit vectors, fluency, sense and splice logits, and whether the
        context and each candidate ask (`features`, `score_kept`)."""
        per_row = context_vectors.ndim == 3
        cos = np.einsum("nh,nkh->nk", vecs, context_vectors[:, :2]) if per_row else vecs @ context_vectors[:2].T
        tuned = np.zeros(len(vecs), dtype=np.float32)
        if svecs is not None:
            tuned = np.einsum("nh,nh->n", svecs, context_vectors[:, 2]) if per_row else svecs @ context_vectors[2]
        asks_back = asked * candidate_asks
        return np.hstack([cos, flu[:, None], sense[:, None], tuned[:, None], asks_back[:, None], splice[:, None]]
                         ).astype(np.float32)

    # ---- readings kept to score later (the reply index) ----------------------------------------------

    @property
    def has_splice(self) -> bool:
        """True when the sense encoder has a token head, so readings carry a splice logit."""
        return self.sense is not None and self.sense.has_splice

    @property
    def kept_width(self) -> int:
        """The width of a kept reading (`keep`): two unit vectors, the fluency logit, the splice logit where there is
        a token head, and the sense logit (last, always)."""
        return 2 * self.biencoder.hidden_size + 2 + int(self.has_splice)

    def keep(self, texts: list[str]) -> np.ndarray:
        """Read texts exactly once and keep what scoring them against any context needs, (N, kept_width) float32:
        the bi-encoder's unit vector, the sense encoder's (zeros without a sense model), the fluency logit, the
        splice logit (only with a token head, so an older editor's width is unchanged) and the sense logit.
        `score_kept` gives them the verdict `score` would, with no forward pass but the context's."""
        reading = self.read_texts(texts, exact=True)
        n, h = len(texts), self.biencoder.hidden_size
        if n == 0:
            return np.zeros((0, self.kept_width), dtype=np.float32)
        svecs = unit(reading.sense_vecs) if self.sense is not None else np.zeros((n, h), dtype=np.float32)
        splice = [reading.splice[:, None]] if self.has_splice else []
        return np.hstack([unit(reading.vecs), svecs, self._fluency(reading)[:, None], *splice,
                          reading.sense[:, None]]).astype(np.float32)

    def score_kept(self, context: list[str], kept: np.ndarray, candidates: list[str]) -> np.ndarray:
        """Scores (N,) of candidates from their kept readings (`keep`, float16 or float32) against `context`; the
        texts themselves give `asks_back`."""
        kept = np.asarray(kept, dtype=np.float32)
        h = self.biencoder.hidden_size
        if kept.ndim != 2 or kept.shape[1] != self.kept_width:
            raise ValueError(f"kept readings must be (N, {self.kept_width}) for this editor, got {kept.shape}")
        if len(candidates) != len(kept):
            raise ValueError(f"{len(kept)} kept readings for {len(candidates)} candidates")
        if len(kept) == 0:
            return np.zeros(0, dtype=np.float32)
        svecs = unit(kept[:, h : 2 * h]) if self.sense is not None else None
        splice = kept[:, 2 * h + 1] if self.has_splice else np.zeros(len(kept), dtype=np.float32)
        feats = self._features(self.context_vectors(context), unit(kept[:, :h]), kept[:, 2 * h], kept[:, -1],
                               svecs, self.context_asks(context), asks_of(candidates), splice)
        return self.combine(feats)

    def read_texts(self, texts: list[str], deadline: float = math.inf, *, exact: bool = False) -> Reading:
        """Embed (and, with a sense model, judge) texts front to back in pieces until `deadline`.

        Returns a `Reading`: a text is done when both models have read it, so a deadline never leaves a candidate
        half judged.
        """
        n = len(texts)
        vecs = np.zeros((n, self.biencoder.hidden_size), dtype=np.float32)
        sense_vecs = np.zeros((n, self.biencoder.hidden_size) if self.sense is not None else (n, 0), dtype=np.float32)
        tokens = np.zeros(n, dtype=np.int64)
        sense = np.zeros(n, dtype=np.float32)
        splice = np.zeros(n, dtype=np.float32)
        done = np.zeros(n, dtype=bool)
        piece = MANY_PIECE if math.isfinite(deadline) else max(n, 1)  # without a deadline: the biggest batches
        for lo in range(0, n, piece):
            hi = min(lo + piece, n)
            v, t, d, token_max = self.biencoder.read_until(texts[lo:hi], deadline, exact=exact)
            if self.shared:  # one read: the sense heads sit on the very vectors (and tokens) just read
                sense[lo:hi] = self.sense.head_logits(v)
                sense_vecs[lo:hi] = v
                splice[lo:hi] = token_max
            elif self.sense is not None and d.any():
                rows = np.flatnonzero(d)
                svecs, logits, judged, spliced = self.sense.read_until([texts[lo + i] for i in rows], deadline,
                                                                       exact=exact)
                sense[lo + rows] = logits
                sense_vecs[lo + rows] = svecs
                splice[lo + rows] = spliced
                d[rows[~judged]] = False
            vecs[lo:hi], tokens[lo:hi], done[lo:hi] = v, t, d
            if not d.all():  # the deadline came: what is left would not fit either
                break
        return Reading(vecs, tokens, sense, sense_vecs, done, asks_of(texts), splice)

    def combine(self, feats: np.ndarray) -> np.ndarray:
        """The verdict: the weighted sum of the features plus the bias, (N,) float32."""
        return (feats @ self.weights + np.float32(self.config.bias)).astype(np.float32)

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        """One float32 score per candidate, in the caller's order; higher is a better reply (the best ones exact)."""
        scores, _ = self._score(context, candidates, math.inf)
        return self.refine(context, candidates, scores)

    def refine(self, context: list[str], candidates: list[str], scores: np.ndarray, top_k: int | None = None,
               deadline: float = math.inf) -> np.ndarray:
        """`scores` with the best top_k (default refine_top) rescored by the fp32 forward; unchanged on exact backends.

        A turn scored in slices with `score_until` calls this once at the pick, so the reply is chosen on exact scores.
        """
        top_k = self.refine_top if top_k is None else top_k
        if not self.biencoder.approximate or top_k < 1 or len(candidates) == 0:
            return scores
        finite = np.flatnonzero(np.isfinite(scores))
        best = finite[np.argsort(-scores[finite], kind="stable")[:top_k]]
        texts = list(dict.fromkeys(candidates[i] for i in best))
        reading = self.read_texts(texts, deadline, exact=True)
        verdicts = self.combine(self.features(self.context_vectors(context), reading, self.context_asks(context)))
        exact = {text: v for text, v, ok in zip(texts, verdicts, reading.done, strict=True) if ok}  # past the deadline: as was
        out = scores.copy()
        for i in best:
            out[i] = exact.get(candidates[i], out[i])
        return out

    def score_until(self, context: list[str], candidates: list[str], deadline: float) -> tuple[np.ndarray, np.ndarray]:
        """Score in the caller's order until `deadline` (time.monotonic()): (scores with NaN, scored mask)."""
        return self._score(context, candidates, deadline)

    def rank(self, context: list[str], candidates: list[str], top_k: int | None = None) -> list[tuple[str, float]]:
        """(candidate, score) pairs, best first; the top_k best if given."""
        return rank_by_score(self.score(context, candidates), candidates, top_k)

    def score_pairs(self, pairs: list[tuple[list[str], str]]) -> np.ndarray:
        """One score per (context, candidate) pair, each with its own context (evaluation); one batch per kind.

        Exact (fp32) on every backend, so evaluation figures stay comparable whatever the editor serves with.
        """
        for context, candidate in pairs:
            check_inputs(context, [candidate])
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        reading = self.read_texts([candidate for _, candidate in pairs], exact=True)
        contexts = np.stack([self.context_vectors(context) for context, _ in pairs])  # (N, 3, H)
        asked = np.array([self.context_asks(context) for context, _ in pairs], dtype=np.float32)
        return self.combine(self.features(contexts, reading, asked))

    def _score(self, context: list[str], candidates: list[str], deadline: float) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(context, candidates)
        n = len(candidates)
        scores = np.full(n, np.nan, dtype=np.float32)
        if n == 0:
            return scores, np.zeros(0, dtype=bool)
        first: dict[str, int] = {}  # duplicates are embedded once
        slot_of = np.fromiter((first.setdefault(c, len(first)) for c in candidates), dtype=np.int64, count=n)
        unique = list(first)
        if math.isfinite(deadline) and time.monotonic() >= deadline:  # not even the context fits any more
            return scores, np.zeros(n, dtype=bool)
        context_vectors = self.context_vectors(context)
        reading = self.read_texts(unique, deadline)
        done = reading.done
        unique_scores = np.full(len(unique), np.nan, dtype=np.float32)
        unique_scores[done] = self.combine(self.features(context_vectors, reading.take(done),
                                                         self.context_asks(context)))
        scored = done[slot_of]
        scores[scored] = unique_scores[slot_of[scored]]
        return scores, scored

    # ---- several turns at once (the engine's scheduler) ----------------------------------------------

    @property
    def cost(self):
        """The cost model of reading a candidate (seconds from padded tokens), the one the scheduler's deadlines use:
        the bi-encoder's forward, plus the sense model's where there is one."""
        if self.sense is None or self.shared:
            return self.biencoder.cost
        return CostSum(self.biencoder.cost, self.sense.cost)

    @property
    def refine_cost(self):
        """The cost model of `refine`'s exact forward, or None on an exact backend (where `refine` does nothing)."""
        return self.biencoder.exact_cost if self.biencoder.approximate and self.refine_top > 0 else None

    def score_many(self, requests: list[tuple[list[str], list[str]]], deadline: float = math.inf
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Score several (context, candidates) requests in one pass: (scores with NaN, scored mask) per request.

        A candidate is embedded alone, so the candidates of every request share the same batches (a text in two
        requests is embedded once), and each request is then combined with its own context. The texts are taken
        round-robin across requests (each request's first, then each one's second, ...) and embedded front to back
        in pieces of `MANY_PIECE` until `deadline` (time.monotonic()), so a cut leaves every request its share and
        drops the back of each request's order, not its longest candidates.
        """
        for context, candidates in requests:
            check_inputs(context, candidates)
        out = [(np.full(len(c), np.nan, dtype=np.float32), np.zeros(len(c), dtype=bool)) for _, c in requests]
        first: dict[str, int] = {}
        longest = max((len(c) for _, c in requests), default=0)
        for i in range(longest):  # round-robin over the requests: the 1st of each, then the 2nd of each, ...
            for _, candidates in requests:
                if i < len(candidates):
                    first.setdefault(candidates[i], len(first))
        if not first or (math.isfinite(deadline) and time.monotonic() >= deadline):
            return out
        contexts = self.context_vectors_many([context for context, _ in requests])
        reading = self.read_texts(list(first), deadline)
        for (scores, scored), (context, candidates), context_vectors in zip(out, requests, contexts, strict=True):
            slot = np.fromiter((first[c] for c in candidates), dtype=np.int64, count=len(candidates))
            scored[:] = reading.done[slot]
            if scored.any():
                scores[scored] = self.combine(self.features(context_vectors, reading.take(slot[scored]),
                                                            self.context_asks(context)))
        return out
