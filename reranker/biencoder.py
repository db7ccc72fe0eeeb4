"""The bi-encoder: one mean-pooled embedding per text, so a context is encoded once and each candidate alone.

It is the zero-shot baseline every editor is measured against (all-MiniLM-L6-v2 was trained for exactly this
cosine, on a billion sentence pairs including Reddit replies), and the relevance half of the default editor
(`reranker.editor`). Candidates are short, so a bi-encoder reads a candidate in a fraction of what a
cross-encoder pays for the whole `context [SEP] candidate` pair.

A saved bi-encoder is a plain HF directory (`AutoModel` weights and tokenizer) plus our settings under the
"riposte" key of config.json, written atomically like every model here. `load(dir, backend=...)` may run the
forward on ONNX Runtime or OpenVINO (`reranker.backends`); the exported graph is a cache under `dir/onnx/`.

A bi-encoder may carry a token head (`token_head.safetensors`, a Linear(H, 1) read on every token): a sense encoder
taught where the writer's lines are spliced keeps it, and each text's read then also gives the head's largest logit
over its tokens (`read_until`), from the same forward on every backend.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from corpus import modeldir
from corpus.modeldir import atomic_directory, config_fields
from reranker.backends import APPROXIMATE, MeanPooled, build_runner, resolve_backend
from reranker.runtime import (
    TOKENIZER_FILES,
    CostModel,
    bf16_supported,
    check_inputs,
    cpu_has_bf16,
    default_backbone,
    load_head,
    pad_batch,
    pad_ids,
    pick_device,
    resolve_backbone,
    run_budgeted,
    save_head,
    unit,
)

FORMAT_VERSION = 1
KIND = "biencoder"
TOKEN_HEAD_FILE = "token_head.safetensors"  # optional: older readers ignore it, so the format stays 1


@dataclass(frozen=True)
class BiEncoderConfig:
    """Settings saved with a bi-encoder, so every caller embeds the same way."""

    max_length: int = 64  # tokens per text, special tokens included; a context keeps its newest tokens
    context_lines: int = 3  # newest context lines joined into the context text
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.max_length < 4:
            raise ValueError(f"max_length must be at least 4, got {self.max_length}")
        if self.context_lines < 1:
            raise ValueError(f"context_lines must be at least 1, got {self.context_lines}")

    @classmethod
    def from_dict(cls, data: dict) -> BiEncoderConfig:
        """Build from a config.json section, rejecting other format versions."""
        return cls(**config_fields(cls, data, "bi-encoder", reads=(FORMAT_VERSION,)))


def _checked_token_head(head: nn.Linear | None, hidden_size: int, device: torch.device) -> nn.Linear | None:
    """`head` in fp32 on `device` in eval mode, or None; ValueError unless it is Linear(hidden_size, 1). fp32 on the
    hidden states whatever the encoder's dtype: it is one dot product a token."""
    if head is None:
        return None
    if head.in_features != hidden_size or head.out_features != 1:
        raise ValueError(f"a token head must be Linear({hidden_size}, 1), got {head}")
    return head.float().to(device).eval()


class Embedded(NamedTuple):
    """What a read gives, row by row (`BiEncoder.read_until`)."""

    vecs: np.ndarray  # (N, H) float32 raw mean-pooled vectors
    tokens: np.ndarray  # (N,) int64 token counts, special tokens not counted
    done: np.ndarray  # (N,) bool: read before the deadline
    token_max: np.ndarray  # (N,) float32 the token head's largest logit over the text; 0 without a token head


