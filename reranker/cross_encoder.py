"""The cross-encoder: any HF encoder with one logit, scoring `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]`.

Loading goes config -> AutoModelForSequenceClassification(num_labels=1) -> AutoTokenizer, so a saved
reranker is an HF directory (save_pretrained) plus our settings under the "riposte" key of config.json.
Other libraries' loaders must not score it wrong without a word: with pooling "mean" or "pair" config.json's
`model_type` names a type no library knows, worded as the fix (the backbone's real type is kept in the riposte
section), so they refuse it; with "cls" they score it as riposte does, given the context lines joined by " | ", or
refuse it too where its tokenizer pairs two texts otherwise than riposte (`fit_other_loaders`).

The head. all-MiniLM-L6-v2 was trained as a mean-pooled sentence embedder: its [CLS] token and pooler
carry nothing useful, and the stock CLS+pooler head learned nothing in 400 steps (the loss stayed at 0.693 on
chitchat windows, batch 32, measured on a 2-core Xeon). With
`pooling="mean"` we keep the stock model class (so save_pretrained/from_pretrained need nothing custom)
but bypass its pooler: mean of the encoder's last hidden state over real tokens -> the model's own
dropout -> its own `classifier` Linear(hidden, 1). The classifier weights live in model.safetensors as
usual; the unused pooler weights stay there too, untouched. `pooling="cls"` runs the stock head (the
right choice for backbones pre-trained with a CLS objective, such as DeBERTa-v3). `pooling="pair"` feeds
the same Linear(hidden, 1) with u * v, the unit mean vectors of the context segment and of the candidate
segment of the joint pass, and starts it as a scaled cosine, so training begins near the zero-shot
bi-encoder instead of at chance (MiniLM was trained for exactly that cosine).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from torch import nn

from corpus import modeldir
from corpus.modeldir import atomic_directory, config_fields, read_config
from reranker.card import cross_encoder_note, with_loading_note
from reranker.pairs import delimiter_id, encode_lines, encode_pair
from reranker.runtime import (
    TOKENIZER_FILES,
    CostModel,
    bf16_supported,
    check_inputs,
    default_backbone,
    mean_pool,
    pad_batch,
    pick_device,
    rank_by_score,
    resolve_backbone,
    run_budgeted,
)

# 2: the riposte section holds the backbone's `model_type` (the top-level one may be FOREIGN_MODEL_TYPE). Version 1
# directories (the backbone's type only at the top level) load as ever, and are written back as 2. Bumped rather than
# kept (as the editor kept its 1) because a riposte that knows only 1 reads the top-level type: on a version 2
# directory it would fail with transformers' unknown-type error, while the bump makes it say "format_version 2 is not
# supported", which points at the right fix (a newer riposte).
FORMAT_VERSION = 2
READS_VERSIONS = (1, 2)
CONFIG_KEY = modeldir.SECTION  # our settings inside the HF config.json
KIND = "cross-encoder"
TRAIN_HINT = "train one with `python -m reranker train`"
POOLINGS = ("mean", "cls", "pair")
# sentence-transformers' CrossEncoder, transformers' Auto classes and pipelines all begin at AutoConfig, which picks a
# class by config.json's `model_type`, and every stock sequence-classification class scores [CLS] -> pooler ->
# classifier. Pooling "mean" and "pair" feed the classifier other vectors (PairScorer.forward), so those loaders
# would load such a directory without complaint and rank with numbers it was never trained to give; so would a "cls"
# model whose tokenizer pairs two texts otherwise than riposte. Its config.json names this type instead, and their
# error ("...has model type `riposte-reranker: ...`...") says what to do.
FOREIGN_MODEL_TYPE = ("riposte-reranker: a riposte cross-encoder that no transformers or sentence-transformers class "
                      "scores as trained (its head pools the tokens its own way, pooling 'pair' or 'mean', or its "
                      "input is not the tokenizer's pair encoding); load it with riposte: "
                      "reranker.Reranker.load(dir), python -m reranker eval, or a riposte server's /rank or "
                      "/v1/rerank endpoint")
# With pooling "cls" the stock head is what riposte runs, so other loaders may score it, given riposte's input:
# CrossEncoder's default sigmoid and the pipeline's are turned off (riposte's score is the logit), and the tokenizer
# sends no token_type_ids (riposte trains and scores with all zeros; BERT-like backbones add a learned row per type).
STOCK_HEAD_SETTINGS = {"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"},
                       "problem_type": "regression"}  # regression: the text-classification pipeline applies nothing
TOKENIZER_INPUTS = ["input_ids", "attention_mask"]
# (context, candidate) pairs on which a "cls" model's tokenizer must encode the stock way exactly as riposte does,
# or the stock loaders are refused too (a template such as RoBERTa's `<s> A </s></s> B </s>`, a delimiter the joined
# text tokenizes differently): punctuation, several lines, one line, no context.
STOCK_PROBES = ((["hello there", "how are you?"], "fine, thanks."), (["ok"], "yes"), ([], "hello"))


@dataclass(frozen=True)
class CrossEncoderConfig:
    """Settings saved with the model, so scoring encodes exactly as training did."""

    delimiter: str = "|"
    max_length: int = 128  # encoded pair, special tokens included
    truncation_side: str = "left"  # drop the oldest context lines first; the candidate is kept whole
    pooling: str = "mean"
    context_speakers: bool = False  # trained on "name: text" context lines; the engine then sends names
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.truncation_side != "left":
            raise ValueError("only truncation_side='left' (oldest context first) is supported")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if not self.delimiter or self.delimiter != self.delimiter.strip():
            raise ValueError(f"delimiter must be a non-empty string without surrounding spaces, got {self.delimiter!r}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version is the layout this riposte writes ({FORMAT_VERSION}); leave it out")

    @classmethod
    def from_dict(cls, data: dict) -> CrossEncoderConfig:
        """Build from a config.json section, rejecting versions this riposte cannot read.

        An older version's settings are the same settings (only config.json's layout moved), so they come back
        as the current version and the directory is rewritten in the current layout when saved again.
        """
        return cls(**config_fields(cls, data, "reranker", reads=READS_VERSIONS))


def transformers_config(directory: str | os.PathLike, **overrides):
    """The transformers config of a saved model directory, whichever layout its config.json has.

    The backbone's `model_type` is read from the riposte section where it is kept (format 2, whose top-level type
    may be FOREIGN_MODEL_TYPE), else config.json loads as transformers reads it (format 1, a plain HF model).
    """
    from transformers import AutoConfig

    path = Path(directory) / "config.json"
    raw = read_config(directory, "model")
    settings = raw.get(CONFIG_KEY)
    model_type = settings.get("model_type") if isinstance(settings, dict) else None
    if model_type is None:
        if raw.get("model_type") == FOREIGN_MODEL_TYPE:
            raise ValueError(f"{path}: the {CONFIG_KEY!r} section lost the backbone's model_type (bert, deberta-v2, "
                             "...); the directory is damaged: restore or retrain it")
        return AutoConfig.from_pretrained(directory, local_files_only=True, **overrides)
    rest = {k: v for k, v in raw.items() if k not in ("model_type", CONFIG_KEY)}
    try:
        return AutoConfig.for_model(model_type, **{**rest, **overrides})
    except ValueError as exc:
        import transformers

        raise ValueError(f"{path}: the backbone's model_type {model_type!r} is unknown to transformers "
                         f"{transformers.__version__}; upgrade transformers, or restore the directory") from exc


def fit_other_loaders(directory: Path, config: CrossEncoderConfig, *, stock_scores: bool) -> None:
    """Rewrite a just-saved directory's config.json (and tokenizer settings) for other libraries' loaders.

    The backbone's type moves into the riposte section. Where the stock loaders would score it wrong (pooling
    "mean"/"pair", or a tokenizer whose pair encoding is not riposte's: `CrossEncoder._stock_loaders_score_it`) the
    top-level type becomes FOREIGN_MODEL_TYPE, so they refuse with it. Otherwise they load it and, given riposte's
    query (the context lines joined by " | "), score it as riposte does: no sigmoid, no token_type_ids, riposte's
    max_length, and tokens cut from the left (the oldest context) when a pair is too long.
    """
    raw = read_config(directory, "reranker")
    raw[CONFIG_KEY] = {**raw[CONFIG_KEY], "model_type": raw["model_type"]}
    if stock_scores:
        raw.update(STOCK_HEAD_SETTINGS)
        tokenizer_file = directory / "tokenizer_config.json"
        settings = json.loads(tokenizer_file.read_text(encoding="utf-8")) if tokenizer_file.is_file() else {}
        settings.update(model_input_names=TOKENIZER_INPUTS, model_max_length=config.max_length,
                        truncation_side=config.truncation_side)
        tokenizer_file.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    else:
        raw["model_type"] = FOREIGN_MODEL_TYPE
    (directory / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class PairScorer(nn.Module):
    """An HF sequence-classification model plus the pooling choice: (B, T) ids -> (B,) logits."""

    def __init__(self, model: nn.Module, pooling: str, sep_id: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.sep_id = sep_id
        if pooling == "pair" and sep_id is None:
            raise ValueError("pooling='pair' needs the [SEP] id to find the candidate segment")
        if pooling in ("mean", "pair"):
            head = getattr(model, "classifier", None)
            hidden = model.config.hidden_size
            if not isinstance(head, nn.Linear) or head.in_features != hidden or head.out_features != 1:
                raise ValueError(
                    f"pooling='{pooling}' needs a Linear({hidden}, 1) `classifier` head; "
                    f"{type(model).__name__} has {type(head).__name__}: use pooling='cls'"
                )
            # The stock pooler gets no gradient under mean pooling; freezing it keeps DDP from waiting on it.
            pooler = getattr(model.base_model, "pooler", None)
            if isinstance(pooler, nn.Module):
                pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B,) for padded ids (B, T) and their mask (B, T)."""
        if self.pooling == "cls":
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
        hidden = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        if self.pooling == "pair":
            pooled = self._pair_features(hidden, input_ids, attention_mask)
        else:
            pooled = mean_pool(hidden, attention_mask)  # (B, H)
        pooled = pooled.to(self.model.classifier.weight.dtype)
        dropout = getattr(self.model, "dropout", None)
        if isinstance(dropout, nn.Module):
            pooled = dropout(pooled)
        return self.model.classifier(pooled)[:, 0]


    def _pair_features(self, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """u * v: the unit mean vectors of the context segment (before the first [SEP]) and of the candidate."""
        is_sep = input_ids == self.sep_id  # (B, T)
        first_sep = is_sep.int().argmax(1, keepdim=True)  # (B, 1)
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)  # (1, T)
        real = attention_mask.bool()
        context = real & (pos < first_sep)  # (B, T), [CLS] included
        candidate = real & (pos > first_sep) & ~is_sep
        u = nn.functional.normalize(mean_pool(hidden, context), dim=-1)  # (B, H)
        v = nn.functional.normalize(mean_pool(hidden, candidate), dim=-1)
        return u * v

    def init_pair_head(self, scale: float = 20.0, offset: float = 0.3) -> None:
        """Start the pair head as the bi-encoder's scaled cosine: logit = scale * (cos(u, v) - offset)."""
        with torch.no_grad():
            self.model.classifier.weight.fill_(scale)
            self.model.classifier.bias.fill_(-scale * offset)


