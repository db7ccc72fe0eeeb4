"""Sense: "would a person say this line?", a whole encoder fine-tuned end to end against the writer it edits.

Frozen sentence embeddings tell human lines from a Markov writer's mostly by length and genericness: a head on
frozen MiniLM features reached a length-matched AUC of about 0.63. Fine-tuning every layer learns coherence:
0.76 after 90 s and 0.81 after 6 minutes on a 2-core AMX Xeon, and adding its logit to the editor's score lifted
the share of picks a grammar parser accepts from 0.56 to 0.72 (the true next lines: 0.73).

The model is candidate only (no context): relevance is the bi-encoder's job, sense is this one's. It is a
`BiEncoder` (the same mean-pooled MiniLM, so it runs on every inference backend the bi-encoder has) whose weights
were fine-tuned, plus one linear head on the pooled vector: logit > 0 reads "a person", < 0 "the writer".

Training pairs every human line with a writer line of the same word count, so length alone says nothing, and
holds out pairs the same way for the reported AUC. Batches hold lines of like length (a batch pads to its
longest), which took training from 92 to 127 lines/s on a 2-core AMD EPYC. Time-bounded: it trains until its
deadline and keeps the last state (the held-out AUC is measured on it).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from corpus.progress import progress as progress_bar
from corpus.text import words
from reranker.biencoder import BiEncoder, BiEncoderConfig
from reranker.evaluate import roc_auc
from reranker.runtime import (
    bf16_supported,
    load_head,
    mean_pool,
    pad_batch,
    pad_ids,
    save_head,
    unit,
    word_tokens,
)

HEAD_FILE = "sense_head.safetensors"


@dataclass(frozen=True)
class SenseTraining:
    """How the sense model is fine-tuned (defaults measured on 2-core CPUs; see the module docstring)."""

    batch_size: int = 64  # half human, half writer, length-matched
    # The encoder's peak rate. A 10-minute build takes ~140-180 steps on a 2-core AVX2 CPU (about 300 with bf16),
    # and at 5e-5 the model was still at chance against the writer's lines when its time ran out there (held-out
    # AUC 0.54); 3e-4 reached 0.61 (0.87 against lines begun at a topic word) in the same 330 s with its learned
    # relevance level; 6e-4 cost relevance (benchmarks/RESULTS.md, "Twelfth pass").
    lr: float = 3e-4
    head_lr: float = 1e-3  # the new head
    warmup_steps: int = 20
    max_length: int = 40  # tokens per line while training; writer lines past it are cut
    min_words: int = 2
    max_words: int = 25
    held_out_pairs: int = 1000
    # Relevance, learned by the same encoder in the same step: each human line's context ranks that line above
    # the batch's other human lines and every writer line in it (InfoNCE, cosine x scale). 0: sense only.
    relevance_weight: float = 0.25  # at 1.0 it drowned the sense loss (held-out AUC 0.55, against 0.59 at 0.25)
    relevance_scale: float = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default
    # Tokens of the joined context, newest kept. 32 rather than 64: the context's forward and backward cost more
    # than the line's, and halving it took training from 53 to 75 lines/s (AMD EPYC, bucketed batches).
    context_max_length: int = 32
    # Batches of lines of similar length: a batch pads to its longest line, and lines run from 2 to 25 words, so
    # a random batch spends most of its tokens on padding. A window of this many batches is sorted by length, cut
    # into batches, and the batches shuffled (0: random batches).
    bucket_batches: int = 32
    # Hard negatives, mined from the writer as training goes: at each of these fractions of the run (of the time
    # budget, or of max_steps), the model reads `mine_lines` fresh writer lines from the pool it is given, keeps
    # the `mine_top` share it finds most human at each word count (the lines an editor would pick), and pairs
    # them with human lines of the same length; from then on `mine_share` of the batches come from those pairs.
    # Empty: no mining (random writer lines only).
    mine_at: tuple[float, ...] = ()
    mine_lines: int = 8192
    mine_top: float = 0.25
    mine_share: float = 0.5
    # Where the writer's lines are spliced (markov.splices): each token of a batch's lines also gets a logit from a
    # second head, taught which tokens begin a splice (the writer's) and which do not (every other token, people's
    # lines whole), at this weight beside the line loss; 0: the line loss alone. Told where a line goes wrong, the
    # encoder learns coherence at the word, and the line head it serves with told people from the writer better:
    # held-out AUC 0.655 -> 0.681 and 0.696 in 300 s, same pairs (AMX Xeon). But whole 10-minute builds with it
    # (weight 1) tied without it on every held-out measure and their replies read as a person's less often to the
    # held-out judge (-0.035 +- 0.023, twice), so it is off by default (benchmarks/RESULTS.md, "Twenty-fourth
    # pass"). The token head is kept on the encoder (`BiEncoder.token_head`): its largest logit over a line is the
    # editor's "splice" feature. Offline it found the true line among 99 writer lines twice as often as the line
    # head, but in a whole build (head AUC 0.59) the mix weighed it +0.07 and no weight helped ("Twenty-fifth pass").
    splice_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be an even number >= 2, got {self.batch_size}")
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.bucket_batches < 0:
            raise ValueError(f"bucket_batches must be >= 0, got {self.bucket_batches}")
        check_schedule("mine_at", self.mine_at)
        if not 0.0 < self.mine_top <= 1.0 or not 0.0 <= self.mine_share <= 1.0 or self.mine_lines < 1:
            raise ValueError(f"need 0 < mine_top <= 1, 0 <= mine_share <= 1 and mine_lines >= 1, got "
                             f"{self.mine_top}, {self.mine_share}, {self.mine_lines}")
        if not (0 < self.lr < math.inf and 0 < self.head_lr < math.inf):
            raise ValueError(f"lr and head_lr must be finite and > 0, got {self.lr}, {self.head_lr}")
        if not 0 <= self.splice_weight < math.inf:
            raise ValueError(f"splice_weight must be a finite number >= 0, got {self.splice_weight}")
        if self.relevance_weight < 0 or self.relevance_scale <= 0:
            raise ValueError(f"need relevance_weight >= 0 and relevance_scale > 0, got {self.relevance_weight}, "
                             f"{self.relevance_scale}")


def check_schedule(name: str, fractions: tuple[float, ...]) -> None:
    """Raise ValueError unless `fractions` increase within (0, 1): points of a run, such as when to mine."""
    if any(not 0.0 < f < 1.0 for f in fractions) or list(fractions) != sorted(fractions):
        raise ValueError(f"{name} must be increasing fractions within (0, 1), got {fractions}")


class SenseReading(NamedTuple):
    """What the sense model reads off lines, row by row (`SenseModel.read_until`)."""

    vecs: np.ndarray  # (N, H) float32 the fine-tuned encoder's pooled vectors
    logits: np.ndarray  # (N,) float32 the line head's: > 0 reads "a person said this"
    done: np.ndarray  # (N,) bool: read before the deadline
    splice: np.ndarray  # (N,) float32 the token head's largest logit over the line (0 without a token head)


class SenseModel:
    """Logits of "a person said this" for lines: a fine-tuned mean-pooled encoder and a linear head."""

    def __init__(self, encoder: BiEncoder, head: nn.Linear) -> None:
        if head.in_features != encoder.hidden_size or head.out_features != 1:
            raise ValueError(f"the sense head must be Linear({encoder.hidden_size}, 1), got {head}")
        self.encoder = encoder
        self.head = head.float().eval()
        self.refresh()

    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike | None = None, **kwargs) -> SenseModel:
        """An untrained sense model (fp32 torch, ready to train) on a backbone; default the embedded MiniLM."""
        kwargs.setdefault("dtype", torch.float32)
        kwargs.setdefault("backend", "torch")
        encoder = BiEncoder.from_backbone(name_or_path, config=BiEncoderConfig(), **kwargs)
        return cls(encoder, nn.Linear(encoder.hidden_size, 1))

    def refresh(self) -> None:
        """Re-read the head's weights (at start and after training): scoring uses this numpy copy."""
        self._w = self.head.weight.detach().float().numpy()[0].copy()  # (H,)
        self._b = float(self.head.bias.detach().float()[0])

    # ---- scoring ------------------------------------------------------------------------------------

    @property
    def cost(self):
        """The encoder's cost model: what its forward costs per padded token."""
        return self.encoder.cost

    def read_until(self, texts: list[str], deadline: float = math.inf, *, exact: bool = False) -> SenseReading:
        """A `SenseReading` of texts, front to back until `deadline` (time.monotonic()).

        The vectors are the fine-tuned encoder's: their cosine with `context_vector` is its learned relevance.
        """
        vecs, _, done, splice = self.encoder.read_until(texts, deadline, exact=exact)
        return SenseReading(vecs, self.head_logits(vecs), done, splice)

    @property
    def has_splice(self) -> bool:
        """True when the encoder carries a token head, so reads give splice logits."""
        return self.encoder.token_head is not None

    def head_logits(self, vecs: np.ndarray) -> np.ndarray:
        """The head's logits (N,) float32 on the encoder's pooled vectors (N, H)."""
        return (vecs @ self._w + self._b).astype(np.float32)

    def logits_until(self, texts: list[str], deadline: float = math.inf) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N,) float32 and the done mask, front to back until `deadline` (time.monotonic())."""
        read = self.read_until(texts, deadline)
        return read.logits, read.done

    def context_vector(self, context: list[str]) -> np.ndarray:
        """The unit vector (H,) of the joined context as the fine-tuned encoder reads it; zeros when empty."""
        return self.context_vectors([context])[0]

    def context_vectors(self, contexts: list[list[str]]) -> np.ndarray:
        """`context_vector` of several contexts (N, H), embedded in one batch."""
        out = np.zeros((len(contexts), self.encoder.hidden_size), dtype=np.float32)
        rows = [i for i, context in enumerate(contexts) if context]
        if rows:
            raw, _ = self.encoder.embed([self.encoder.context_text(contexts[i]) for i in rows], keep_end=True,
                                        exact=True)
            out[rows] = unit(raw)
        return out

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits (N,) float32 of every text: > 0 reads "a person said this"."""
        return self.logits_until(texts)[0]

    # ---- saving, loading ----------------------------------------------------------------------------

    def write(self, directory: Path) -> None:
        """Write the encoder (a bi-encoder directory) and the head into an existing (temporary) directory."""
        self.encoder.write(directory)
        self.write_head(directory)

    def write_head(self, directory: Path) -> None:
        """Write the head alone (its encoder is saved elsewhere, as an editor's shared bi-encoder is)."""
        save_head(self.head, directory / HEAD_FILE)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, encoder: BiEncoder | None = None, **options) -> SenseModel:
        """Load a saved sense model; options (device, dtype, backend) go to its encoder. `encoder`: an encoder
        loaded already (an editor's shared one), for a directory that holds the head alone."""
        directory = Path(directory)
        if not (directory / HEAD_FILE).is_file():
            raise FileNotFoundError(f"{directory} has no {HEAD_FILE}: the sense model is incomplete; rebuild it")
        encoder = encoder or BiEncoder.load(directory, **options)
        head = load_head(nn.Linear(encoder.hidden_size, 1), directory / HEAD_FILE, "the sense encoder")
        return cls(encoder, head)


