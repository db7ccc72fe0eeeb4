"""The first stage: static word vectors distilled from the editor's bi-encoder, so every candidate gets a score.

The writer makes thousands of candidates per turn and the editor reads a few hundred a second, so something
must choose which ones the editor reads. A line's static vector is the sum of its words' vectors; the first
stage scores a candidate as the editor's relevance does, by cosines with the joined context and with the last
line, both embedded the same static way:

    score = w_context * cos(static(context), static(candidate)) + w_last * cos(static(last line), static(candidate))

A word's vector is `pieces[wordpieces(word)].mean() + residual[word]`:
- `pieces` maps every wordpiece of the bi-encoder's tokenizer into the bi-encoder's output space (its input
  embeddings times a learned linear map), so any word of any writer has a vector, even one never seen in
  training;
- `residual` corrects the words seen in training.
Both are fitted so that a line's static vector points where the bi-encoder's mean-pooled embedding of the line
points (cosine distillation), on human and writer lines alike: it needs no labels and no forward pass per
turn. Scoring 4,096 candidates is a sparse matrix product (candidates x words) @ (words x dim).

A saved first stage is a directory: config.json ("riposte": kind "first_stage", format version, weights),
`vectors.safetensors` (pieces, residual words' vectors) with `words.json`, and the tokenizer's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from corpus import modeldir
from corpus.modeldir import FIRST_STAGE_DIR, atomic_directory, config_fields  # noqa: F401  (re-exported)
from corpus.text import words as split_words  # the engine's own split
from reranker.runtime import unit

FORMAT_VERSION = 1
KIND = "first_stage"
VECTORS_FILE = "vectors.safetensors"
WORDS_FILE = "words.json"

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FirstStageConfig:
    """The mix of the two cosines and the context's shape, saved with the first stage."""

    weights: tuple[float, float] = (1.0, 0.0)  # context, last line: taken from the editor's mix
    context_lines: int = 3
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.weights) != 2 or not all(math.isfinite(w) for w in self.weights):
            raise ValueError(f"weights needs two finite values (context, last line), got {self.weights}")
        if self.context_lines < 1:
            raise ValueError(f"context_lines must be >= 1, got {self.context_lines}")

    @classmethod
    def from_dict(cls, data: dict) -> FirstStageConfig:
        """The config from its saved form; refuses another format version."""
        values = config_fields(cls, data, "first stage", reads=(FORMAT_VERSION,))
        if "weights" in values:
            values["weights"] = tuple(float(w) for w in values["weights"])
        return cls(**values)


