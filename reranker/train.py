"""Fine-tune a cross-encoder on prepared samples: one logit, logistic loss, checkpoints, resume, DDP.

Data flow: a dataset `ds[i] -> (input_ids int32 (T,), label)` (reranker.prepare.PreparedSplit, or the
in-memory SampleSet the embedded default builds from chitchat) -> length-bucketed batches, the same
for every process and every resumed run -> AdamW with warmup then cosine decay -> checkpoints.

Checkpoints live in `checkpoint_dir` (default: `.NAME-train` beside the output): `last/` (a reranker
directory plus trainer_state.pt, rewritten every `save_every` steps) and `best/` (the reranker with
the best validation AUC so far). `train_log.jsonl` gets one line per log step and per evaluation.
Under `torchrun --nproc_per_node=N` the same code runs DDP (gloo on CPU, NCCL on CUDA); rank 0 alone
evaluates and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from corpus.modeldir import atomic_directory
from corpus.progress import progress as progress_bar
from reranker.cross_encoder import CrossEncoder, CrossEncoderConfig
from reranker.evaluate import roc_auc
from reranker.runtime import bf16_supported, pad_ids, pick_device

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
PAD_MULTIPLE = 8  # few distinct shapes and aligned matmuls for the oneDNN kernels
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved with every checkpoint."""

    base_model: str | None = None  # hub name in the local cache or a local path; None = embedded MiniLM
    pooling: str = "mean"
    max_length: int = 128
    batch_size: int = 32  # per process and micro-step
    grad_accum: int = 1
    lr: float = 5e-5
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    head_lr_scale: float = 1.0  # the new classifier's lr = lr * this (a fresh head can move faster than the body)
    warmup_steps: int = 50
    max_steps: int = 1000
    max_minutes: float | None = None  # wall-clock budget; the schedule follows whichever limit binds first
    eval_every: int = 100
    save_every: int = 100
    log_every: int = 10
    eval_samples: int = 1024
    seed: int = 0
    bf16: bool | None = None  # None: where the hardware has it
    grad_clip: float = 1.0
    # Word embeddings hold half of MiniLM's weights; their dense gradient and AdamW update cost a large share of
    # a small-batch CPU step, and a short fine-tune barely moves them. Not with a newly added delimiter token.
    freeze_embeddings: bool = False
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "max_steps", "eval_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be positive and min_lr_ratio in [0, 1]")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")


@dataclass(frozen=True)
class TrainResult:
    """Where the best model is and how training went."""

    best_dir: Path
    step: int
    best_metrics: dict
    elapsed: float


class SampleSet:
    """Encoded samples in memory, with the PreparedSplit interface: ds[i] -> (ids int32, label)."""

    def __init__(self, ids: Sequence[Sequence[int]], labels: Sequence[int], kinds: Sequence[str] | None = None) -> None:
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} samples but {len(labels)} labels")
        self.ids = [np.asarray(x, dtype=np.int32) for x in ids]
        self.labels = np.asarray(labels, dtype=np.int8)
        self.kinds = list(kinds) if kinds is not None else None
        self.lengths = np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.ids[i], int(self.labels[i])


def sample_lengths(dataset) -> np.ndarray:
    """Token length of every sample, without loading them where the dataset keeps offsets."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, dtype=np.int64)
    offsets = getattr(dataset, "_offsets", None)  # reranker.prepare.PreparedSplit: per-shard offsets
    if offsets is not None:
        parts = [np.diff(o) for o in offsets]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return np.fromiter((len(dataset[i][0]) for i in range(len(dataset))), dtype=np.int64, count=len(dataset))


def get_lr(progress: float, step: int, config: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then cosine from lr to lr * min_lr_ratio as progress goes 0 -> 1."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress))


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, multiple: int) -> list[np.ndarray]:
    """One epoch's batches of sample indices: shuffled, bucketed by length within chunks, then shuffled again.

    Depends only on (lengths, batch_size, seed, epoch), so every process and every resumed run agree; the
    count is cut to a multiple of `multiple` (processes x accumulation) so no process waits on another.
    """
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 64  # sort within chunks: little padding, yet batches still mix the data
    batches = []
    for c0 in range(0, len(perm), chunk):
        part = perm[c0 : c0 + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    batches = [batches[i] for i in order]
    return batches[: len(batches) // multiple * multiple]


def collate(dataset, indices: np.ndarray, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids, (B, T) mask and (B,) float labels."""
    items = [dataset[int(i)] for i in indices]
    ids, mask = pad_ids([seq for seq, _ in items], pad_id, multiple=PAD_MULTIPLE)
    labels = torch.tensor([label for _, label in items], dtype=torch.float32)
    return torch.from_numpy(ids), torch.from_numpy(mask), labels