class BiEncoder:
    """Mean-pooled embeddings of texts; `score(context, candidates)` is the cosine of the context and each candidate."""

    def __init__(self, model, tokenizer, config: BiEncoderConfig | None = None, *,
                 device: str | torch.device | None = None, dtype: torch.dtype | str | None = "auto",
                 backend: str = "torch", directory: str | os.PathLike | None = None,
                 token_head: nn.Linear | None = None) -> None:
        self.config = config or BiEncoderConfig()
        self.tokenizer = tokenizer
        self.device = pick_device(device)
        hidden_size = int(model.config.hidden_size)
        self.token_head = _checked_token_head(token_head, hidden_size, self.device)
        # The inference backend runs the forward; torch keeps the model (training, fallback). The graph is exported
        # from the fp32 weights as they arrive, before any bf16 cast; `directory` holds its cache.
        self.backend = resolve_backend(backend, self.device)
        self._runner = (build_runner(model, directory, self.backend, token_head=self.token_head)
                        if self.device.type == "cpu" else None)
        if self._runner is None:
            self.backend = "torch"
        # The exact path behind an approximate backend: fp32 ONNX Runtime, as fast as it gets here for the few texts
        # (contexts, the best candidates) that are rescored; torch small batches pay ~150 ms of overhead for 16 texts.
        self._exact_runner = (build_runner(model, directory, "onnx", token_head=self.token_head)
                              if self.approximate else None)
        if dtype == "auto":
            dtype = torch.bfloat16 if bf16_supported(self.device) else torch.float32
        self.model = (model.to(self.device, dtype=dtype) if dtype is not None else model.to(self.device)).eval()
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the bi-encoder's tokenizer needs [CLS] and [SEP] tokens (cls_token, sep_token)")
        self.hidden_size = hidden_size
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        # Padded tokens per forward. Without native bf16, batches of about 1,024 tokens (some 64 short candidates)
        # stay in cache and ran 1.4x (torch) to 1.6x (ONNX Runtime) faster than 4,096 on a 2-core AVX2 EPYC
        # (benchmarks/RESULTS.md); bf16 machines keep the cross-encoder's 4,096, measured there.
        if self.device.type != "cpu":
            self.batch_tokens = 32768
        else:
            self.batch_tokens = 4096 if cpu_has_bf16() else 1024
        self.cost = CostModel()
        self.exact_cost = CostModel()  # the fp32 forward behind `exact=True` on an approximate backend
        # (exact vector?, keep_end, text) -> (vector, tokens, token max); set by evaluation and a build's mix. Like
        # the cost model, meant for one thread at a time.
        self.cache: dict[tuple[bool, bool, str], tuple[np.ndarray, int, float]] | None = None
        self.cache_limit = 200_000

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the weights."""
        return next(self.model.parameters()).dtype

    # ---- construction, saving, loading -------------------------------------------------------------

    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike | None = None, config: BiEncoderConfig | None = None,
                      **kwargs) -> BiEncoder:
        """The zero-shot bi-encoder on a backbone (default: the embedded all-MiniLM-L6-v2)."""
        from transformers import AutoModel, AutoTokenizer

        source = resolve_backbone(name_or_path or default_backbone())
        model = AutoModel.from_pretrained(source, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        if Path(source).is_dir():  # a backend other than torch (not the default here: training) caches beside it
            kwargs.setdefault("directory", source)
        return cls(model, tokenizer, config, **kwargs)

    def set_token_head(self, head: nn.Linear | None) -> None:
        """Give a torch bi-encoder a token head (a sense model's, at the end of its training), or take it away.

        Only on torch: an exported graph was built without it. A saved bi-encoder loads its head with its weights.
        """
        if self._runner is not None or self._exact_runner is not None:
            raise ValueError(f"a token head can only be set on a torch bi-encoder, not on {self.backend!r}: save the "
                             "bi-encoder with it and load it again")
        self.token_head = _checked_token_head(head, self.hidden_size, self.device)
        if self.cache is not None:
            self.cache.clear()  # the cached reads have no token max

    def write(self, directory: Path) -> None:
        """Write the model files into an existing (temporary) directory; `save` is the atomic wrapper."""
        setattr(self.model.config, modeldir.SECTION, {"kind": KIND, **asdict(self.config)})
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.token_head is not None:
            save_head(self.token_head, directory / TOKEN_HEAD_FILE)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write an HF directory with our settings, atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.write(tmp)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, **options) -> BiEncoder:
        """Load a saved bi-encoder; backend "auto" picks the fastest path that keeps the ranking (torch, onnx, ...)."""
        return cls.from_saved(directory, modeldir.read(directory, "bi-encoder", kind=KIND), **options)

    @classmethod
    def from_saved(cls, directory: str | os.PathLike, settings: dict, *, backend: str = "auto", warmup: bool = False,
                   **kwargs) -> BiEncoder:
        """The bi-encoder saved in `directory`, whose riposte settings are read already; `kwargs` go to the
        constructor (device, dtype)."""
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        config = BiEncoderConfig.from_dict(settings)
        if not any((directory / name).is_file() for name in TOKENIZER_FILES):
            # AutoTokenizer would fall back to an empty tokenizer and every candidate would score the same
            raise FileNotFoundError(f"{directory} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
        try:
            model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (ValueError, RuntimeError, KeyError, SafetensorError) as exc:
            raise ValueError(f"{directory}: cannot load the bi-encoder ({type(exc).__name__}: {exc})") from exc
        token_head = None
        if (directory / TOKEN_HEAD_FILE).is_file():
            token_head = load_head(nn.Linear(int(model.config.hidden_size), 1), directory / TOKEN_HEAD_FILE,
                                   "the bi-encoder")
        biencoder = cls(model, tokenizer, config, backend=backend, directory=directory, token_head=token_head,
                        **kwargs)
        if warmup:
            biencoder.embed([f"fine thanks {'and you ' * (i % 5)}" for i in range(32)])  # first-call costs, the cost model
        return biencoder

    # ---- embedding ----------------------------------------------------------------------------------

    def context_text(self, context: list[str]) -> str:
        """The newest `context_lines` lines, joined: the text the context is embedded as."""
        return " ".join(context[-self.config.context_lines :])

    def tokenize(self, texts: list[str], *, keep_end: bool = False) -> list[list[int]]:
        """Token ids with [CLS]/[SEP], at most max_length; `keep_end` drops the oldest tokens instead of the newest."""
        inner = self.config.max_length - 2
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        return [[cls_id, *(x[-inner:] if keep_end else x[:inner]), sep_id] for x in ids]

    @property
    def approximate(self) -> bool:
        """True when the backend trades exactness for speed (int8): `exact=True` then runs an fp32 forward."""
        return self.backend in APPROXIMATE

    def embed(self, texts: list[str], *, keep_end: bool = False, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw mean-pooled vectors (N, H) float32 and token counts (N,) of every text; `exact` skips int8."""
        vecs, tokens, _ = self.embed_until(texts, math.inf, keep_end=keep_end, exact=exact)
        return vecs, tokens

    def embed_until(self, texts: list[str], deadline: float, *, keep_end: bool = False, exact: bool = False
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Embed in the caller's order until `deadline` (time.monotonic()): (vectors, token counts, done mask)."""
        vecs, tokens, done, _ = self.read_until(texts, deadline, keep_end=keep_end, exact=exact)
        return vecs, tokens, done

    def read_until(self, texts: list[str], deadline: float, *, keep_end: bool = False, exact: bool = False
                   ) -> Embedded:
        """Read in the caller's order until `deadline` (time.monotonic()): an `Embedded` (vectors, token counts,
        done mask and the token head's largest logit, 0 without one).

        Cached texts are free; the rest go through `run_budgeted` (windows of a few batches, front to back).
        With `exact` on an approximate backend an fp32 forward runs instead, with its own cost model, so neither
        learns from the other path; the cache keeps exact and approximate vectors apart.
        """
        n = len(texts)
        vecs = np.zeros((n, self.hidden_size), dtype=np.float32)
        tokens = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        token_max = np.zeros(n, dtype=np.float32)
        todo = []
        reference = exact and self.approximate
        forward, cost = (self._forward_exact, self.exact_cost) if reference else (self._forward, self.cost)
        # An approximate (int8) vector is kept apart from the exact one of the same text: evaluation shares the
        # exact ones with the zero-shot torch bi-encoder, and a saved editor's int8 reads are what it serves.
        exact_vectors = reference or not self.approximate
        cache = self.cache
        keys = [(exact_vectors, keep_end, text) for text in texts]  # a text cut at its end embeds differently
        for i, key in enumerate(keys):
            hit = cache.get(key) if cache is not None else None
            if hit is None:
                todo.append(i)
            else:
                vecs[i], tokens[i], token_max[i], done[i] = hit[0], hit[1], hit[2], True
        if not todo:
            return Embedded(vecs, tokens, done, token_max)
        encoded = self.tokenize([texts[i] for i in todo], keep_end=keep_end)
        h = self.hidden_size

        def run(batch: np.ndarray) -> None:
            out = forward([encoded[j] for j in batch])  # (B, H), or (B, H + 1) with the token head's max last
            for row, j in enumerate(batch):
                i = todo[j]
                vecs[i], tokens[i], done[i] = out[row, :h], len(encoded[j]) - 2, True
                if out.shape[1] > h:
                    token_max[i] = out[row, h]

        run_budgeted(encoded, run, batch_tokens=self.batch_tokens, cost=cost, deadline=deadline,
                     window=max(4 * self.batch_tokens // 16, 64))
        if cache is not None:
            if len(cache) + len(todo) > self.cache_limit:
                cache.clear()
            for i in todo:
                if done[i]:
                    cache[keys[i]] = (vecs[i].copy(), int(tokens[i]), float(token_max[i]))
        return Embedded(vecs, tokens, done, token_max)

    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        """Mean-pooled last hidden states (B, H) of one right-padded batch, on the chosen backend; with a token head
        its largest logit over each text is one more column (B, H + 1)."""
        if self._runner is not None:
            return self._runner(*pad_ids(batch, self.pad_id))
        return self._forward_torch(batch)

    def _forward_exact(self, batch: list[list[int]]) -> np.ndarray:
        """The fp32 forward behind an approximate backend: ONNX Runtime fp32 where it could be built, else torch."""
        if self._exact_runner is not None:
            return self._exact_runner(*pad_ids(batch, self.pad_id))
        return self._forward_torch(batch)

    @torch.inference_mode()
    def _forward_torch(self, batch: list[list[int]]) -> np.ndarray:
        """The reference forward on the torch model: mean-pooled last hidden states (B, H) [+ the token max]."""
        input_ids, attention_mask = pad_batch(batch, self.pad_id, self.device)
        return MeanPooled(self.model, self.token_head)(input_ids, attention_mask).cpu().numpy()  # as exported

    # ---- scoring ------------------------------------------------------------------------------------

    def embed_context(self, context: list[str]) -> np.ndarray:
        """Unit vector (H,) of the joined newest context lines (zeros for an empty context)."""
        if not context:
            return np.zeros(self.hidden_size, dtype=np.float32)
        vec, _ = self.embed([self.context_text(context)], keep_end=True)
        return unit(vec)[0]

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        """Cosine of the context and each candidate, float32, in the caller's order."""
        check_inputs(context, candidates)
        if not candidates:
            return np.zeros(0, dtype=np.float32)
        vecs, _ = self.embed(candidates)
        return (unit(vecs) @ self.embed_context(context)).astype(np.float32)

    def score_pairs(self, pairs: list[tuple[list[str], str]]) -> np.ndarray:
        """One cosine per (context, candidate) pair, each with its own context; every text embedded once."""
        for context, candidate in pairs:
            check_inputs(context, [candidate])
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        contexts = [self.context_text(c) for c, _ in pairs]
        unique = list(dict.fromkeys(contexts))
        ctx_vecs = unit(self.embed(unique, keep_end=True)[0])
        row = {text: i for i, text in enumerate(unique)}
        cand = unit(self.embed([x for _, x in pairs])[0])
        ctx = ctx_vecs[[row[t] for t in contexts]]
        ctx[[not c for c, _ in pairs]] = 0.0  # an empty context has no direction
        return (cand * ctx).sum(1).astype(np.float32)