class FirstStage:
    """Scores every candidate against a context with static word vectors; see the module docstring."""

    def __init__(self, config: FirstStageConfig, tokenizer, pieces: np.ndarray, words: list[str],
                 vectors: np.ndarray) -> None:
        if pieces.ndim != 2 or vectors.ndim != 2 or pieces.shape[1] != vectors.shape[1]:
            raise ValueError(f"pieces {pieces.shape} and word vectors {vectors.shape} must be (n, dim) alike")
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words for {len(vectors)} word vectors")
        self.config = config
        self.tokenizer = tokenizer
        self.pieces = np.ascontiguousarray(pieces, dtype=np.float32)  # (P, D)
        self.dim = int(pieces.shape[1])
        self.trained_words = len(words)
        self._index = {w: i for i, w in enumerate(words)}
        # Rows grow as new words arrive (a persona's vocabulary, a user's line); capacity doubles when full.
        self._table = np.zeros((max(len(words) * 2, 1024), self.dim), dtype=np.float32)
        self._table[: len(words)] = vectors
        self._size = len(words)
        self._lock = threading.Lock()

    # ---- word vectors ---------------------------------------------------------------------------------

    def piece_vectors(self, words: list[str]) -> np.ndarray:
        """(N, D) vectors of words from their wordpieces alone (no residual): what an unseen word gets."""
        if not words:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenizer(list(words), add_special_tokens=False)["input_ids"]
        out = np.zeros((len(words), self.dim), dtype=np.float32)
        for i, row in enumerate(ids):
            if row:
                out[i] = self.pieces[row].mean(0)
        return out

    def add_words(self, words) -> int:
        """Give unseen words their wordpiece vectors now (e.g. a persona's vocabulary at load); returns how many."""
        with self._lock:
            new = [w for w in dict.fromkeys(words) if w and w not in self._index]
            if not new:
                return 0
            vectors = self.piece_vectors(new)
            need = self._size + len(new)
            if need > len(self._table):
                grown = np.zeros((max(need, 2 * len(self._table)), self.dim), dtype=np.float32)
                grown[: self._size] = self._table[: self._size]
                self._table = grown
            self._table[self._size : need] = vectors
            for i, w in enumerate(new, start=self._size):
                self._index[w] = i
            self._size = need
            return len(new)

    def embed_words(self, lines: list[list[str]]) -> np.ndarray:
        """Static vectors (N, D) of lines given as word lists (sums of word vectors, not normalised)."""
        index = self._index
        flat = [w for ws in lines for w in ws]
        rows = [index.get(w, -1) for w in flat]
        if -1 in rows:
            self.add_words([w for w, r in zip(flat, rows, strict=True) if r < 0])
            index = self._index
            rows = [index[w] for w in flat]
        with self._lock:  # rows looked up above all exist in this snapshot: the table only grows
            table = self._table[: self._size]
        indptr = np.zeros(len(lines) + 1, dtype=np.int64)
        np.cumsum([len(ws) for ws in lines], out=indptr[1:])
        counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), np.asarray(rows, dtype=np.int64), indptr),
                               shape=(len(lines), len(table)))
        return np.asarray(counts @ table, dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Static vectors (N, D) of texts."""
        return self.embed_words([split_words(t) for t in texts])

    # ---- scoring ----------------------------------------------------------------------------------------

    def context_vectors(self, context: list[str]) -> np.ndarray:
        """Unit static vectors (2, D) of the joined newest context lines and of the last line."""
        if not context:
            return np.zeros((2, self.dim), dtype=np.float32)
        recent = context[-self.config.context_lines :]
        return unit(self.embed([" ".join(recent), recent[-1]]))

    def score(self, context: list[str], candidates: list[str], words: list[list[str]] | None = None) -> np.ndarray:
        """One float32 score per candidate, in the caller's order; `words` (each candidate's split) saves a split."""
        if words is None:
            words = [split_words(c) for c in candidates]
        elif len(words) != len(candidates):
            raise ValueError(f"{len(words)} word lists for {len(candidates)} candidates")
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        cos = unit(self.embed_words(words)) @ self.context_vectors(context).T  # (N, 2)
        return (cos @ np.asarray(self.config.weights, dtype=np.float32)).astype(np.float32)

    # ---- saving, loading --------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write config.json, the vectors (float16) and the tokenizer, atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            words = list(self._index)[: self.trained_words]
            save_file({"pieces": self.pieces.astype(np.float16),
                       "words": self._table[: self.trained_words].astype(np.float16)}, str(tmp / VECTORS_FILE))
            (tmp / WORDS_FILE).write_text(json.dumps(words, ensure_ascii=False), encoding="utf-8")
            self.tokenizer.save_pretrained(tmp)
            settings = {k: v for k, v in asdict(self.config).items() if k != "format_version"}
            modeldir.write(tmp, KIND, self.config.format_version, {**settings, "dim": self.dim,
                                                                     "words": self.trained_words})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> FirstStage:
        """Load a saved first stage; a damaged directory is a clear error."""
        return cls.from_saved(directory, modeldir.read(directory, "first stage", kind=KIND))

    @classmethod
    def from_saved(cls, directory: str | os.PathLike, settings: dict, **_options) -> FirstStage:
        """The first stage saved in `directory`, whose riposte settings are read already (it takes no device or
        dtype: it runs in numpy)."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        config = FirstStageConfig.from_dict(settings)
        try:
            arrays = load_file(str(directory / VECTORS_FILE))
            words = json.loads((directory / WORDS_FILE).read_text(encoding="utf-8"))
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError, SafetensorError) as exc:
            raise ValueError(f"{directory}: cannot load the first stage ({type(exc).__name__}: {exc}); "
                             "rebuild it with `python -m reranker train --default`") from exc
        if not isinstance(words, list) or set(arrays) != {"pieces", "words"}:
            raise ValueError(f"{directory}: {VECTORS_FILE} or {WORDS_FILE} is damaged; rebuild the first stage")
        return cls(config, tokenizer, arrays["pieces"].astype(np.float32), words, arrays["words"].astype(np.float32))


# ---------------------------------------------------------------------------------------------------- distillation


@dataclass(frozen=True)
class DistillConfig:
    """How the static vectors are fitted to the bi-encoder's line embeddings."""

    epochs: int = 4
    dim: int = 128  # principal directions of the targets kept: a quarter of the scoring work, little lost
    batch_size: int = 512
    lr: float = 3e-3
    val_share: float = 0.05
    seed: int = 0
    time_limit_s: float = 60.0