@torch.inference_mode()
def evaluate_samples(scorer: nn.Module, dataset, indices: np.ndarray, *, pad_id: int, device, bf16: bool,
                     batch_size: int = 64) -> dict:
    """Loss, ROC AUC and accuracy (logit > 0) of the scorer on `indices` of a dataset."""
    was_training = scorer.training
    scorer.eval()
    lengths = sample_lengths(dataset)[indices]
    ordered = indices[np.argsort(lengths, kind="stable")]
    logits, labels = [], []
    for b in range(0, len(ordered), batch_size):
        ids, mask, y = collate(dataset, ordered[b : b + batch_size], pad_id)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = scorer(ids.to(device), mask.to(device))
        logits.append(out.float().cpu())
        labels.append(y)
    scorer.train(was_training)
    z, y = torch.cat(logits), torch.cat(labels)
    loss = nn.functional.binary_cross_entropy_with_logits(z, y).item()
    return {
        "loss": loss,
        "auc": roc_auc(z.numpy(), y.numpy()),
        "accuracy": float(((z > 0).float() == y).float().mean()),
        "n": len(ordered),
    }


class _Dist:
    """Process-group facts; a single process when not launched by torchrun."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
            self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process if it is true on any (so all stop together)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


def checkpoint_dir_for(out_dir: str | os.PathLike, config: TrainConfig) -> Path:
    """Where checkpoints go: config.checkpoint_dir, else a hidden sibling of the output directory."""
    if config.checkpoint_dir:
        return Path(config.checkpoint_dir)
    out = Path(out_dir)
    return out.parent / f".{out.name}-train"


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train(
    train_set,
    val_set,
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device | None = None,
    reranker_config: CrossEncoderConfig | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train from the base model (or resume from `last/`); returns where the best checkpoint is.

    `stop_after` ends this run after that many optimizer steps while the schedule still follows max_steps,
    as a kill would (for runs in slices on preemptible machines, and for testing resume).
    """
    device = pick_device(device)
    ddp = _Dist(device)
    if device.type == "cuda":
        if ddp.local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {ddp.local_rank} of this node has no GPU of its own "
                             f"({torch.cuda.device_count()} visible): start at most one process per GPU, or pass "
                             "device='cpu'")
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    ckpt = checkpoint_dir_for(out_dir, config)
    log_path = ckpt / LOG_FILE
    use_bf16 = bf16_supported(device) if config.bf16 is None else config.bf16
    started = time.monotonic()

    state: dict = {}
    torch.manual_seed(config.seed)  # the new head's initial weights: the same on every process
    if resume and (ckpt / "last" / STATE_FILE).is_file():
        reranker = CrossEncoder.load(ckpt / "last", device=device, dtype=torch.float32, warmup=False)
        state = torch.load(ckpt / "last" / STATE_FILE, map_location="cpu", weights_only=False)
        if state["config"]["base_model"] != config.base_model or state["config"]["max_length"] != config.max_length:
            raise ValueError(
                f"{ckpt / 'last'} was trained with base_model={state['config']['base_model']!r}, "
                f"max_length={state['config']['max_length']}: resume with the same settings or drop --resume"
            )
    else:
        if resume and ddp.main:
            log.warning("--resume: no checkpoint in %s, starting from the base model", ckpt / "last")
        rc = reranker_config or CrossEncoderConfig(max_length=config.max_length, pooling=config.pooling)
        reranker = CrossEncoder.from_backbone(config.base_model, rc, device=device, dtype=torch.float32)
    pad_id = reranker.pad_id
    delim = getattr(train_set, "delimiter_id", None)
    if delim is not None and delim != reranker.delim_id:
        raise ValueError(
            f"the data was prepared with delimiter id {delim} but the model's tokenizer gives {reranker.delim_id}: "
            "prepare the dump with the same tokenizer as --base-model"
        )
    scorer = reranker.scorer
    if config.freeze_embeddings:
        if len(reranker.tokenizer) > getattr(reranker.model.config, "vocab_size", len(reranker.tokenizer)):
            raise ValueError("freeze_embeddings would leave the added delimiter token untrained: turn it off")
        reranker.model.get_input_embeddings().requires_grad_(False)
    scorer.train()
    model: nn.Module = scorer
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(scorer, device_ids=[device.index] if device.type == "cuda" else None)

    head_ids = {id(p) for p in reranker.model.classifier.parameters()} if hasattr(reranker.model, "classifier") else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in scorer.parameters():
        if p.requires_grad:  # no decay on biases and LayerNorm weights
            groups.setdefault((id(p) in head_ids, p.ndim >= 2), []).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": config.weight_decay if decays else 0.0,
             "lr_scale": config.head_lr_scale if head else 1.0}
            for (head, decays), params in sorted(groups.items())
        ],
        lr=config.lr,
    )
    step = 0
    best = {"auc": -1.0}
    elapsed_before = 0.0
    if state:
        optimizer.load_state_dict(state["optimizer"])
        step, best, elapsed_before = state["step"], state["best"], state["elapsed"]

    lengths = sample_lengths(train_set)
    if len(lengths) == 0:
        raise ValueError("the training set is empty")
    multiple = ddp.world * config.grad_accum
    batches = epoch_batches(lengths, config.batch_size, config.seed, 0, multiple)
    if not batches:
        raise ValueError(
            f"{len(lengths)} training samples make no full round of {multiple} batches of {config.batch_size}: "
            "lower --batch-size or --grad-accum"
        )
    micro_per_epoch = len(batches) // ddp.world
    val_idx = np.arange(min(config.eval_samples, len(val_set))) if val_set is not None else np.arange(0)
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    if ddp.main:
        ckpt.mkdir(parents=True, exist_ok=True)
        _append_log(log_path, {"event": "start", "step": step, "world": ddp.world, "bf16": use_bf16,
                               "train_samples": len(lengths), "config": asdict(config)})

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def save_last() -> None:
        with atomic_directory(ckpt / "last") as tmp:
            reranker.write(tmp)
            torch.save({"optimizer": optimizer.state_dict(), "step": step, "best": best, "elapsed": elapsed(),
                        "config": asdict(config)}, tmp / STATE_FILE)

    def run_eval() -> None:
        nonlocal best
        if ddp.main and len(val_idx):
            metrics = evaluate_samples(scorer, val_set, val_idx, pad_id=pad_id, device=device, bf16=use_bf16)
            _append_log(log_path, {"event": "eval", "step": step, "elapsed": round(elapsed(), 1), **metrics})
            if metrics["auc"] > best["auc"]:
                best = {**metrics, "step": step}
                reranker.save(ckpt / "best")
        ddp.barrier()

    bar = progress_bar(total=None if config.max_minutes else config.max_steps, initial=step, desc="train", unit="step", disable=not (progress and ddp.main))
    running, n_running, seen, t_log = 0.0, 0, 0, time.monotonic()
    micro = step * config.grad_accum
    epoch = -1
    stop_step = config.max_steps if stop_after is None else min(config.max_steps, step + stop_after)
    while step < stop_step and not ddp.any(elapsed() >= budget):
        # Dropout masks depend on (seed, process, step) only, so a resumed run repeats an uninterrupted one.
        torch.manual_seed(config.seed * 1_000_003 + step * 1009 + ddp.rank)
        if micro // micro_per_epoch != epoch:
            epoch = micro // micro_per_epoch
            batches = epoch_batches(lengths, config.batch_size, config.seed, epoch, multiple)[ddp.rank :: ddp.world]
        lr = get_lr(max(step / config.max_steps, elapsed() / budget), step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        for k in range(config.grad_accum):
            ids, mask, labels = collate(train_set, batches[micro % micro_per_epoch], pad_id)
            micro += 1
            sync = k == config.grad_accum - 1 or ddp.world == 1
            ctx = model.no_sync() if (not sync and isinstance(model, nn.parallel.DistributedDataParallel)) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model(ids.to(device), mask.to(device))
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(device))
                (loss / config.grad_accum).backward()
            running += loss.item()
            n_running += 1
            seen += len(labels)
        if config.grad_clip:
            nn.utils.clip_grad_norm_(scorer.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == stop_step:
            mean_loss = ddp.mean(running / max(n_running, 1))
            rate = seen * ddp.world / max(time.monotonic() - t_log, 1e-9)
            if ddp.main:
                _append_log(log_path, {"event": "train", "step": step, "loss": round(mean_loss, 5), "lr": lr,
                                       "samples_per_s": round(rate, 1), "elapsed": round(elapsed(), 1)})
                bar.set_postfix(loss=f"{mean_loss:.3f}", sps=f"{rate:.0f}")
            running, n_running, seen, t_log = 0.0, 0, 0, time.monotonic()
        if step % config.eval_every == 0:
            run_eval()
        if step % config.save_every == 0:
            if ddp.main:
                save_last()
            ddp.barrier()
    bar.close()
    if step % config.eval_every != 0:  # the same decision on every process (best is rank 0's alone)
        run_eval()
    if ddp.main:
        save_last()
        if not (ckpt / "best").exists():  # no validation data: the last weights are the best we know
            reranker.save(ckpt / "best")
        _append_log(log_path, {"event": "end", "step": step, "elapsed": round(elapsed(), 1), "best": best})
    ddp.barrier()
    result = TrainResult(best_dir=ckpt / "best", step=step, best_metrics=best, elapsed=elapsed())
    ddp.close()
    return result