class CrossEncoder:
    """Scores candidate replies to a context in one joint pass over `context [SEP] candidate`; `load(dir)`."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        config: CrossEncoderConfig,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = "auto",
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.device = pick_device(device)
        if dtype == "auto":
            dtype = torch.bfloat16 if bf16_supported(self.device) else torch.float32
        self.model = model.to(self.device, dtype=dtype) if dtype is not None else model.to(self.device)
        self.model.eval()
        self.scorer = PairScorer(self.model, config.pooling, tokenizer.sep_token_id)
        self.delim_id, _ = delimiter_id(tokenizer, config.delimiter)
        if len(tokenizer) > self.model.get_input_embeddings().num_embeddings:  # an added delimiter: grow, never shrink
            self.model.resize_token_embeddings(len(tokenizer))
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the tokenizer needs [CLS] and [SEP] tokens (cls_token, sep_token)")
        self.cls_id = int(tokenizer.cls_token_id)
        self.sep_id = int(tokenizer.sep_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        # Padded tokens per batch: measured best on a 2-core AVX512-bf16 CPU (benchmarks/bench_rerank.py).
        self.batch_tokens = 4096 if self.device.type == "cpu" else 32768
        self.cost = CostModel()

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the model's weights."""
        return next(self.model.parameters()).dtype

    # ---- construction, saving, loading -------------------------------------------------------------

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike | None = None,
        config: CrossEncoderConfig | None = None,
        **kwargs,
    ) -> CrossEncoder:
        """A new, untrained cross-encoder on a backbone (hub name in the local cache, or a local path)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        config = config or CrossEncoderConfig()
        source = resolve_backbone(name_or_path or default_backbone())
        if Path(source).is_dir():  # a saved riposte reranker keeps its backbone's type in its own section
            hf_config = transformers_config(source, num_labels=1)
        else:
            hf_config = AutoConfig.from_pretrained(source, num_labels=1, local_files_only=True)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized classifier" is the point here, not a warning
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, config=hf_config, local_files_only=True, dtype=torch.float32
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        tokenizer = AutoTokenizer.from_pretrained(source, config=hf_config, local_files_only=True)
        kwargs.setdefault("dtype", torch.float32)
        reranker = cls(model, tokenizer, config, **kwargs)
        if config.pooling == "pair":
            reranker.scorer.init_pair_head()
        return reranker

    def save(
        self, directory: str | os.PathLike, *, model_card: str | None = None, extra_files: dict[str, str] | None = None
    ) -> Path:
        """Write an HF directory (config.json with our settings, safetensors, tokenizer), atomically."""
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.write(tmp, model_card=model_card, extra_files=extra_files)
        return directory

    def write(self, directory: Path, *, model_card: str | None = None, extra_files: dict[str, str] | None = None) -> None:
        """Write the model files into an existing (temporary) directory; `save` is the atomic wrapper.

        The card gets the note on loading this model with other libraries (`reranker.card.cross_encoder_note`).
        """
        setattr(self.model.config, CONFIG_KEY, {"kind": KIND, **asdict(self.config)})
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        stock = self._stock_loaders_score_it(Path(directory))
        fit_other_loaders(Path(directory), self.config, stock_scores=stock)
        if model_card is not None:
            card = with_loading_note(model_card, cross_encoder_note(self.config, stock_scores=stock))
            (Path(directory) / "README.md").write_text(card, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (Path(directory) / name).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike, **options) -> CrossEncoder:
        """Load a saved cross-encoder (`reranker.load` loads any kind); `from_saved`'s options."""
        return cls.from_saved(directory, modeldir.read(directory, "reranker", kind=KIND, hint=TRAIN_HINT), **options)

    @classmethod
    def from_saved(
        cls,
        directory: str | os.PathLike,
        settings: dict,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = "auto",
        warmup: bool = True,
        backend: str = "torch",
    ) -> CrossEncoder:
        """The cross-encoder saved in `directory`, whose riposte settings are read already; bf16 where the hardware
        has it unless `dtype` says otherwise. Only the torch backend runs a cross-encoder."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        directory = Path(directory)
        if backend not in ("torch", "auto"):
            raise ValueError(f"a cross-encoder runs on torch only, not backend {backend!r}")
        if not any((directory / name).is_file() for name in TOKENIZER_FILES):
            # AutoTokenizer would fall back to an empty tokenizer and every candidate would score the same
            raise FileNotFoundError(f"{directory} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
        config = CrossEncoderConfig.from_dict(settings)
        hf_config = transformers_config(directory)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(directory, config=hf_config,
                                                                       local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(directory, config=hf_config, local_files_only=True)
        except (ValueError, RuntimeError, KeyError, SafetensorError) as exc:  # a missing file stays an OSError
            raise ValueError(f"{directory}: cannot load the reranker ({type(exc).__name__}: {exc}); "
                             "the directory is damaged or incomplete") from exc
        cross_encoder = cls(model, tokenizer, config, device=device, dtype=dtype)
        if warmup:
            cross_encoder.warmup()
        return cross_encoder

    def _stock_loaders_score_it(self, directory: Path) -> bool:
        """True if other libraries' head and input are riposte's: pooling "cls", and the tokenizer saved in
        `directory`, loaded as they load it, encodes (the context joined by " | ", candidate) into riposte's ids on
        a few probe pairs (a reloaded tokenizer may carry another pair template than the one in memory)."""
        if self.config.pooling != "cls":
            return False
        from transformers import AutoTokenizer

        saved = AutoTokenizer.from_pretrained(directory, config=self.model.config, local_files_only=True)
        joiner = f" {self.config.delimiter} "
        for context, candidate in STOCK_PROBES:
            if saved(joiner.join(context), candidate)["input_ids"] != self.encode(context, [candidate])[0]:
                return False
        return True

    @property
    def context_speakers(self) -> bool:
        """Whether the model was trained on `name: text` context lines (the engine then sends speaker names)."""
        return self.config.context_speakers

    def warmup(self) -> None:
        """Run two small batches so first-call costs are paid and the cost model is calibrated."""
        context = ["hello there", "how are you doing today?"]
        candidates = [f"fine thanks {'and you ' * (i % 5)}" for i in range(32)]
        for _ in range(2):
            self.score(context, candidates)

    # ---- scoring ------------------------------------------------------------------------------------

    def encode(self, context: list[str], candidates: list[str]) -> list[list[int]]:
        """Token ids of each (context, candidate) pair, as training encodes them."""
        context_ids = encode_lines(self.tokenizer, list(context)) if context else []
        candidate_ids = encode_lines(self.tokenizer, list(candidates)) if candidates else []
        return [
            encode_pair(
                context_ids,
                ids,
                cls_id=self.cls_id,
                sep_id=self.sep_id,
                delim_id=self.delim_id,
                max_length=self.config.max_length,
            )
            for ids in candidate_ids
        ]

    def score(self, context: list[str], candidates: list[str]) -> np.ndarray:
        """One float32 score (logit) per candidate, in the caller's order; higher is a better reply."""
        scores, _ = self._score(context, candidates, deadline=math.inf)
        return scores

    def score_pairs(self, pairs: list[tuple[list[str], str]]) -> np.ndarray:
        """One float32 score per (context, candidate) pair, each with its own context (evaluation, training checks)."""
        texts: list[str] = []
        for context, candidate in pairs:
            check_inputs(context, [candidate])
            texts.extend(context)
            texts.append(candidate)
        ids = encode_lines(self.tokenizer, texts) if texts else []
        encoded, pos = [], 0
        for context, _ in pairs:
            k = len(context)
            encoded.append(
                encode_pair(ids[pos : pos + k], ids[pos + k], cls_id=self.cls_id, sep_id=self.sep_id,
                            delim_id=self.delim_id, max_length=self.config.max_length)
            )
            pos += k + 1
        out = np.full(len(pairs), np.nan, dtype=np.float32)
        if encoded:
            self._run(encoded, out, math.inf)
        return out

    def rank(self, context: list[str], candidates: list[str], top_k: int | None = None) -> list[tuple[str, float]]:
        """(candidate, score) pairs, best first; the top_k best if given."""
        return rank_by_score(self.score(context, candidates), candidates, top_k)

    def score_until(
        self, context: list[str], candidates: list[str], deadline: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score in the caller's order until `deadline` (a time.monotonic() instant): (scores with NaN, scored mask).

        Candidates are taken front to back in windows; a batch is only started if the cost model predicts
        it ends before the deadline (it is shrunk to fit), so an overrun is at most one mispredicted batch.
        """
        return self._score(context, candidates, deadline=deadline)

    def _score(self, context: list[str], candidates: list[str], deadline: float) -> tuple[np.ndarray, np.ndarray]:
        check_inputs(context, candidates)
        n = len(candidates)
        scores = np.full(n, np.nan, dtype=np.float32)
        scored = np.zeros(n, dtype=bool)
        if n == 0:
            return scores, scored
        # Duplicates are scored once: `first` maps each distinct candidate to its slot, `slot_of` back.
        first: dict[str, int] = {}
        slot_of = np.fromiter((first.setdefault(c, len(first)) for c in candidates), dtype=np.int64, count=n)
        unique = list(first)
        encoded = self.encode(context, unique)
        unique_scores = np.full(len(unique), np.nan, dtype=np.float32)
        self._run(encoded, unique_scores, deadline)
        done = ~np.isnan(unique_scores)
        scored = done[slot_of]
        scores[scored] = unique_scores[slot_of[scored]]
        return scores, scored

    def _run(self, encoded: list[list[int]], out: np.ndarray, deadline: float) -> None:
        """Fill out[i] with the logit of encoded[i], as many as the deadline allows (windows of a few batches)."""

        def run(batch: np.ndarray) -> None:
            out[batch] = self._forward([encoded[i] for i in batch])

        run_budgeted(encoded, run, batch_tokens=self.batch_tokens, cost=self.cost, deadline=deadline,
                     window=max(4 * self.batch_tokens // 48, 64))

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        """Logits for one batch of encoded pairs, right-padded to its longest."""
        input_ids, attention_mask = pad_batch(batch, self.pad_id, self.device)
        return self.scorer(input_ids, attention_mask).float().cpu().numpy()


RerankerConfig = CrossEncoderConfig  # the first name of the cross-encoder's settings, kept so old code runs