def distill(biencoder, texts: list[str], targets: np.ndarray, *, weights: tuple[float, float] = (1.0, 0.0),
            config: DistillConfig | None = None, progress: bool = False) -> tuple[FirstStage, dict]:
    """Fit a first stage so static(text) points where `targets` (the bi-encoder's embeddings of `texts`) point.

    Returns the first stage and a report (validation cosine before and after, words, seconds).
    """
    import torch

    from corpus.progress import progress as progress_bar

    config = config or DistillConfig()
    started = time.monotonic()
    if len(texts) != len(targets) or len(texts) < 20:
        raise ValueError(f"distillation needs at least 20 texts with one target each, got {len(texts)} and "
                         f"{len(targets)}")
    tokenizer = biencoder.tokenizer
    embedding = biencoder.model.get_input_embeddings().weight.detach().float().cpu()  # (P, H)
    lines = [split_words(t) for t in texts]
    vocab = list(dict.fromkeys(w for ws in lines for w in ws))
    index = {w: i for i, w in enumerate(vocab)}
    piece_ids = tokenizer(vocab, add_special_tokens=False)["input_ids"] if vocab else []
    # base[w] = mean input embedding of the word's pieces (an unseen word gets exactly this, mapped)
    flat = torch.tensor([p for ids in piece_ids for p in ids] or [0], dtype=torch.long)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum([len(ids) for ids in piece_ids])[:-1]]) if vocab else [0],
                           dtype=torch.long)
    base = torch.nn.functional.embedding_bag(flat, embedding, offsets, mode="mean")  # (V, H)

    rng = np.random.default_rng(config.seed)
    ids = [np.asarray([index[w] for w in ws], dtype=np.int64) for ws in lines]
    keep = np.asarray([i for i, ws in enumerate(lines) if ws], dtype=np.int64)
    order = rng.permutation(keep)
    n_val = max(10, int(len(order) * config.val_share))
    val, train = order[:n_val], order[n_val:]
    y = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if config.dim < y.shape[1]:
        # Cosines are kept on the targets' top principal directions (uncentred: cosines are about the origin).
        _, _, vt = torch.linalg.svd(y[train], full_matrices=False)
        y = y @ vt[: config.dim].T  # (N, dim)
    y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def bag(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Word rows and line offsets of lines `idx`, for embedding_bag."""
        rows = np.concatenate([ids[i] for i in idx])
        offsets = np.zeros(len(idx), dtype=np.int64)
        np.cumsum([len(ids[i]) for i in idx[:-1]], out=offsets[1:])
        return torch.from_numpy(rows), torch.from_numpy(offsets)

    # A least-squares start: the linear map from a line's summed piece embeddings to its target direction.
    rows, offs = bag(train)
    with torch.no_grad():
        x = torch.nn.functional.embedding_bag(rows, base, offs, mode="sum")  # (N, H)
        mapping = torch.nn.Parameter(torch.linalg.lstsq(x, y[train]).solution)  # (H, D)
    residual = torch.nn.Parameter(torch.zeros(len(vocab), mapping.shape[1]))

    def predict(idx: np.ndarray) -> torch.Tensor:
        rows, offs = bag(idx)
        # sum(base[w] @ map) == sum(base[w]) @ map: the map is applied per line, not per vocabulary word
        return torch.nn.functional.embedding_bag(rows, base, offs, mode="sum") @ mapping + \
            torch.nn.functional.embedding_bag(rows, residual, offs, mode="sum", sparse=True)

    def val_cosine() -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(predict(val), y[val]).mean())

    before = val_cosine()
    dense = torch.optim.Adam([mapping], lr=config.lr)
    sparse = torch.optim.SparseAdam([residual], lr=config.lr)  # only the batch's words move: steps stay cheap
    steps, stopped, history = 0, None, []
    per_epoch = math.ceil(len(train) / config.batch_size)
    bar = progress_bar(total=config.epochs * per_epoch, desc="first stage", unit="step", disable=not progress)
    for epoch in range(config.epochs):
        train = rng.permutation(train)
        losses = []
        for start in range(0, len(train), config.batch_size):
            idx = train[start : start + config.batch_size]
            loss = (1 - torch.nn.functional.cosine_similarity(predict(idx), y[idx])).mean()
            losses.append(loss.item())
            dense.zero_grad()
            sparse.zero_grad()
            loss.backward()
            dense.step()
            sparse.step()
            steps += 1
            bar.update(1)
            if time.monotonic() - started > config.time_limit_s:
                stopped = f"time limit in epoch {epoch + 1}"
                break
        history.append({"event": "eval", "stage": "first_stage", "step": steps,
                        "loss": round(float(np.mean(losses)), 5), "val_cosine": round(val_cosine(), 4)})
        if stopped:
            break
    bar.close()
    after = val_cosine()
    with torch.no_grad():
        pieces = (embedding @ mapping).numpy()
        vectors = (base @ mapping + residual).numpy()
    stage = FirstStage(FirstStageConfig(weights=tuple(float(w) for w in weights),
                                        context_lines=biencoder.config.context_lines),
                       tokenizer, pieces, vocab, vectors)
    report = {"val_cosine_before": round(before, 4), "val_cosine": round(after, 4), "words": len(vocab),
              "lines": len(train), "steps": steps, "seconds": round(time.monotonic() - started, 1),
              "stopped": stopped, "history": history}
    return stage, report