# ---- training ---------------------------------------------------------------------------------------------


def length_matched_pairs(human: list[str], writer: list[str], *, min_words: int = 2, max_words: int = 25,
                         seed: int = 0) -> list[tuple[str, str]]:
    """(human, writer) pairs of equal word count, each line used once, in a seeded random order."""
    rng = np.random.default_rng(seed)
    by_length: dict[int, list[str]] = defaultdict(list)
    for line in writer:
        n = len(words(line))
        if min_words <= n <= max_words:
            by_length[n].append(line)
    for pool in by_length.values():
        rng.shuffle(pool)
    pairs = []
    for i in rng.permutation(len(human)):
        pool = by_length.get(len(words(human[i])))
        if pool:
            pairs.append((human[i], pool.pop()))
    return pairs


def batch_order(lengths: np.ndarray, size: int, window: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of batches (index arrays of `size`, the last may be short) over items of these lengths: a
    random order, each window of `window` batches sorted by length and cut, then every batch shuffled."""
    order = rng.permutation(len(lengths))
    if window <= 1:
        return [order[i : i + size] for i in range(0, len(order), size)]
    batches = []
    for start in range(0, len(order), size * window):
        chunk = order[start : start + size * window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def splice_labels(tokenizer, texts: list[str], found: list, max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each line ([CLS] line [SEP], cut to max_length, as `BiEncoder.tokenize` makes them) and a 0/1
    label per id: 1 on the first token of each word that begins a splice (`found[i]`, a markov.splices.Splice; None
    for a line with none, a person's) and on [SEP] when the line's end is one (and was not cut)."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    ids, labels = [], []
    for x, offsets, splice in zip(encoded["input_ids"], encoded["offset_mapping"], found, strict=True):
        whole = len(x) <= max_length - 2  # a cut line's end is not in view: its [SEP] is no end
        x, offsets = x[: max_length - 2], offsets[: max_length - 2]
        row = [tokenizer.cls_token_id, *x, tokenizer.sep_token_id]
        label = [0] * len(row)
        if splice is not None:
            ends = [end for _, end in offsets]
            for start in splice.starts:
                t = next((t for t, end in enumerate(ends) if end > start), None)  # the token holding its first character
                if t is not None:
                    label[t + 1] = 1
            label[-1] = int(splice.at_end and whole)
        ids.append(row)
        labels.append(label)
    return ids, labels


def held_out_auc(model: SenseModel, pairs: list[tuple[str, str]]) -> float:
    """The ROC AUC of human against writer lines over length-matched pairs the model never trained on."""
    return held_out_aucs(model, pairs)[0]


def held_out_aucs(model: SenseModel, pairs: list[tuple[str, str]]) -> tuple[float, float | None]:
    """`held_out_auc` and, from the same read, that of the token head's verdict (its largest splice logit over a
    line, negated: higher reads "a person"), None without a token head."""
    if not pairs:
        return float("nan"), (float("nan") if model.has_splice else None)
    texts = [t for pair in pairs for t in pair]
    labels = np.tile([1, 0], len(pairs))
    read = model.read_until(texts)
    return roc_auc(read.logits, labels), (roc_auc(-read.splice, labels) if model.has_splice else None)


class PairStream:
    """Batches of length-matched pairs without end: epochs of `batch_order`, the short batch of each dropped."""

    def __init__(self, pairs: list[tuple[str, str]], size: int, window: int, rng: np.random.Generator) -> None:
        self.pairs, self.size, self.window, self.rng = pairs, size, window, rng
        self.lengths = np.asarray([len(words(h)) for h, _ in pairs])  # a pair's two lines have one word count
        self.batches: list[np.ndarray] = []

    def next(self) -> list[tuple[str, str]]:
        """The next batch of `size` pairs (a new epoch when one runs out)."""
        if not self.batches:
            self.batches = [b for b in batch_order(self.lengths, self.size, self.window, self.rng)
                            if len(b) == self.size]
        return [self.pairs[i] for i in self.batches.pop()]


@torch.no_grad()
def mine_hard(model: SenseModel, lines: list[str], *, top: float, max_length: int, bf16: bool,
              batch_size: int = 256, deadline: float = math.inf) -> tuple[list[str], int]:
    """The `top` share of `lines` the model (mid-training: fp32 weights, read under bf16 autocast where the CPU
    has it) finds most human, taken at each word count so every length stays represented, and how many lines it
    read: past `deadline` (time.monotonic()) the lines not read yet are left out."""
    encoder, net = model.encoder, model.encoder.model
    was_training = net.training
    net.eval()
    cut = max_length - 2
    ids = [[x[0], *x[1:-1][:cut], x[-1]] for x in encoder.tokenize(lines)]
    logits = np.full(len(lines), np.nan, dtype=np.float32)
    # Like lengths together (little padding), the batches in a random order so a deadline cuts every length alike.
    order = np.argsort([len(x) for x in ids], kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for b in np.random.default_rng(len(lines)).permutation(len(batches)):
            if time.monotonic() > deadline:
                break
            rows = batches[b]
            input_ids, attention_mask = pad_batch([ids[i] for i in rows], encoder.pad_id, encoder.device)
            with torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=bf16):
                hidden = net(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits[rows] = model.head(mean_pool(hidden, attention_mask).float())[:, 0].float().cpu().numpy()
    finally:
        net.train(was_training)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, line in enumerate(lines):
        if not np.isnan(logits[i]):
            by_length[len(words(line))].append(i)
    hard = []
    for rows in by_length.values():
        rows.sort(key=lambda i: -logits[i])
        hard += [lines[i] for i in rows[: math.ceil(top * len(rows))]]
    return hard, int((~np.isnan(logits)).sum())


def train_sense(model: SenseModel, pairs: list[tuple[str, str]], held_out: list[tuple[str, str]], *,
                deadline: float, training: SenseTraining | None = None, progress: bool = True,
                contexts: dict[str, str] | None = None, max_steps: int | None = None,
                mine_pool: list[str] | None = None, around: Callable[[str], str | None] | None = None,
                splices: Callable[[list[str]], list] | None = None) -> dict:
    """Fine-tune the encoder and the head on length-matched (human, writer) pairs until `deadline` (or after
    `max_steps` steps, whichever comes first: a step count makes a run independent of the machine's speed).

    With `contexts` (a human line -> the joined context it answered) and a relevance weight, each step also
    teaches the encoder relevance: the context's vector ranks its line above the batch's other lines, writer
    lines included (in-batch negatives plus the writer's, the choice the editor faces).

    With `mine_pool` (writer lines the pairs do not hold) and `training.mine_at`, hard negatives are mined from
    it as training goes (`mine_hard`): the writer's lines the model itself finds most human, which are the ones
    an editor picks, paired with human lines of the same length.

    With `around` (a human line -> a writer line written around the words of the context it answered, or None),
    the relevance loss also ranks the line above that writer line: the lines that pack a context's own words
    together, which an editor rewarding topic picks.

    With `splices` (writer lines -> where each is spliced, `markov.Splices.find`) and a splice weight, a second
    head learns which tokens begin a splice (`splice_labels`); it is set on the encoder at the end
    (`BiEncoder.set_token_head`), so the encoder's reads give its largest logit over each line.

    Returns what a card and a log need: steps, lines seen, lines per second, held-out AUC before and after, the
    dtype used, the mining rounds, the around lines read, the splice weight used (0.0 when none), the splices
    a writer line had and the token head's held-out AUC, and a history of the loss every few steps.
    """
    training = training or SenseTraining()
    if len(pairs) < training.batch_size // 2:
        raise ValueError(f"the sense model needs at least {training.batch_size // 2} length-matched pairs, "
                         f"got {len(pairs)}")
    encoder = model.encoder
    net = encoder.model
    device = encoder.device
    if next(net.parameters()).dtype != torch.float32:
        raise ValueError("train the sense model from fp32 weights (SenseModel.from_backbone does)")
    splices = splices if training.splice_weight > 0 else None
    if splices is not None and not getattr(encoder.tokenizer, "is_fast", False):  # fail here, not mid-run
        raise ValueError("splice labels need a fast tokenizer (it gives each token's characters); "
                         "train with splice_weight=0")
    bf16 = bf16_supported(device)
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    auc_before = held_out_auc(model, held_out)  # the same pairs as after, so the two figures compare
    splice_head = None
    if splices is not None:
        with torch.random.fork_rng(devices=[]):  # drawn aside: the run's own draws (dropout) stay as without it
            splice_head = nn.Linear(encoder.hidden_size, 1).to(device)
    # The lines' cut, as BiEncoder.tokenize also cuts them to the encoder's own limit.
    max_length = min(training.max_length, encoder.config.max_length)
    heads = [*model.head.parameters(), *(splice_head.parameters() if splice_head is not None else ())]
    opt = torch.optim.AdamW([{"params": net.parameters(), "lr": training.lr},
                             {"params": heads, "lr": training.head_lr}], weight_decay=0.01)
    base_lrs = [group["lr"] for group in opt.param_groups]
    half = training.batch_size // 2
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    history, losses = [], []
    started = time.monotonic()
    total = max(deadline - started, 1e-6)
    step = seen = 0
    stream = PairStream(pairs, half, training.bucket_batches, rng)
    hard_stream: PairStream | None = None
    mine_at = list(training.mine_at) if mine_pool else []
    human = [h for h, _ in pairs]
    mined: list[dict] = []
    net.train()
    model.head.train()
    contexts = contexts if training.relevance_weight > 0 else None
    relevance_losses: list[float] = []
    splice_losses: list[float] = []
    splice_counts: list[int] = []
    around_read = 0
    around = around if contexts else None

    def hidden_of(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # Hidden states (B, T, H) with gradients and the mask, read under bf16 autocast where the CPU has it.
        input_ids, attention_mask = pad_batch(ids, encoder.pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return net(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, attention_mask

    def pooled_of(texts: list[str], max_length: int, keep_end: bool = False) -> torch.Tensor:
        # Mean-pooled vectors (N, H) with gradients: each text cut to max_length tokens (its end kept for a
        # context, whose newest words matter most).
        keep = max_length - 2
        ids = [[x[0], *(x[1:-1][-keep:] if keep_end else x[1:-1][:keep]), x[-1]]
               for x in encoder.tokenize(texts, keep_end=keep_end)]
        return mean_pool(*hidden_of(ids))
    bar = progress_bar(desc="sense (human or writer?)", unit=" lines", disable=not progress)
    try:
        while time.monotonic() < deadline and (max_steps is None or step < max_steps):
            # Linear warmup, then cosine decay over the time budget (the step count is not known in advance).
            frac = min(step / max_steps if max_steps else (time.monotonic() - started) / total, 1.0)
            if mine_at and frac >= mine_at[0]:
                mine_at.pop(0)
                began = time.monotonic()
                chunk, mine_pool = mine_pool[: training.mine_lines], mine_pool[training.mine_lines :]
                # at most half the time left: the mined lines must still be trained on
                hard, read = mine_hard(model, chunk, top=training.mine_top, max_length=training.max_length,
                                       bf16=bf16, deadline=began + 0.5 * max(0.0, deadline - began))
                hard_pairs = length_matched_pairs(human, hard, min_words=training.min_words,
                                                  max_words=training.max_words, seed=training.seed + len(mined) + 1)
                if len(hard_pairs) >= half:
                    hard_stream = PairStream(hard_pairs, half, training.bucket_batches, rng)
                mined.append({"step": step, "offered": len(chunk), "read": read, "kept": len(hard), "pairs": len(hard_pairs),
                              "seconds": round(time.monotonic() - began, 1)})
                history.append({"event": "mine", "stage": "sense", **mined[-1]})
                mine_at = mine_at if mine_pool else []
            use_hard = hard_stream is not None and rng.random() < training.mine_share
            batch = (hard_stream if use_hard else stream).next()
            texts = [h for h, _ in batch] + [w for _, w in batch]
            scale = min(1.0, (step + 1) / training.warmup_steps) * 0.5 * (1.0 + math.cos(math.pi * frac))
            for group, lr in zip(opt.param_groups, base_lrs, strict=True):
                group["lr"] = lr * max(scale, 0.05)
            if splice_head is None:
                pooled = pooled_of(texts, training.max_length)  # (B, H): half human, half writer
            else:
                found = splices([w for _, w in batch])
                splice_counts += [splice.count for splice in found]
                ids, token_labels = splice_labels(encoder.tokenizer, texts, [None] * len(batch) + found, max_length)
                hidden, mask = hidden_of(ids)
                pooled = mean_pool(hidden, mask)
            logits = model.head(pooled)[:, 0]  # (B,), fp32
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
            if splice_head is not None:
                target = torch.from_numpy(pad_ids(token_labels, 0, multiple=8)[0]).float().to(device)  # as `ids`
                weight = word_tokens(mask).float()  # as the served head is read: not [CLS], no pads
                per_token = nn.functional.binary_cross_entropy_with_logits(
                    splice_head(hidden.float())[..., 0], target, reduction="none")
                splice_loss = (per_token * weight).sum() / weight.sum()
                loss = loss + training.splice_weight * splice_loss
                splice_losses.append(splice_loss.item())
            rows = [i for i, (h, _) in enumerate(batch) if contexts and h in contexts]
            if len(rows) >= 2:
                query = nn.functional.normalize(pooled_of([contexts[batch[i][0]] for i in rows],
                                                     training.context_max_length, keep_end=True).float(), dim=-1)
                keys = nn.functional.normalize(pooled.float(), dim=-1)  # every line of the batch, writer's too
                if around is not None:  # ... and writer lines written around each context's own words
                    extra = [line for line in (around(batch[i][0]) for i in rows) if line]
                    if extra:
                        extra_keys = pooled_of(extra, training.max_length).float()
                        keys = torch.cat([keys, nn.functional.normalize(extra_keys, dim=-1)])
                        around_read += len(extra)
                sims = training.relevance_scale * query @ keys.T  # (R, B [+ around lines])
                relevance = nn.functional.cross_entropy(sims, torch.tensor(rows, device=device))
                loss = loss + training.relevance_weight * relevance
                relevance_losses.append(relevance.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            seen += len(texts)
            losses.append(loss.item())
            bar.update(len(texts))
            if step % 20 == 0:
                history.append({"event": "train", "stage": "sense", "step": step, "lines": seen,
                                "seconds": round(time.monotonic() - started, 1),
                                "loss": round(float(np.mean(losses[-20:])), 5),
                                **({"relevance_loss": round(float(np.mean(relevance_losses[-20:])), 5)}
                                   if relevance_losses else {}),
                                **({"splice_loss": round(float(np.mean(splice_losses[-20:])), 5)}
                                   if splice_losses else {})})
    finally:
        bar.close()
        net.eval()
        model.head.eval()
        model.refresh()
        if splice_losses or encoder.token_head is not None:  # a head from before would not fit these weights
            encoder.set_token_head(splice_head if splice_losses else None)
    seconds = time.monotonic() - started
    auc_after, auc_splice = held_out_aucs(model, held_out)
    history.append({"event": "eval", "stage": "sense", "step": step, "lines": seen, "held_out_auc": round(auc_after, 4)})
    return {"steps": step, "lines": seen, "seconds": round(seconds, 1),
            "lines_per_s": round(seen / max(seconds, 1e-9), 1), "bf16": bf16, "lr": training.lr, "pairs": len(pairs),
            "held_out_pairs": len(held_out), "held_out_auc_before": round(auc_before, 4),
            "relevance": bool(relevance_losses), "mined": mined, "around_negatives": around_read,
            "splice_weight": training.splice_weight if splice_losses else 0.0,
            "splices_per_writer_line": round(float(np.mean(splice_counts)), 3) if splice_counts else None,
            "held_out_auc": round(auc_after, 4),
            "held_out_auc_splice": None if auc_splice is None else round(auc_splice, 4), "history": history}
